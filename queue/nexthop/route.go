package nexthop

import (
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"mailfwd/queue/envelope"
)

// Transport is a parsed transport map value, Postfix style:
// "smtp:[host]:port" (that host, no MX lookup), "smtp:host[:port]" (the MX
// hosts of host), "lmtp:[host]:port" or "lmtp:host:port" (LMTP, no MX).
type Transport struct {
	LMTP bool
	Host string
	Port int
	MX   bool // look up MX records of Host
	// PassClient marks the local next hop: only its connections pass the
	// original client (XCLIENT/XFORWARD). A smarthost at the same address
	// gets connections of its own: under XCLIENT, Postfix would judge
	// external forwards by the Internet client and refuse to relay them.
	PassClient bool
}

// ParseTransport parses a transport map value.
func ParseTransport(s string) (Transport, error) {
	proto, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return Transport{}, fmt.Errorf("transport %q: want smtp:[host]:port, smtp:host or lmtp:[host]:port", s)
	}
	t := Transport{Port: 25}
	switch proto {
	case "smtp":
	case "lmtp":
		t.LMTP, t.Port = true, 24
	default:
		return Transport{}, fmt.Errorf("transport %q: unknown protocol %q (smtp or lmtp)", s, proto)
	}
	bracketed := strings.HasPrefix(rest, "[")
	host, port := rest, ""
	if bracketed {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return Transport{}, fmt.Errorf("transport %q: unbalanced [", s)
		}
		host = rest[1:end]
		if after := rest[end+1:]; after != "" {
			if !strings.HasPrefix(after, ":") {
				return Transport{}, fmt.Errorf("transport %q: junk after ]", s)
			}
			port = after[1:]
		}
	} else if h, p, err := net.SplitHostPort(rest); err == nil {
		host, port = h, p
	}
	if host == "" {
		return Transport{}, fmt.Errorf("transport %q: no host", s)
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n <= 0 || n > 65535 {
			return Transport{}, fmt.Errorf("transport %q: bad port %q", s, port)
		}
		t.Port = n
	}
	t.Host = host
	t.MX = !bracketed && !t.LMTP && net.ParseIP(host) == nil
	return t, nil
}

func (t Transport) String() string {
	p := "smtp"
	if t.LMTP {
		p = "lmtp"
	}
	if t.MX {
		return fmt.Sprintf("%s:%s:%d", p, t.Host, t.Port)
	}
	if t.PassClient {
		return fmt.Sprintf("%s:[%s]:%d(client)", p, t.Host, t.Port)
	}
	return fmt.Sprintf("%s:[%s]:%d", p, t.Host, t.Port)
}

// HopFactory makes the SMTP hop for one host:port, so that every route to
// the same server shares one connection pool. dest names the destination
// (the recipient domain for MX delivery, else the host) for TLS policies;
// sec, when not nil, is the TLS an MX host must have (Security.ForHost),
// which replaces them, with a pool of its own.
type HopFactory func(addr string, lmtp bool, dest string, passClient bool, sec *HostTLS) Hop

// TransportRouter is the delivery routing of a relay, in this order: a
// transport map entry for the address, then for its domain; our own
// domains' mail to the local next hop (Postfix); external forwards to the
// smarthost if there is one, else to the MX hosts of their domain.
type TransportRouter struct {
	Transports map[string]Transport // lower-case address or domain
	Local      Transport
	Smarthost  *Transport
	DNS        DNS
	Security   *Security
	Roots      *x509.CertPool // what verifies next hops (nil: the system's)
	Hops       HopFactory
	// MXPort is the port MX hosts are dialled on (25; tests change it).
	MXPort int

	mu   sync.Mutex
	dest map[string]Destination
}

// Route implements Router.
func (tr *TransportRouter) Route(r *envelope.Recipient) Destination {
	addr := strings.ToLower(r.Addr)
	domain := addr
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		domain = addr[i+1:]
	}
	// A transport the administrator names is a host of ours (the local
	// class), unless it says MX.
	if t, ok := tr.Transports[addr]; ok {
		return tr.destination(t, false)
	}
	if t, ok := tr.Transports[domain]; ok {
		return tr.destination(t, false)
	}
	if !r.Forward {
		return tr.destination(tr.Local, false)
	}
	if tr.Smarthost != nil {
		return tr.destination(*tr.Smarthost, true)
	}
	port := tr.MXPort
	if port == 0 {
		port = 25
	}
	return tr.destination(Transport{Host: domain, Port: port, MX: true}, true)
}

// destination returns the (shared) destination of a transport. Mail for
// the Internet is of the external class whatever its hop (an MX, or a
// smarthost): a slow Internet must never hold up local delivery, so a
// host that is both our next hop and the smarthost is two destinations.
func (tr *TransportRouter) destination(t Transport, external bool) Destination {
	key := t.String()
	if external && !t.MX {
		key += " (external)"
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if d, ok := tr.dest[key]; ok {
		return d
	}
	if tr.dest == nil {
		tr.dest = map[string]Destination{}
	}
	var d Destination
	if t.MX {
		d = Destination{Key: key, Name: t.Host, Internet: true, Hop: &MXHop{Domain: t.Host, Port: t.Port, DNS: tr.DNS, Security: tr.Security, Hops: tr.Hops}}
	} else {
		d = Destination{Key: key, Name: t.Host, Internet: external, Hop: tr.Hops(net.JoinHostPort(t.Host, strconv.Itoa(t.Port)), t.LMTP, t.Host, t.PassClient, nil)}
	}
	tr.dest[key] = d
	return d
}
