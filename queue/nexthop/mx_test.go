package nexthop

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop/resolve"

	"github.com/emersion/go-smtp"
)

// fakeDNS answers MX and host look-ups from maps; names missing from both
// are NXDOMAIN, names in fail are SERVFAIL; cname maps an MX target to
// its canonical name.
type fakeDNS struct {
	mx    map[string][]resolve.MX
	hosts map[string][]string
	cname map[string]string
	fail  map[string]bool
}

func notFound(name string) error {
	return fmt.Errorf("%s: %w", name, resolve.ErrNotFound)
}

func (d *fakeDNS) LookupMX(_ context.Context, name string) (resolve.MXResult, error) {
	if d.fail[name] {
		return resolve.MXResult{}, fmt.Errorf("%s: %w", name, resolve.ErrTemporary)
	}
	if mx, ok := d.mx[name]; ok {
		if len(mx) == 1 && mx[0].Host == "." {
			return resolve.MXResult{Null: true}, nil
		}
		mx = slices.Clone(mx)
		slices.SortStableFunc(mx, func(a, b resolve.MX) int { return int(a.Preference) - int(b.Preference) })
		return resolve.MXResult{Records: mx}, nil
	}
	if _, ok := d.hosts[name]; ok {
		return resolve.MXResult{}, nil // NODATA: implicit MX
	}
	return resolve.MXResult{}, notFound(name)
}

func (d *fakeDNS) LookupAddrs(_ context.Context, host string) (resolve.AddrResult, error) {
	if a, ok := d.hosts[host]; ok {
		r := resolve.AddrResult{CNAME: d.cname[host]}
		for _, s := range a {
			r.Addrs = append(r.Addrs, netip.MustParseAddr(s))
		}
		return r, nil
	}
	return resolve.AddrResult{}, notFound(host)
}

func (d *fakeDNS) LookupTLSA(_ context.Context, _ int, host string) (resolve.TLSAResult, error) {
	return resolve.TLSAResult{}, notFound(host)
}

// mxServer is one SMTP server on a loopback address, recording what it got.
type mxServer struct {
	name string
	mu   sync.Mutex
	got  []string
}

func (m *mxServer) NewSession(*smtp.Conn) (smtp.Session, error) { return &mxSession{m: m}, nil }

type mxSession struct {
	m     *mxServer
	rcpts []string
}

func (s *mxSession) Reset()                               { s.rcpts = nil }
func (s *mxSession) Logout() error                        { return nil }
func (s *mxSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *mxSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *mxSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	s.m.mu.Lock()
	s.m.got = append(s.m.got, strings.Join(s.rcpts, ","))
	s.m.mu.Unlock()
	return nil
}

// listenOn starts an SMTP server on ip:port (port 0: any), returns the port.
func listenOn(t *testing.T, ip string, port int, m *mxServer) int {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(m)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

func hops(timeoutHop func(string) *SMTPHop) HopFactory {
	var mu sync.Mutex
	m := map[string]Hop{}
	return func(addr string, _ bool, _ string, _ bool, _ *HostTLS) Hop {
		mu.Lock()
		defer mu.Unlock()
		if h, ok := m[addr]; ok {
			return h
		}
		h := timeoutHop(addr)
		m[addr] = h
		return h
	}
}

func TestMXDelivery(t *testing.T) {
	primary, backup, implicit := &mxServer{name: "primary"}, &mxServer{name: "backup"}, &mxServer{name: "implicit"}
	port := listenOn(t, "127.0.0.3", 0, backup) // the backup MX is up; the primary (127.0.0.2) only in some cases
	listenOn(t, "127.0.0.4", port, implicit)
	dns := &fakeDNS{
		mx: map[string][]resolve.MX{
			"two.test":    {{Host: "mx2.two.test", Preference: 20}, {Host: "mx1.two.test", Preference: 10}},
			"nullmx.test": {{Host: ".", Preference: 0}},
			"deadmx.test": {{Host: "nowhere.test", Preference: 10}},
			"cname.test":  {{Host: "alias.cname.test", Preference: 10}},
		},
		hosts: map[string][]string{
			"mx1.two.test":     {"127.0.0.2"},
			"mx2.two.test":     {"127.0.0.3"},
			"implicit.test":    {"127.0.0.4"},
			"alias.cname.test": {"127.0.0.3"},
		},
		cname: map[string]string{"alias.cname.test": "mx2.two.test"},
		fail:  map[string]bool{"servfail.test": true},
	}
	factory := hops(func(addr string) *SMTPHop { return &SMTPHop{Addr: addr, LocalName: "relay.test"} })
	send := func(domain string) ([]Reply, error) {
		h := &MXHop{Domain: domain, Port: port, DNS: dns, Hops: factory}
		return h.Send(context.Background(), &envelope.Envelope{ID: "X"}, "a@x.test", []string{"u@" + domain}, strings.NewReader("m\r\n"))
	}

	// Primary down: the backup (higher preference value) takes it.
	if r, err := send("two.test"); err != nil || !r[0].OK() || len(backup.got) != 1 {
		t.Fatalf("primary down: %v %v, backup got %v", r, err, backup.got)
	}
	// Primary up: it is used first.
	listenOn(t, "127.0.0.2", port, primary)
	if r, err := send("two.test"); err != nil || !r[0].OK() || len(primary.got) != 1 || len(backup.got) != 1 {
		t.Fatalf("primary up: %v %v, primary %v backup %v", r, err, primary.got, backup.got)
	}
	// No MX record: the domain's own address.
	if r, err := send("implicit.test"); err != nil || !r[0].OK() || len(implicit.got) != 1 {
		t.Fatalf("implicit MX: %v %v", r, err)
	}
	tests := []struct {
		domain    string
		code      int
		enhanced  string
		temporary bool
	}{
		{"nullmx.test", 556, "5.1.10", false},
		{"nxdomain.test", 550, "5.4.4", false},
		{"servfail.test", 0, "", true},
		{"deadmx.test", 0, "", true}, // MX host without address: try later
		{"cname.test", 0, "", true},  // MX target is a CNAME: not used, as Postfix
	}
	for _, tt := range tests {
		r, err := send(tt.domain)
		if tt.temporary {
			if err == nil {
				t.Errorf("%s: replies %v, want a temporary error", tt.domain, r)
			}
			continue
		}
		if err != nil || r[0].Code != tt.code || r[0].Enhanced != tt.enhanced || !r[0].Permanent() {
			t.Errorf("%s: %v %v, want %d %s", tt.domain, r, err, tt.code, tt.enhanced)
		}
	}
}

func TestTransportRouter(t *testing.T) {
	mk := func(s string) Transport {
		tr, err := ParseTransport(s)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	sh := mk("smtp:[10.0.0.9]:587")
	tr := &TransportRouter{
		Transports: map[string]Transport{"vip@gmail.com": mk("lmtp:[127.0.0.1]:24"), "example.org": mk("smtp:[192.0.2.1]")},
		Local:      mk("smtp:[127.0.0.1]:10025"),
		Hops:       hops(func(addr string) *SMTPHop { return &SMTPHop{Addr: addr} }),
	}
	cases := []struct {
		rcpt     envelope.Recipient
		key      string
		external bool
	}{
		{envelope.Recipient{Addr: "central@company.com"}, "smtp:[127.0.0.1]:10025", false},
		{envelope.Recipient{Addr: "x@gmail.com", Forward: true}, "smtp:gmail.com:25", true},
		{envelope.Recipient{Addr: "VIP@gmail.com", Forward: true}, "lmtp:[127.0.0.1]:24", false},
		{envelope.Recipient{Addr: "a@Example.org", Forward: true}, "smtp:[192.0.2.1]:25", false},
	}
	for _, c := range cases {
		d := tr.Route(&c.rcpt)
		if d.Key != c.key || d.Internet != c.external {
			t.Errorf("%s: %s external=%v, want %s %v", c.rcpt.Addr, d.Key, d.Internet, c.key, c.external)
		}
	}
	tr.Smarthost = &sh
	// The smarthost carries Internet mail: the external class, even when
	// it is the local next hop too.
	if d := tr.Route(&envelope.Recipient{Addr: "x@gmail.com", Forward: true}); d.Key != "smtp:[10.0.0.9]:587 (external)" || !d.Internet {
		t.Errorf("with a smarthost: %s external=%v", d.Key, d.Internet)
	}
	tr.Smarthost = &tr.Local
	if d := tr.Route(&envelope.Recipient{Addr: "x@gmail.com", Forward: true}); d.Key == tr.Route(&envelope.Recipient{Addr: "central@company.com"}).Key || !d.Internet {
		t.Errorf("smarthost = next hop: one destination for both classes (%s)", d.Key)
	}
	for _, bad := range []string{"smtp", "ftp:[x]:1", "smtp:[x", "smtp:[x]:99999", "smtp:[]:25"} {
		if _, err := ParseTransport(bad); err == nil {
			t.Errorf("ParseTransport(%q) accepted", bad)
		}
	}
}

// The local next hop and a smarthost at the same address get separate
// connection pools: only the local one passes the client (XCLIENT).
func TestLocalAndSmarthostSameAddress(t *testing.T) {
	pass := map[string]bool{}
	tr := &TransportRouter{
		Local: Transport{Host: "127.0.0.1", Port: 10025, PassClient: true},
		Hops: func(addr string, _ bool, _ string, passClient bool, _ *HostTLS) Hop {
			h := &SMTPHop{Addr: addr}
			pass[fmt.Sprintf("%p", h)] = passClient
			return h
		},
	}
	tr.Smarthost = &Transport{Host: "127.0.0.1", Port: 10025}
	local := tr.Route(&envelope.Recipient{Addr: "central@company.com"})
	ext := tr.Route(&envelope.Recipient{Addr: "x@gmail.com", Forward: true})
	if local.Key == ext.Key || local.Hop == ext.Hop {
		t.Fatalf("one destination for both: %s / %s", local.Key, ext.Key)
	}
	if !pass[fmt.Sprintf("%p", local.Hop)] || pass[fmt.Sprintf("%p", ext.Hop)] {
		t.Fatalf("client passed: local=%v external=%v", pass[fmt.Sprintf("%p", local.Hop)], pass[fmt.Sprintf("%p", ext.Hop)])
	}
}
