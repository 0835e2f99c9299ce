package mtasts

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// LookupTXT is the caller's DNS: the TXT records of name, one string per
// record with its character-strings joined. A name that does not exist
// or has no TXT records is an error wrapping ErrNoRecord (or an empty
// result); any other error counts as temporary.
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// Options configure a Cache. Only LookupTXT is required.
type Options struct {
	LookupTXT LookupTXT
	// Client fetches policies (see Fetch); nil is a default client.
	// Tests and the e2e suite give one with their root CAs and dialer.
	Client *http.Client
	// Path is the cache file, "" for none. It is read by New and
	// rewritten after every policy fetched.
	Path string
	// MaxDomains bounds the policies kept (default 10000); past it the
	// least recently used goes.
	MaxDomains int
	// Timeout bounds one discovery, TXT lookup and fetch together
	// (default one minute, the timeout RFC 8461 suggests). The caller's
	// context may give up sooner; the discovery then goes on for the
	// other callers and the cache.
	Timeout time.Duration
	// RetryFetch is how long a failed fetch is not tried again for the
	// same domain and TXT id (default five minutes, RFC 8461 §3.3's
	// suggested rate limit); meanwhile lookups answer as if it had just
	// failed again.
	RetryFetch time.Duration
	// Now is the clock, time.Now if nil.
	Now func() time.Time
	// Logf reports cache file trouble; nil discards it.
	Logf func(format string, args ...any)
}

// Cache discovers and caches the MTA-STS policies of recipient domains
// (RFC 8461 §3, §5.1). It is safe for concurrent use; concurrent Gets
// of one domain share one discovery.
type Cache struct {
	opts    Options
	fetch   func(ctx context.Context, domain string) (*Policy, error) // Fetch; tests replace it
	loadErr error

	mu       sync.Mutex
	entries  map[string]*entry
	failures map[string]failure
	inflight map[string]*call

	saveMu sync.Mutex // orders file writes: the last snapshot taken is the last written
}

// entry is a cached policy.
type entry struct {
	id       string
	policy   *Policy
	fetched  time.Time
	lastUsed time.Time
}

func (e *entry) expires() time.Time { return e.fetched.Add(e.policy.MaxAge) }

// failure is a failed fetch, remembered for Options.RetryFetch.
type failure struct {
	id    string
	until time.Time
	err   error
}

type call struct {
	done chan struct{}
	res  *Result
}

// New returns a Cache, loaded from opts.Path if that file exists. A cache
// file that cannot be read or parsed does not stop it: the Cache starts
// empty, the problem goes to opts.Logf and LoadError, and the next
// policy fetched replaces the file. The error is for bad options only.
func New(opts Options) (*Cache, error) {
	if opts.LookupTXT == nil {
		return nil, errors.New("mta-sts: Options.LookupTXT is required")
	}
	if opts.MaxDomains < 0 || opts.Timeout < 0 || opts.RetryFetch < 0 {
		return nil, errors.New("mta-sts: negative option")
	}
	if opts.MaxDomains == 0 {
		opts.MaxDomains = 10000
	}
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	if opts.RetryFetch == 0 {
		opts.RetryFetch = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	c := &Cache{
		opts:     opts,
		entries:  make(map[string]*entry),
		failures: make(map[string]failure),
		inflight: make(map[string]*call),
	}
	c.fetch = func(ctx context.Context, domain string) (*Policy, error) {
		return Fetch(ctx, c.opts.Client, domain)
	}
	if opts.Path != "" {
		if err := c.load(); err != nil {
			c.loadErr = err
			opts.Logf("mta-sts: reading cache file: %v", err)
		}
	}
	return c, nil
}

// LoadError is what went wrong reading the cache file in New: the file
// ignored whole, or some of its policies skipped. It is nil if the file
// was read or did not exist.
func (c *Cache) LoadError() error { return c.loadErr }

// Result is the policy that applies to a domain now, and how Get got it.
type Result struct {
	Domain string
	// Policy is nil when no policy applies: deliver as without MTA-STS.
	// It is shared: do not modify it.
	Policy    *Policy
	ID        string    // the policy's id (from the TXT record it was fetched for)
	FromCache bool      // Policy was in the cache, not fetched for this Get
	Fetched   time.Time // when Policy was fetched
	Expires   time.Time // when it stops applying unless refetched
	// LookupErr is why the TXT record gave no id: ErrNoRecord, an error
	// wrapping ErrInvalidTXT, a temporary DNS failure, or the caller's
	// context ending first. With a cached Policy it was worked around
	// (RFC 8461 §3.1, §5.1).
	LookupErr error
	// FetchErr is the failed fetch (a *FetchError, or a remembered one
	// while Options.RetryFetch runs), for TLS-RPT and logs. With a Policy,
	// that is the cached one, still in force.
	FetchErr error
}

// Mode is the mode to apply: the policy's, ModeNone when there is none.
func (r *Result) Mode() Mode {
	if r.Policy == nil {
		return ModeNone
	}
	return r.Policy.Mode
}

// String describes the result for logs and lookup -v, as in
// "MTA-STS enforce (id 20240101T000000, cached, expires 2024-01-08T00:00:00Z)".
func (r *Result) String() string {
	var b strings.Builder
	if r.Policy == nil {
		b.WriteString("no MTA-STS policy (")
		switch {
		case r.FetchErr != nil:
			b.WriteString("fetch failed: ")
			b.WriteString(r.FetchErr.Error())
		case errors.Is(r.LookupErr, ErrNoRecord):
			b.WriteString("no TXT record")
		case r.LookupErr != nil:
			b.WriteString(r.LookupErr.Error())
		default:
			b.WriteString("none cached")
		}
		b.WriteByte(')')
		return b.String()
	}
	fmt.Fprintf(&b, "MTA-STS %s (id %s, ", r.Policy.Mode, r.ID)
	if r.FromCache {
		b.WriteString("cached")
	} else {
		b.WriteString("fetched")
	}
	b.WriteString(", expires ")
	b.WriteString(r.Expires.UTC().Format(time.RFC3339))
	if r.LookupErr != nil && !errors.Is(r.LookupErr, ErrNoRecord) {
		b.WriteString("; ")
		b.WriteString(r.LookupErr.Error())
	}
	if r.FetchErr != nil {
		b.WriteString("; refresh failed: ")
		b.WriteString(r.FetchErr.Error())
	}
	b.WriteByte(')')
	return b.String()
}

// Get returns the policy that applies to domain (an A-label name; case
// and a trailing dot do not matter) now, following RFC 8461 §5.1:
//
//   - the TXT record of _mta-sts.DOMAIN is looked up every time (the
//     caller's DNS caches it); its id is compared with the cached
//     policy's, and a different one makes Get fetch the new policy;
//   - with the same id, the cached policy is used until max_age has
//     passed since its fetch; past half of max_age Get refetches it, so
//     that a domain in use never runs its policy out, and keeps the
//     cached one if that fails;
//   - no usable TXT record (none, several, invalid) or a failed lookup
//     means no discovery: a cached unexpired policy stays in force (an
//     attacker who can drop the record cannot drop the policy), else no
//     policy applies;
//   - a failed fetch leaves the cached policy in force, or none; it is
//     not retried for Options.RetryFetch.
//
// The error is for a bad domain name, or ctx done before the discovery
// with nothing cached (with a policy cached, that is the Result, its
// LookupErr ctx's error); every other failure is in the Result, which
// then says what applies.
func (c *Cache) Get(ctx context.Context, domain string) (*Result, error) {
	d, err := normalizeDomain(domain)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	cl, ok := c.inflight[d]
	if !ok {
		cl = &call{done: make(chan struct{})}
		c.inflight[d] = cl
		// Detached from ctx: one caller giving up must not fail the
		// discovery for the others, nor have its cancellation
		// remembered as a failed fetch.
		go c.run(context.WithoutCancel(ctx), d, cl)
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		r := *cl.res
		return &r, nil
	case <-ctx.Done():
		// The discovery goes on for the cache; this caller gets what the
		// cache holds, which is what applies until the discovery ends.
		r := c.Cached(d)
		if r.Policy == nil {
			return nil, ctx.Err()
		}
		r.LookupErr = ctx.Err()
		return r, nil
	}
}

// Cached is what the cache holds for domain, without any lookup: a
// Result with FromCache set, or with a nil Policy if there is no
// unexpired policy.
func (c *Cache) Cached(domain string) *Result {
	d, err := normalizeDomain(domain)
	if err != nil {
		return &Result{Domain: domain}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[d]
	if e == nil || !c.opts.Now().Before(e.expires()) {
		return &Result{Domain: d}
	}
	return resultOf(d, e, true)
}

func (c *Cache) run(ctx context.Context, d string, cl *call) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	res := c.discover(ctx, d)
	c.mu.Lock()
	delete(c.inflight, d)
	c.mu.Unlock()
	cl.res = res
	close(cl.done)
}

func (c *Cache) discover(ctx context.Context, d string) *Result {
	now := c.opts.Now()
	cached := c.valid(d, now)

	records, err := c.opts.LookupTXT(ctx, "_mta-sts."+d)
	var id string
	if err == nil {
		id, err = ParseTXT(records)
	} else if !errors.Is(err, ErrNoRecord) {
		err = fmt.Errorf("looking up TXT _mta-sts.%s: %w", d, err)
	}
	if err != nil {
		r := resultOf(d, cached, true)
		r.LookupErr = err
		return r
	}

	if cached != nil && cached.id == id && now.Sub(cached.fetched) < cached.policy.MaxAge/2 {
		return resultOf(d, cached, true)
	}
	c.mu.Lock()
	f, failed := c.failures[d]
	c.mu.Unlock()
	if failed && f.id == id && now.Before(f.until) {
		r := resultOf(d, cached, true)
		r.FetchErr = f.err
		return r
	}

	p, err := c.fetch(ctx, d)
	if err != nil {
		c.mu.Lock()
		if len(c.failures) >= c.opts.MaxDomains {
			c.pruneFailures(now)
		}
		c.failures[d] = failure{id: id, until: now.Add(c.opts.RetryFetch), err: err}
		c.mu.Unlock()
		r := resultOf(d, cached, true)
		r.FetchErr = err
		return r
	}
	e := &entry{id: id, policy: p, fetched: now, lastUsed: now}
	c.mu.Lock()
	delete(c.failures, d)
	if _, ok := c.entries[d]; !ok && len(c.entries) >= c.opts.MaxDomains {
		c.evict(now)
	}
	c.entries[d] = e
	c.mu.Unlock()
	c.save()
	return resultOf(d, e, false)
}

// valid returns a copy of the unexpired cached entry of d, or nil,
// dropping an expired one.
func (c *Cache) valid(d string, now time.Time) *entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[d]
	if e == nil {
		return nil
	}
	if !now.Before(e.expires()) {
		delete(c.entries, d)
		return nil
	}
	e.lastUsed = now
	cp := *e
	return &cp
}

// evict drops the least recently used entry, an expired one first. The
// caller locks.
func (c *Cache) evict(now time.Time) {
	var victim string
	var oldest time.Time
	for d, e := range c.entries {
		if !now.Before(e.expires()) {
			victim = d
			break
		}
		if victim == "" || e.lastUsed.Before(oldest) {
			victim, oldest = d, e.lastUsed
		}
	}
	delete(c.entries, victim)
}

// pruneFailures keeps the failure table bounded: expired ones go, and if
// none had, all of them (they only save fetches). The caller locks.
func (c *Cache) pruneFailures(now time.Time) {
	for d, f := range c.failures {
		if !now.Before(f.until) {
			delete(c.failures, d)
		}
	}
	if len(c.failures) >= c.opts.MaxDomains {
		clear(c.failures)
	}
}

func resultOf(d string, e *entry, fromCache bool) *Result {
	if e == nil {
		return &Result{Domain: d}
	}
	return &Result{
		Domain:    d,
		Policy:    e.policy,
		ID:        e.id,
		FromCache: fromCache,
		Fetched:   e.fetched,
		Expires:   e.expires(),
	}
}

// normalizeDomain is the cache key and the name the URL is built from.
func normalizeDomain(domain string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	if err := checkDomain(d); err != nil {
		return "", fmt.Errorf("mta-sts: domain %q: %w", truncate(domain), err)
	}
	return d, nil
}
