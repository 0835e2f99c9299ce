package directory

import (
	"container/list"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailfwd/routing"
)

// Cache remembers a source's answers: Postfix's LDAP table asks the
// directory for every lookup of every message; we ask once per TTL.
// Answers are kept for PositiveTTL, "not found" for NegativeTTL (shorter,
// so a new mailbox works soon), errors never: a directory failure must not
// turn into "unknown user". Keys are case-folded because the directories
// we serve match addresses case-insensitively.
type Cache struct {
	src         routing.Source
	positiveTTL time.Duration
	negativeTTL time.Duration
	max         int
	now         func() time.Time

	mu       sync.Mutex
	lru      *list.List // of *cacheEntry, most recent first
	entries  map[string]*list.Element
	inflight map[string]*cacheCall

	hits, misses atomic.Uint64
}

type cacheEntry struct {
	key     string
	matches []routing.Match
	expires time.Time
}

// cacheCall lets concurrent misses for one key share one directory query.
type cacheCall struct {
	done    chan struct{}
	matches []routing.Match
	err     error
}

// NewCache wraps src. size bounds the number of keys kept (least recently
// used go first).
func NewCache(src routing.Source, positiveTTL, negativeTTL time.Duration, size int) *Cache {
	size = max(size, 1) // the size is configuration (directory.cache.size)
	return &Cache{
		src: src, positiveTTL: positiveTTL, negativeTTL: negativeTTL, max: size, now: time.Now,
		lru: list.New(), entries: map[string]*list.Element{}, inflight: map[string]*cacheCall{},
	}
}

// Stats returns hit and miss counts since start.
func (c *Cache) Stats() (hits, misses uint64) { return c.hits.Load(), c.misses.Load() }

// Lookup implements Source.
func (c *Cache) Lookup(ctx context.Context, key string) ([]routing.Match, error) {
	k := strings.ToLower(key)
	c.mu.Lock()
	if el, ok := c.entries[k]; ok {
		e := el.Value.(*cacheEntry)
		if c.now().Before(e.expires) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			c.hits.Add(1)
			return e.matches, nil
		}
		c.lru.Remove(el)
		delete(c.entries, k)
	}
	c.misses.Add(1)
	if call, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		select {
		case <-call.done:
			return call.matches, call.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	call := &cacheCall{done: make(chan struct{})}
	c.inflight[k] = call
	c.mu.Unlock()

	call.matches, call.err = c.src.Lookup(ctx, key)

	c.mu.Lock()
	delete(c.inflight, k)
	ttl := c.positiveTTL
	if len(call.matches) == 0 {
		ttl = c.negativeTTL
	}
	if call.err == nil && ttl > 0 {
		c.entries[k] = c.lru.PushFront(&cacheEntry{key: k, matches: call.matches, expires: c.now().Add(ttl)})
		for c.lru.Len() > c.max {
			old := c.lru.Back()
			c.lru.Remove(old)
			delete(c.entries, old.Value.(*cacheEntry).key)
		}
	}
	c.mu.Unlock()
	close(call.done)
	return call.matches, call.err
}

// Flush forgets every answer (on reload).
func (c *Cache) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Init()
	c.entries = map[string]*list.Element{}
}
