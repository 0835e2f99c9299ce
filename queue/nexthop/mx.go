package nexthop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"

	"mailfwd/queue/envelope"
)

// Resolver is the DNS the MX delivery uses; *net.Resolver is one, tests
// inject their own.
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// MXHop delivers to the mail exchangers of a domain, as RFC 5321 §5.1 says:
// MX records by preference (random among equal ones), falling back to the
// next host when one cannot be reached; no MX records → the domain's own
// address (implicit MX); a null MX (RFC 7505) → permanent failure at once.
type MXHop struct {
	Domain   string
	Port     int
	Resolver Resolver
	Hops     HopFactory
	// MaxHosts bounds how many MX hosts one attempt tries.
	MaxHosts int
}

func (h *MXHop) String() string { return "mx:" + h.Domain }

// errNullMX and errNoDomain are permanent DNS answers.
var (
	errNullMX   = errors.New("null MX")
	errNoDomain = errors.New("domain not found")
)

// hosts returns the hosts to try, in order.
func (h *MXHop) hosts(ctx context.Context) ([]string, error) {
	r := h.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	mxs, err := r.LookupMX(ctx, h.Domain)
	var dnsErr *net.DNSError
	switch {
	case err == nil && len(mxs) > 0:
		if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
			return nil, errNullMX
		}
		rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
		sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Pref < mxs[j].Pref })
		var out []string
		for _, mx := range mxs {
			if mx.Host != "." && mx.Host != "" {
				out = append(out, strings.TrimSuffix(mx.Host, "."))
			}
		}
		return out, nil
	case err == nil || (errors.As(err, &dnsErr) && dnsErr.IsNotFound):
		// No MX: the domain itself is the mail host, if it has an address.
		if _, herr := r.LookupHost(ctx, h.Domain); herr != nil {
			if errors.As(herr, &dnsErr) && dnsErr.IsNotFound {
				return nil, errNoDomain
			}
			return nil, fmt.Errorf("looking up %s: %w", h.Domain, herr)
		}
		return []string{h.Domain}, nil
	default:
		return nil, fmt.Errorf("looking up MX of %s: %w", h.Domain, err)
	}
}

// Send implements Hop.
func (h *MXHop) Send(ctx context.Context, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	hosts, err := h.hosts(ctx)
	switch {
	case errors.Is(err, errNullMX):
		return all(len(rcpts), Reply{Code: 556, Enhanced: "5.1.10", Text: h.Domain + " does not accept mail (null MX)"}), nil
	case errors.Is(err, errNoDomain):
		return all(len(rcpts), Reply{Code: 550, Enhanced: "5.4.4", Text: "host or domain name not found: " + h.Domain}), nil
	case err != nil:
		return nil, err
	}
	max := h.MaxHosts
	if max <= 0 {
		max = 5
	}
	r := h.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	var errs []error
	tried := 0
	for _, host := range hosts {
		if tried >= max {
			break
		}
		addrs, err := r.LookupHost(ctx, host)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", host, err))
			continue
		}
		for _, a := range addrs {
			if tried >= max {
				break
			}
			tried++
			if s, ok := body.(io.Seeker); ok {
				if _, err := s.Seek(0, io.SeekStart); err != nil {
					return nil, err
				}
			}
			replies, err := h.Hops(net.JoinHostPort(a, strconv.Itoa(h.Port)), false, h.Domain, false).Send(ctx, env, from, rcpts, body)
			if err == nil {
				return replies, nil
			}
			errs = append(errs, fmt.Errorf("%s[%s]: %w", host, a, err))
			if ctx.Err() != nil {
				return nil, errors.Join(errs...)
			}
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no usable MX host for %s", h.Domain)
	}
	return nil, errors.Join(errs...)
}
