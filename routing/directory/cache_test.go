package directory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mailfwd/routing"
)

// countingSource answers from a map and counts queries per key.
type countingSource struct {
	mu      sync.Mutex
	answers map[string][]routing.Match
	fail    atomic.Bool
	queries map[string]int
	delay   time.Duration
}

func (s *countingSource) Lookup(_ context.Context, key string) ([]routing.Match, error) {
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries[key]++
	if s.fail.Load() {
		return nil, fmt.Errorf("%w: down", routing.ErrUnavailable)
	}
	return s.answers[key], nil
}

func (s *countingSource) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[key]
}

func newCounting() *countingSource {
	return &countingSource{answers: map[string][]routing.Match{"a@x.test": {{Value: "b@x.test"}}}, queries: map[string]int{}}
}

func TestCacheTTLs(t *testing.T) {
	src := newCounting()
	c := NewCache(src, time.Minute, 10*time.Second, 100)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	look := func(k string) []string {
		t.Helper()
		ms, err := c.Lookup(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		return routing.Values(ms)
	}
	steps := []struct {
		advance time.Duration
		key     string
		want    string
		queries int // directory queries for key so far
	}{
		{0, "a@x.test", "[b@x.test]", 1},
		{0, "A@X.test", "[b@x.test]", 1}, // case-folded key: a hit
		{59 * time.Second, "a@x.test", "[b@x.test]", 1},
		{2 * time.Second, "a@x.test", "[b@x.test]", 2}, // positive TTL over
		{0, "none@x.test", "[]", 1},
		{9 * time.Second, "none@x.test", "[]", 1},
		{2 * time.Second, "none@x.test", "[]", 2}, // negative TTL over
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if got := fmt.Sprint(look(s.key)); got != s.want {
			t.Fatalf("step %d: %s = %s, want %s", i, s.key, got, s.want)
		}
		if n := src.count(strings.ToLower(s.key)); n != s.queries {
			t.Fatalf("step %d: %d queries for %s, want %d", i, n, s.key, s.queries)
		}
	}
	hits, misses := c.Stats()
	if hits != 3 || misses != 4 {
		t.Fatalf("hits=%d misses=%d, want 3 and 4", hits, misses)
	}
}

// A failing directory is never remembered as "not found".
func TestCacheDoesNotCacheErrors(t *testing.T) {
	src := newCounting()
	c := NewCache(src, time.Minute, time.Minute, 100)
	src.fail.Store(true)
	if _, err := c.Lookup(context.Background(), "a@x.test"); !errors.Is(err, routing.ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	src.fail.Store(false)
	ms, err := c.Lookup(context.Background(), "a@x.test")
	if err != nil || len(ms) != 1 {
		t.Fatalf("after recovery: %v, %v", ms, err)
	}
}

func TestCacheBounded(t *testing.T) {
	src := newCounting()
	c := NewCache(src, time.Hour, time.Hour, 3)
	for _, k := range []string{"1", "2", "3", "1", "4"} { // "2" is least recently used when 4 arrives
		c.Lookup(context.Background(), k)
	}
	if len(c.entries) != 3 {
		t.Fatalf("%d entries, want 3", len(c.entries))
	}
	c.Lookup(context.Background(), "1")
	c.Lookup(context.Background(), "2")
	if src.count("1") != 1 || src.count("2") != 2 {
		t.Fatalf("queries: 1→%d (want 1, kept), 2→%d (want 2, evicted)", src.count("1"), src.count("2"))
	}
}

// Concurrent misses for one key cost one directory query.
func TestCacheCoalescesMisses(t *testing.T) {
	src := newCounting()
	src.delay = 50 * time.Millisecond
	c := NewCache(src, time.Minute, time.Minute, 100)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ms, err := c.Lookup(context.Background(), "a@x.test"); err != nil || len(ms) != 1 {
				t.Errorf("lookup: %v %v", ms, err)
			}
		}()
	}
	wg.Wait()
	if n := src.count("a@x.test"); n != 1 {
		t.Fatalf("%d directory queries for 20 concurrent lookups, want 1", n)
	}
}

func TestCacheDisabledByZeroTTL(t *testing.T) {
	src := newCounting()
	c := NewCache(src, 0, 0, 100)
	c.Lookup(context.Background(), "a@x.test")
	c.Lookup(context.Background(), "a@x.test")
	if n := src.count("a@x.test"); n != 2 {
		t.Fatalf("%d queries with TTL 0, want 2", n)
	}
}

// Behind a cache only misses reach the directory, so only they are timed.
func TestObservedBehindCacheTimesOnlyMisses(t *testing.T) {
	n := 0
	src := &countingSource{answers: map[string][]routing.Match{"known@example.com": {{Value: "target@example.net"}}}, queries: map[string]int{}}
	cache := NewCache(routing.Observed(src, func(time.Duration, error) { n++ }), time.Minute, time.Minute, 10)
	for range 3 {
		cache.Lookup(context.Background(), "known@example.com")
		cache.Lookup(context.Background(), "nobody@example.com")
	}
	if n != 2 {
		t.Fatalf("%d directory lookups observed, want 2 (the misses)", n)
	}
	if hits, misses := cache.Stats(); hits != 4 || misses != 2 {
		t.Fatalf("cache stats %d/%d, want 4 hits, 2 misses", hits, misses)
	}
}
