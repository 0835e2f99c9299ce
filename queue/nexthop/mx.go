package nexthop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop/resolve"
)

// MXHop delivers to the mail exchangers of a domain, as RFC 5321 §5.1 says:
// MX records by preference (random among equal ones), falling back to the
// next host when one cannot be reached; no MX records → the domain's own
// address (implicit MX); a null MX (RFC 7505) → permanent failure at once;
// NXDOMAIN → permanent; any other DNS failure → try again later. An MX
// target that is a CNAME is skipped, as Postfix does (RFC 2181 §10.3). The
// TLS of each host is Security's decision (security.go).
type MXHop struct {
	Domain   string
	Port     int
	DNS      DNS
	Security *Security
	Hops     HopFactory
	// MaxHosts bounds how many MX addresses one attempt tries.
	MaxHosts int
}

func (h *MXHop) String() string { return "mx:" + h.Domain }

// defaultDNS is the system's resolvers, for an MXHop without DNS.
var defaultDNS = &resolve.Resolver{}

func (h *MXHop) dns() DNS {
	if h.DNS != nil {
		return h.DNS
	}
	return defaultDNS
}

// errNullMX and errNoDomain are permanent DNS answers.
var (
	errNullMX   = errors.New("null MX")
	errNoDomain = errors.New("domain not found")
)

// hosts returns the hosts to try, in order, and whether the answer that
// named them was DNSSEC-secure.
func (h *MXHop) hosts(ctx context.Context) ([]string, bool, error) {
	r := h.dns()
	mx, err := r.LookupMX(ctx, h.Domain)
	switch {
	case errors.Is(err, resolve.ErrNotFound):
		return nil, false, errNoDomain
	case err != nil:
		return nil, false, fmt.Errorf("looking up MX of %s: %w", h.Domain, err)
	case mx.Null:
		return nil, false, errNullMX
	case len(mx.Records) == 0:
		// No MX: the domain itself is the mail host, if it has an address.
		a, err := r.LookupAddrs(ctx, h.Domain)
		if errors.Is(err, resolve.ErrNotFound) || err == nil && len(a.Addrs) == 0 {
			return nil, false, errNoDomain
		}
		if err != nil {
			return nil, false, fmt.Errorf("looking up %s: %w", h.Domain, err)
		}
		return []string{h.Domain}, mx.Secure && a.Secure, nil
	}
	recs := append([]resolve.MX(nil), mx.Records...)
	// equal preferences in random order (the records come sorted)
	for i := 0; i < len(recs); {
		j := i
		for j < len(recs) && recs[j].Preference == recs[i].Preference {
			j++
		}
		part := recs[i:j]
		rand.Shuffle(len(part), func(a, b int) { part[a], part[b] = part[b], part[a] })
		i = j
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Host
	}
	return out, mx.Secure, nil
}

// Send implements Hop.
func (h *MXHop) Send(ctx context.Context, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	hosts, secure, err := h.hosts(ctx)
	switch {
	case errors.Is(err, errNullMX):
		return all(len(rcpts), Reply{Code: 556, Enhanced: "5.1.10", Text: h.Domain + " does not accept mail (null MX)"}), nil
	case errors.Is(err, errNoDomain):
		return all(len(rcpts), Reply{Code: 550, Enhanced: "5.4.4", Text: "host or domain name not found: " + h.Domain}), nil
	case err != nil:
		return nil, err
	}
	dp := h.Security.ForDomain(ctx, h.Domain)
	if dp.Enforced() {
		var ok []string
		for _, host := range hosts {
			if dp.STS.Policy.MatchMX(host) {
				ok = append(ok, host)
			}
		}
		if len(ok) == 0 {
			h.Security.count("mta-sts", "failed")
			return nil, fmt.Errorf("%w (%s): %v", errNoMatchingMX, dp, hosts)
		}
		hosts = ok
	}
	max := h.MaxHosts
	if max <= 0 {
		max = 5
	}
	r := h.dns()
	var errs []error
	var tlsFailed []Reply
	tried := 0
	for _, host := range hosts {
		if tried >= max {
			break
		}
		addrs, sec, err := h.prepareHost(ctx, r, dp, host, secure)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, a := range addrs.Addrs {
			if tried >= max {
				break
			}
			tried++
			if s, ok := body.(io.Seeker); ok {
				if _, err := s.Seek(0, io.SeekStart); err != nil {
					return nil, err
				}
			}
			replies, err := h.Hops(net.JoinHostPort(a.String(), strconv.Itoa(h.Port)), false, h.Domain, false, sec).Send(ctx, env, from, rcpts, body)
			if err == nil && tlsRefused(replies) {
				// TLS was required and failed with this host: the next
				// may do better; if none does, this is the answer.
				if replies[0].Enhanced == "4.7.4" {
					sec.noSTARTTLS(replies[0].Text)
				}
				tlsFailed = replies
				errs = append(errs, fmt.Errorf("%s[%s]: %s", host, a, replies[0]))
				continue
			}
			if err == nil {
				return replies, nil
			}
			errs = append(errs, fmt.Errorf("%s[%s]: %w", host, a, err))
			if ctx.Err() != nil {
				return nil, errors.Join(errs...)
			}
		}
	}
	if tlsFailed != nil {
		return tlsFailed, nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no usable MX host for %s", h.Domain)
	}
	return nil, errors.Join(errs...)
}

// prepareHost is one MX host as delivery (and Explain) sees it: its
// addresses, refused when it is a CNAME (RFC 2181 §10.3, as Postfix) or has
// none, and the TLS it must get (Security.ForHost).
func (h *MXHop) prepareHost(ctx context.Context, r DNS, dp DomainPolicy, host string, secure bool) (resolve.AddrResult, *HostTLS, error) {
	addrs, err := r.LookupAddrs(ctx, host)
	if err == nil && addrs.CNAME != "" && host != h.Domain {
		err = fmt.Errorf("MX host %s is a CNAME for %s (RFC 2181 §10.3), not used", host, addrs.CNAME)
	}
	if err == nil && len(addrs.Addrs) == 0 {
		err = fmt.Errorf("MX host %s has no address", host)
	}
	if err != nil {
		return addrs, nil, fmt.Errorf("%s: %w", host, err)
	}
	sec, err := h.Security.ForHost(ctx, r, dp, h.Domain, host, h.Port, secure, addrs)
	return addrs, sec, err
}

// tlsRefused: every reply is SMTPHop's "TLS required" failure (4.7.4 not
// offered, 4.7.5 handshake or verification failed).
func tlsRefused(rs []Reply) bool {
	if len(rs) == 0 {
		return false
	}
	for _, r := range rs {
		if r.Code != 451 || (r.Enhanced != "4.7.4" && r.Enhanced != "4.7.5") {
			return false
		}
	}
	return true
}
