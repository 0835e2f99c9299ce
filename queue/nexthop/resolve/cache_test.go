package resolve

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestPositiveCache(t *testing.T) {
	tests := []struct {
		name    string
		answer  []string
		maxTTL  time.Duration
		wantTTL time.Duration
	}{
		{"min of rrset", []string{"c.example. 300 IN A 192.0.2.1", "c.example. 60 IN A 192.0.2.2"}, 0, time.Minute},
		{"capped at 24h", []string{"c.example. 2000000 IN A 192.0.2.1"}, 0, 24 * time.Hour},
		{"own cap", []string{"c.example. 600 IN A 192.0.2.1"}, 5 * time.Minute, 5 * time.Minute},
		{"cname in chain counts", []string{"c.example. 30 IN CNAME d.example.", "d.example. 600 IN A 192.0.2.1"}, 0, 30 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, zone{"c.example. A": {answer: rrs(t, tt.answer...)}}.handle)
			r, clk := newResolver(srv.addr)
			r.MaxTTL = tt.maxTTL
			ctx := context.Background()
			res, err := r.LookupAddrs(ctx, "c.example")
			if err != nil {
				t.Fatal(err)
			}
			if res.TTL != tt.wantTTL {
				t.Errorf("TTL %v, want %v", res.TTL, tt.wantTTL)
			}
			clk.advance(tt.wantTTL - time.Second)
			res, err = r.LookupAddrs(ctx, "C.Example.") // case and dot do not matter
			if err != nil {
				t.Fatal(err)
			}
			if n := srv.total(); n != 1 {
				t.Errorf("%d queries within the TTL, want 1", n)
			}
			if res.TTL != time.Second {
				t.Errorf("remaining TTL %v, want 1s", res.TTL)
			}
			clk.advance(time.Second)
			if _, err := r.LookupAddrs(ctx, "c.example"); err != nil {
				t.Fatal(err)
			}
			if n := srv.total(); n != 2 {
				t.Errorf("%d queries after expiry, want 2", n)
			}
		})
	}
}

func TestNegativeCache(t *testing.T) {
	tests := []struct {
		name   string
		spec   func(t *testing.T) spec
		want   error
		cached time.Duration // 0: not cached
	}{
		{"nxdomain by soa minimum", func(t *testing.T) spec {
			return spec{rcode: dns.RcodeNameError, ns: soa(t, 300, 60)}
		}, ErrNotFound, time.Minute},
		{"nxdomain by soa ttl", func(t *testing.T) spec {
			return spec{rcode: dns.RcodeNameError, ns: soa(t, 30, 3600)}
		}, ErrNotFound, 30 * time.Second},
		{"nxdomain capped at 1h", func(t *testing.T) spec {
			return spec{rcode: dns.RcodeNameError, ns: soa(t, 86400, 86400)}
		}, ErrNotFound, time.Hour},
		{"nodata by soa", func(t *testing.T) spec {
			return spec{ns: soa(t, 300, 120)}
		}, nil, 2 * time.Minute},
		{"nxdomain without soa", func(t *testing.T) spec {
			return spec{rcode: dns.RcodeNameError}
		}, ErrNotFound, 0},
		{"servfail", func(t *testing.T) spec {
			return spec{rcode: dns.RcodeServerFailure}
		}, ErrTemporary, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, zone{"n.example. MX": tt.spec(t)}.handle)
			r, clk := newResolver(srv.addr)
			ctx := context.Background()
			_, err := r.LookupMX(ctx, "n.example")
			wantClass(t, err, tt.want)
			if tt.cached > 0 {
				clk.advance(tt.cached - time.Second)
			}
			_, err = r.LookupMX(ctx, "n.example")
			wantClass(t, err, tt.want)
			want := 1
			if tt.cached == 0 {
				want = 2
			}
			if n := srv.total(); n != want {
				t.Fatalf("%d queries, want %d", n, want)
			}
			if tt.cached == 0 {
				return
			}
			clk.advance(time.Second)
			_, err = r.LookupMX(ctx, "n.example")
			wantClass(t, err, tt.want)
			if n := srv.total(); n != 2 {
				t.Errorf("%d queries after expiry, want 2", n)
			}
		})
	}
}

func TestCacheKeyedByType(t *testing.T) {
	srv := startServer(t, zone{
		"k.example. MX":  {answer: rrs(t, "k.example. 300 IN MX 10 mx.example.")},
		"k.example. TXT": {answer: rrs(t, `k.example. 300 IN TXT "hello"`)},
	}.handle)
	r, _ := newResolver(srv.addr)
	ctx := context.Background()
	for range 2 {
		if _, err := r.LookupMX(ctx, "k.example"); err != nil {
			t.Fatal(err)
		}
		if _, err := r.LookupTXT(ctx, "k.example"); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := srv.count("k.example", dns.TypeMX), srv.count("k.example", dns.TypeTXT); a != 1 || b != 1 {
		t.Errorf("MX %d and TXT %d queries, want 1 each", a, b)
	}
}

func TestCacheEvictsOldest(t *testing.T) {
	z := zone{}
	for _, n := range []string{"a", "b", "c"} {
		z[n+".example. A"] = spec{answer: rrs(t, n+".example. 300 IN A 192.0.2.1")}
	}
	srv := startServer(t, z.handle)
	r, _ := newResolver(srv.addr)
	r.CacheSize = 2
	ctx := context.Background()
	for _, n := range []string{"a", "b", "c", "c", "b", "a"} {
		if _, err := r.LookupAddrs(ctx, n+".example"); err != nil {
			t.Fatal(err)
		}
	}
	// c evicts a (the oldest); c and b are then hits; a is asked again.
	for n, want := range map[string]int{"a": 2, "b": 1, "c": 1} {
		if got := srv.count(n+".example", dns.TypeA); got != want {
			t.Errorf("%s: %d queries, want %d", n, got, want)
		}
	}
	r.mu.Lock()
	size := r.cache.len()
	r.mu.Unlock()
	if size != 2 {
		t.Errorf("cache holds %d entries, want 2", size)
	}
}

func TestCacheDisabled(t *testing.T) {
	srv := startServer(t, zone{"d.example. A": {answer: rrs(t, "d.example. 300 IN A 192.0.2.1")}}.handle)
	r, _ := newResolver(srv.addr)
	r.CacheSize = -1
	for range 2 {
		if _, err := r.LookupAddrs(context.Background(), "d.example"); err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.total(); n != 2 {
		t.Errorf("%d queries, want 2", n)
	}
}

func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	release := make(chan struct{})
	answer := zone{"s.example. MX": {answer: rrs(t, "s.example. 300 IN MX 10 mx.s.example.")}}
	srv := startServer(t, func(q *dns.Msg, network string) *dns.Msg {
		<-release
		return answer.handle(q, network)
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the server's shutdown, even on failure
	r, _ := newResolver(srv.addr)
	r.Timeout = 5 * time.Second
	ctx := context.Background()

	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	results := make([]MXResult, n)
	for i := range n {
		wg.Go(func() { results[i], errs[i] = r.LookupMX(ctx, "s.example") })
	}
	// One more asker gives up early; that must not fail the others.
	quitter, cancel := context.WithCancel(ctx)
	quit := make(chan error)
	go func() {
		_, err := r.LookupMX(quitter, "s.example")
		quit <- err
	}()
	waitFor(t, func() bool { return r.waiters(key("s.example", dns.TypeMX)) == n+1 })
	cancel()
	wantClass(t, <-quit, ErrTemporary)
	unblock()
	wg.Wait()

	for i := range n {
		if errs[i] != nil {
			t.Fatalf("lookup %d: %v", i, errs[i])
		}
		if len(results[i].Records) != 1 || results[i].Records[0].Host != "mx.s.example" {
			t.Fatalf("lookup %d: %+v", i, results[i])
		}
	}
	if q := srv.total(); q != 1 {
		t.Errorf("%d upstream queries for %d concurrent lookups, want 1", q, n)
	}
}

// waiters is how many lookups wait for the in-flight query k ("name. TYPE").
func (r *Resolver) waiters(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for fk, f := range r.flights {
		if key(fk.name, fk.qtype) == k {
			return f.waiters
		}
	}
	return 0
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}
