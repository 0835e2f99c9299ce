package resolve

import (
	"container/list"
	"context"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// cacheKey is a question; name is lower case and fully qualified.
type cacheKey struct {
	name  string
	qtype uint16
}

// answer is what one question resolved to, as cached.
type answer struct {
	rcode int // RcodeSuccess or RcodeNameError
	// owner is the name the records belong to: the question's name, or
	// where the CNAMEs in the same response led.
	owner   string
	aliases int      // CNAMEs followed inside the response
	rrs     []dns.RR // records of the asked type at owner
	// complete: the response answered for owner (records, NXDOMAIN, or
	// NODATA with an SOA); else the resolver stopped at a CNAME and
	// owner must be asked itself.
	complete bool
	secure   bool // AD bit of the response
	expires  time.Time
}

// cache holds answers until they expire, at most max of them, dropping
// the oldest first. The caller locks.
type cache struct {
	max   int
	m     map[cacheKey]*list.Element
	order *list.List // of *cacheEntry, newest at the front
}

type cacheEntry struct {
	key cacheKey
	ans *answer
}

func newCache(max int) *cache {
	return &cache{max: max, m: make(map[cacheKey]*list.Element), order: list.New()}
}

func (c *cache) get(k cacheKey, now time.Time) *answer {
	el, ok := c.m[k]
	if !ok {
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.ans.expires) {
		c.order.Remove(el)
		delete(c.m, k)
		return nil
	}
	return e.ans
}

func (c *cache) put(k cacheKey, a *answer) {
	if c.max <= 0 {
		return
	}
	if el, ok := c.m[k]; ok {
		c.order.Remove(el)
	}
	c.m[k] = c.order.PushFront(&cacheEntry{key: k, ans: a})
	for c.order.Len() > c.max {
		el := c.order.Back()
		c.order.Remove(el)
		delete(c.m, el.Value.(*cacheEntry).key)
	}
}

func (c *cache) len() int { return c.order.Len() }

// flight is one upstream query that every concurrent asker of the same
// question waits for.
type flight struct {
	done    chan struct{} // closed when ans/err are set
	ans     *answer
	err     error
	waiters int // how many lookups joined it, for tests
}

// query answers one question from the cache or, sharing the query with
// concurrent askers, from upstream. NXDOMAIN comes back as ErrNotFound.
// The upstream query runs detached from ctx, bounded by its own
// timeouts, so one asker giving up does not fail the others; every asker
// still returns as soon as its own ctx is done.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*answer, error) {
	if err := ctx.Err(); err != nil {
		return nil, newError(ErrTemporary, name, qtype, -1, err)
	}
	c, err := r.config()
	if err != nil {
		return nil, newError(ErrTemporary, name, qtype, -1, err)
	}
	k := cacheKey{strings.ToLower(name), qtype}
	r.mu.Lock()
	if a := r.cache.get(k, r.clock()); a != nil {
		r.mu.Unlock()
		return a, a.err(name, qtype)
	}
	f, ok := r.flights[k]
	if !ok {
		f = &flight{done: make(chan struct{})}
		r.flights[k] = f
		go r.fly(context.WithoutCancel(ctx), c, k, f)
	}
	f.waiters++
	r.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		return f.ans, f.ans.err(name, qtype)
	case <-ctx.Done():
		return nil, newError(ErrTemporary, name, qtype, -1, ctx.Err())
	}
}

func (r *Resolver) fly(ctx context.Context, c *config, k cacheKey, f *flight) {
	// A safety net: exchange is bounded by timeout × attempts × servers
	// (twice, for TCP) already.
	ctx, cancel := context.WithTimeout(ctx, 2*c.timeout*time.Duration(c.attempts*len(c.servers)))
	defer cancel()
	resp, err := r.exchange(ctx, c, k.name, k.qtype)
	var a *answer
	if err == nil {
		a = r.digest(resp, k.name, k.qtype)
	}
	r.mu.Lock()
	delete(r.flights, k)
	if a != nil && a.expires.After(r.clock()) {
		r.cache.put(k, a)
	}
	f.ans, f.err = a, err
	r.mu.Unlock()
	close(f.done)
}

// err is the error a cached answer stands for.
func (a *answer) err(name string, qtype uint16) error {
	if a.rcode == dns.RcodeNameError {
		return newError(ErrNotFound, name, qtype, a.rcode, nil)
	}
	return nil
}

// digest turns a response into an answer: it follows the CNAMEs of the
// response from name (up to maxCNAME), picks the records of qtype at the
// end and computes how long the whole may be cached: the smallest TTL of
// the records used (CNAMEs included), capped by MaxTTL; for a negative
// answer the SOA's negative TTL (RFC 2308 §5), capped by MaxNegativeTTL.
func (r *Resolver) digest(resp *dns.Msg, name string, qtype uint16) *answer {
	a := &answer{rcode: resp.Rcode, owner: name, secure: resp.AuthenticatedData}
	ttl := ^uint32(0)
	for {
		var cname *dns.CNAME
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Class != dns.ClassINET || !strings.EqualFold(h.Name, a.owner) {
				continue
			}
			switch {
			case h.Rrtype == qtype:
				a.rrs = append(a.rrs, rr)
				ttl = min(ttl, h.Ttl)
			case h.Rrtype == dns.TypeCNAME && cname == nil:
				cname, _ = rr.(*dns.CNAME)
			}
		}
		if len(a.rrs) > 0 || cname == nil || a.aliases > maxCNAME {
			break
		}
		a.aliases++
		a.owner = strings.ToLower(dns.Fqdn(cname.Target))
		ttl = min(ttl, cname.Hdr.Ttl)
	}
	var soa *dns.SOA
	for _, rr := range resp.Ns {
		if s, ok := rr.(*dns.SOA); ok {
			soa = s
			break
		}
	}
	maxTTL := r.MaxTTL
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	switch {
	case len(a.rrs) > 0:
		a.complete = true
	case soa != nil:
		// NXDOMAIN or NODATA, for owner: RFC 2308 §5.
		a.complete = true
		ttl = min(ttl, soa.Hdr.Ttl, soa.Minttl)
		maxTTL = r.MaxNegativeTTL
		if maxTTL <= 0 {
			maxTTL = DefaultMaxNegativeTTL
		}
	case a.aliases > 0 && a.rcode == dns.RcodeSuccess:
		// The resolver stopped at a CNAME: the aliases are a positive
		// answer, cached by their TTL; owner is asked next.
	default:
		// Negative without SOA: not to be cached (RFC 2308 §5).
		a.complete = true
		ttl = 0
	}
	a.expires = r.clock().Add(min(time.Duration(ttl)*time.Second, maxTTL))
	return a
}
