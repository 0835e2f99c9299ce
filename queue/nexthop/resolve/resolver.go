package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Defaults for the zero fields of a Resolver.
const (
	DefaultResolvConf     = "/etc/resolv.conf"
	DefaultTimeout        = 5 * time.Second
	DefaultAttempts       = 2
	DefaultCacheSize      = 10000
	DefaultMaxTTL         = 24 * time.Hour
	DefaultMaxNegativeTTL = time.Hour

	// ednsSize is the EDNS0 buffer size of DNS Flag Day 2020: small enough
	// to avoid IP fragmentation, large enough for most DNSSEC answers.
	ednsSize = 1232
)

// IPv6Mode says whether LookupAddrs asks for AAAA records.
type IPv6Mode int

const (
	// IPv6Auto asks for AAAA when HostHasIPv6 reports a global IPv6
	// address at the Resolver's first use: without one, IPv6 addresses
	// are only connections that fail.
	IPv6Auto IPv6Mode = iota
	// IPv6On always asks for AAAA.
	IPv6On
	// IPv6Off never asks for AAAA.
	IPv6Off
)

// Resolver is a stub resolver for delivery: it sends recursive queries to
// configured (validating) resolvers and caches their answers. Configure it
// before first use and do not copy it afterwards; it is safe for
// concurrent use. The zero value reads /etc/resolv.conf.
type Resolver struct {
	// Servers are the resolvers to ask, as host:port (a bare IP means
	// port 53). Empty: the nameservers of ResolvConf.
	Servers []string
	// ResolvConf is read when Servers is empty; default /etc/resolv.conf.
	// A file without nameserver lines means 127.0.0.1 and ::1, as in libc.
	ResolvConf string
	// Timeout bounds one query to one server (UDP and, after truncation,
	// TCP each get it). Zero: resolv.conf's timeout if read, else 5 s.
	Timeout time.Duration
	// Attempts is how many rounds over all servers one lookup makes before
	// giving up. Zero: resolv.conf's attempts if read, else 2.
	Attempts int
	// IPv6 says whether LookupAddrs asks for AAAA records.
	IPv6 IPv6Mode
	// CacheSize bounds the number of cached answers (default 10000;
	// negative disables the cache). The oldest entry goes first.
	CacheSize int
	// MaxTTL caps how long a positive answer is cached (default 24 h),
	// MaxNegativeTTL a negative one (default 1 h).
	MaxTTL, MaxNegativeTTL time.Duration

	// now is the clock of the cache; tests replace it.
	now func() time.Time

	initMu sync.Mutex
	cfg    *config // nil until a successful init

	// preferred is the index of the server that last answered: a dead
	// first server then costs one timeout, not one per query.
	preferred atomic.Int32

	mu      sync.Mutex // guards cache and flights
	cache   *cache
	flights map[cacheKey]*flight
}

// config is the Resolver's configuration with the defaults applied.
type config struct {
	servers  []string
	timeout  time.Duration
	attempts int
	ipv6     bool
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// config returns the effective configuration, reading resolv.conf at the
// first call. A failure is not remembered, so a fixed resolv.conf is seen
// at the next lookup.
func (r *Resolver) config() (*config, error) {
	r.initMu.Lock()
	defer r.initMu.Unlock()
	if r.cfg != nil {
		return r.cfg, nil
	}
	c := &config{timeout: r.Timeout, attempts: r.Attempts}
	if len(r.Servers) > 0 {
		for _, s := range r.Servers {
			c.servers = append(c.servers, withPort(s, "53"))
		}
	} else {
		path := r.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		cc, err := dns.ClientConfigFromFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading resolver configuration: %w", err)
		}
		for _, s := range cc.Servers {
			c.servers = append(c.servers, withPort(s, cc.Port))
		}
		if len(c.servers) == 0 {
			c.servers = []string{"127.0.0.1:" + cc.Port, "[::1]:" + cc.Port}
		}
		if c.timeout <= 0 && cc.Timeout > 0 {
			c.timeout = time.Duration(cc.Timeout) * time.Second
		}
		if c.attempts <= 0 && cc.Attempts > 0 {
			c.attempts = cc.Attempts
		}
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.attempts <= 0 {
		c.attempts = DefaultAttempts
	}
	switch r.IPv6 {
	case IPv6On:
		c.ipv6 = true
	case IPv6Auto:
		c.ipv6 = HostHasIPv6()
	}
	r.mu.Lock()
	size := r.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	r.cache = newCache(size)
	r.flights = make(map[cacheKey]*flight)
	r.mu.Unlock()
	r.cfg = c
	return c, nil
}

// withPort adds the default port to a bare address.
func withPort(s, port string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), port)
}

// exchange asks the servers name/qtype until one gives a usable answer
// (NOERROR or NXDOMAIN). Any other response code, a timeout or a network
// error moves on to the next server; after Attempts rounds the lookup
// fails with ErrTemporary.
func (r *Resolver) exchange(ctx context.Context, c *config, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	// DO asks a validating resolver for the AD bit (and signatures); AD
	// in the query says we understand it (RFC 6840 §5.7).
	q.SetEdns0(ednsSize, true)
	q.AuthenticatedData = true

	n := len(c.servers)
	start := int(r.preferred.Load()) % n
	var last error
	rcode := -1
	for attempt := 0; attempt < c.attempts; attempt++ {
		for i := range n {
			if err := ctx.Err(); err != nil {
				return nil, newError(ErrTemporary, name, qtype, rcode, err)
			}
			idx := (start + i) % n
			resp, err := exchangeOne(ctx, c.servers[idx], q, c.timeout)
			if err != nil {
				last = fmt.Errorf("%s: %w", c.servers[idx], err)
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				r.preferred.Store(int32(idx))
				return resp, nil
			}
			// SERVFAIL (also a bogus DNSSEC answer), REFUSED, FORMERR...:
			// another server may do better, none makes it permanent.
			rcode = resp.Rcode
			last = fmt.Errorf("%s: %s", c.servers[idx], rcodeString(resp.Rcode))
		}
	}
	if err := ctx.Err(); err != nil {
		last = err
	}
	return nil, newError(ErrTemporary, name, qtype, rcode, last)
}

var errMismatch = errors.New("answer does not match the question")

// exchangeOne sends q to one server over UDP, and again over TCP if the
// answer was truncated.
func exchangeOne(ctx context.Context, server string, q *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	q.Id = dns.Id()
	resp, err := exchangeNet(ctx, "udp", server, q, timeout)
	// A truncated answer may also fail to unpack; its header is enough.
	if resp != nil && resp.Truncated {
		resp, err = exchangeNet(ctx, "tcp", server, q, timeout)
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, q.Question[0].Name) ||
		resp.Question[0].Qtype != q.Question[0].Qtype || resp.Question[0].Qclass != q.Question[0].Qclass {
		return nil, errMismatch
	}
	return resp, nil
}

func exchangeNet(ctx context.Context, network, server string, q *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Client.Timeout replaces the client's own 2 s defaults; the context
	// deadline, if earlier, still wins.
	c := dns.Client{Net: network, UDPSize: ednsSize, Timeout: timeout}
	resp, _, err := c.ExchangeContext(ctx, q, server)
	return resp, err
}
