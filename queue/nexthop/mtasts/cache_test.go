package mtasts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeNet is the DNS and the policy host of the cache tests.
type fakeNet struct {
	mu      sync.Mutex
	txt     []string
	txtErr  error
	policy  *Policy
	hostErr error
	fetches int
	gate    chan struct{} // if set, fetches wait for it
}

func (n *fakeNet) lookup(_ context.Context, name string) ([]string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if name != "_mta-sts.example.com" {
		return nil, fmt.Errorf("%w: %s", ErrNoRecord, name)
	}
	return n.txt, n.txtErr
}

func (n *fakeNet) fetch(ctx context.Context, domain string) (*Policy, error) {
	n.mu.Lock()
	n.fetches++
	gate, p, err := n.gate, n.policy, n.hostErr
	n.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, &FetchError{Domain: domain, Kind: ErrFetch, Err: err}
	}
	return p, nil
}

func (n *fakeNet) set(txt []string, txtErr error, p *Policy, hostErr error) {
	n.mu.Lock()
	n.txt, n.txtErr, n.policy, n.hostErr = txt, txtErr, p, hostErr
	n.mu.Unlock()
}

func (n *fakeNet) takeFetches() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	f := n.fetches
	n.fetches = 0
	return f
}

func newTestCache(t *testing.T, path string, clock *fakeClock, n *fakeNet, logf func(string, ...any)) *Cache {
	t.Helper()
	c, err := New(Options{LookupTXT: n.lookup, Path: path, Now: clock.Now, Logf: logf})
	if err != nil {
		t.Fatal(err)
	}
	c.fetch = n.fetch
	return c
}

var (
	errTemp   = errors.New("SERVFAIL")
	errDown   = errors.New("connection refused")
	enforce1d = &Policy{Mode: ModeEnforce, MX: []string{"*.example.com"}, MaxAge: 24 * time.Hour}
	testing1d = &Policy{Mode: ModeTesting, MX: []string{"mx.example.net"}, MaxAge: 24 * time.Hour}
	enforce1h = &Policy{Mode: ModeEnforce, MX: []string{"*.example.com"}, MaxAge: time.Hour}
	none1d    = &Policy{Mode: ModeNone, MaxAge: 24 * time.Hour}
)

func txt(id string) []string { return []string{"v=spf1 -all", "v=STSv1; id=" + id + ";"} }

func TestCacheDiscovery(t *testing.T) {
	type step struct {
		advance time.Duration
		txt     []string
		txtErr  error
		policy  *Policy // what the host serves, if no hostErr
		hostErr error

		wantID        string // "" for no policy
		wantMode      Mode
		wantCached    bool
		wantFetches   int
		wantLookupErr error // nil, ErrNoRecord, ErrInvalidTXT or errTemp
		wantFetchErr  bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"same id: no refetch", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: time.Hour, txt: txt("1"), policy: testing1d, wantID: "1", wantMode: ModeEnforce, wantCached: true},
			{advance: 10 * time.Hour, txt: txt("1"), policy: testing1d, wantID: "1", wantMode: ModeEnforce, wantCached: true},
		}},
		{"id change: refetch", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: time.Minute, txt: txt("2"), policy: testing1d, wantID: "2", wantMode: ModeTesting, wantFetches: 1},
			{advance: time.Minute, txt: txt("2"), policy: enforce1d, wantID: "2", wantMode: ModeTesting, wantCached: true},
		}},
		{"expired: refetch", []step{
			{txt: txt("1"), policy: enforce1h, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: 2 * time.Hour, txt: txt("1"), policy: testing1d, wantID: "1", wantMode: ModeTesting, wantFetches: 1},
		}},
		{"past half max_age: refreshed, a failure keeps the cache and is not retried at once", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: 13 * time.Hour, txt: txt("1"), hostErr: errDown, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantFetches: 1, wantFetchErr: true},
			{advance: time.Minute, txt: txt("1"), policy: testing1d, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantFetchErr: true},
			{advance: 5 * time.Minute, txt: txt("1"), policy: testing1d, wantID: "1", wantMode: ModeTesting, wantFetches: 1},
		}},
		{"temporary DNS error, cached: cache used", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: time.Hour, txtErr: errTemp, policy: testing1d, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantLookupErr: errTemp},
		}},
		{"temporary DNS error, nothing cached: no policy", []step{
			{txtErr: errTemp, policy: enforce1d, wantLookupErr: errTemp, wantMode: ModeNone},
		}},
		{"fetch failure on id change, cached: cache used", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: time.Hour, txt: txt("2"), hostErr: errDown, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantFetches: 1, wantFetchErr: true},
			{advance: 2 * time.Minute, txt: txt("2"), hostErr: errDown, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantFetchErr: true},
			{advance: 4 * time.Minute, txt: txt("2"), policy: testing1d, wantID: "2", wantMode: ModeTesting, wantFetches: 1},
		}},
		{"fetch failure, nothing cached: no policy, a new id fetched at once", []step{
			{txt: txt("1"), hostErr: errDown, wantMode: ModeNone, wantFetches: 1, wantFetchErr: true},
			{advance: time.Minute, txt: txt("1"), policy: enforce1d, wantMode: ModeNone, wantFetchErr: true},
			{advance: time.Minute, txt: txt("2"), policy: enforce1d, wantID: "2", wantMode: ModeEnforce, wantFetches: 1},
		}},
		{"fetch failure, nothing cached: retried after the pause", []step{
			{txt: txt("1"), hostErr: errDown, wantMode: ModeNone, wantFetches: 1, wantFetchErr: true},
			{advance: 5 * time.Minute, txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
		}},
		{"TXT record removed: cache used until it expires", []step{
			{txt: txt("1"), policy: enforce1h, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: 30 * time.Minute, txtErr: fmt.Errorf("NXDOMAIN: %w", ErrNoRecord), wantID: "1", wantMode: ModeEnforce, wantCached: true, wantLookupErr: ErrNoRecord},
			{advance: 20 * time.Minute, txt: []string{"v=spf1 -all"}, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantLookupErr: ErrNoRecord},
			{advance: 11 * time.Minute, txt: nil, wantMode: ModeNone, wantLookupErr: ErrNoRecord},
		}},
		{"two TXT records: cache used, never a fetch", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: time.Minute, txt: append(txt("2"), "v=STSv1; id=3"), policy: testing1d, wantID: "1", wantMode: ModeEnforce, wantCached: true, wantLookupErr: ErrInvalidTXT},
		}},
		{"two TXT records, nothing cached: no policy", []step{
			{txt: append(txt("2"), "v=STSv1; id=3"), policy: enforce1d, wantMode: ModeNone, wantLookupErr: ErrInvalidTXT},
		}},
		{"no TXT record: no policy, no fetch", []step{
			{txtErr: fmt.Errorf("NXDOMAIN: %w", ErrNoRecord), policy: enforce1d, wantMode: ModeNone, wantLookupErr: ErrNoRecord},
			{txt: []string{}, policy: enforce1d, wantMode: ModeNone, wantLookupErr: ErrNoRecord},
		}},
		{"mode none is a policy like another", []step{
			{txt: txt("1"), policy: enforce1d, wantID: "1", wantMode: ModeEnforce, wantFetches: 1},
			{advance: time.Hour, txt: txt("2"), policy: none1d, wantID: "2", wantMode: ModeNone, wantFetches: 1},
			{advance: time.Hour, txt: txt("2"), policy: enforce1d, wantID: "2", wantMode: ModeNone, wantCached: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
			n := &fakeNet{}
			c := newTestCache(t, "", clock, n, t.Logf)
			for i, s := range tt.steps {
				clock.Add(s.advance)
				n.set(s.txt, s.txtErr, s.policy, s.hostErr)
				r, err := c.Get(context.Background(), "Example.COM.")
				if err != nil {
					t.Fatalf("step %d: Get: %v", i, err)
				}
				t.Logf("step %d: %v", i, r)
				if (r.Policy != nil) != (s.wantID != "") || r.ID != s.wantID || r.Mode() != s.wantMode || r.FromCache != s.wantCached {
					t.Errorf("step %d: policy %+v id %q mode %s cached %v; want id %q mode %s cached %v",
						i, r.Policy, r.ID, r.Mode(), r.FromCache, s.wantID, s.wantMode, s.wantCached)
				}
				if r.Domain != "example.com" {
					t.Errorf("step %d: Domain %q", i, r.Domain)
				}
				if f := n.takeFetches(); f != s.wantFetches {
					t.Errorf("step %d: %d fetches, want %d", i, f, s.wantFetches)
				}
				if s.wantLookupErr == nil && r.LookupErr != nil || s.wantLookupErr != nil && !errors.Is(r.LookupErr, s.wantLookupErr) {
					t.Errorf("step %d: LookupErr %v, want %v", i, r.LookupErr, s.wantLookupErr)
				}
				if (r.FetchErr != nil) != s.wantFetchErr {
					t.Errorf("step %d: FetchErr %v, want one: %v", i, r.FetchErr, s.wantFetchErr)
				}
				if r.Policy != nil && !r.Expires.Equal(r.Fetched.Add(r.Policy.MaxAge)) {
					t.Errorf("step %d: expires %v, fetched %v", i, r.Expires, r.Fetched)
				}
			}
		})
	}
}

func TestResultString(t *testing.T) {
	fetched := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	fetchErr := &FetchError{Domain: "example.com", Kind: ErrFetch, Err: errDown}
	tests := []struct {
		r    Result
		want string
	}{
		{Result{Policy: enforce1d, ID: "20240101", FromCache: true, Fetched: fetched, Expires: fetched.Add(24 * time.Hour)},
			"MTA-STS enforce (id 20240101, cached, expires 2024-01-02T00:00:00Z)"},
		{Result{Policy: testing1d, ID: "2", Fetched: fetched, Expires: fetched.Add(24 * time.Hour)},
			"MTA-STS testing (id 2, fetched, expires 2024-01-02T00:00:00Z)"},
		{Result{Policy: enforce1d, ID: "1", FromCache: true, Expires: fetched, FetchErr: fetchErr},
			"MTA-STS enforce (id 1, cached, expires 2024-01-01T00:00:00Z; refresh failed: mta-sts: fetching policy of example.com: connection refused)"},
		{Result{Policy: enforce1d, ID: "1", FromCache: true, Expires: fetched, LookupErr: errTemp},
			"MTA-STS enforce (id 1, cached, expires 2024-01-01T00:00:00Z; SERVFAIL)"},
		{Result{LookupErr: ErrNoRecord}, "no MTA-STS policy (no TXT record)"},
		{Result{LookupErr: errTemp}, "no MTA-STS policy (SERVFAIL)"},
		{Result{FetchErr: fetchErr}, "no MTA-STS policy (fetch failed: mta-sts: fetching policy of example.com: connection refused)"},
		{Result{}, "no MTA-STS policy (none cached)"},
	}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("String() = %q\nwant %q", got, tt.want)
		}
	}
}

func TestCachePersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mta-sts.json")
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	n := &fakeNet{}
	n.set(txt("abc"), nil, enforce1d, nil)
	c1 := newTestCache(t, path, clock, n, t.Logf)
	if err := c1.LoadError(); err != nil {
		t.Fatalf("LoadError with no file: %v", err)
	}
	if r, _ := c1.Get(context.Background(), "example.com"); r.ID != "abc" || r.FromCache {
		t.Fatalf("first Get: %v", r)
	}
	var f cacheFile
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &f); err != nil || len(f.Policies) != 1 || f.Policies[0].Domain != "example.com" {
		t.Fatalf("cache file %s: %v", data, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}

	// A restart: the policy is there, the same id means no fetch, and it
	// survives the TXT record's disappearance too.
	clock.Add(time.Hour)
	n.takeFetches()
	c2 := newTestCache(t, path, clock, n, t.Logf)
	if err := c2.LoadError(); err != nil {
		t.Fatalf("LoadError: %v", err)
	}
	if r := c2.Cached("example.com"); r.ID != "abc" || r.Mode() != ModeEnforce || !r.Policy.MatchMX("mx1.example.com") ||
		!r.Fetched.Equal(clock.Now().Add(-time.Hour)) {
		t.Fatalf("Cached after restart: %v", r)
	}
	r, _ := c2.Get(context.Background(), "example.com")
	if r.ID != "abc" || !r.FromCache || n.takeFetches() != 0 {
		t.Fatalf("Get after restart: %v", r)
	}
	n.set(nil, ErrNoRecord, nil, nil)
	if r, _ := c2.Get(context.Background(), "example.com"); r.ID != "abc" {
		t.Fatalf("Get without TXT after restart: %v", r)
	}

	// Expired in the file: not loaded.
	clock.Add(24 * time.Hour)
	c3 := newTestCache(t, path, clock, n, t.Logf)
	if r := c3.Cached("example.com"); r.Policy != nil || c3.LoadError() != nil {
		t.Fatalf("expired policy loaded: %v, %v", r, c3.LoadError())
	}
}

func TestCacheCorruptFile(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tt := range []struct {
		name, content string
	}{
		{"not json", "{\"version\": 1, \"policies\": [{\"dom"},
		{"binary", "\x00\x01\x02\xff"},
		{"other version", `{"version": 2, "policies": []}`},
		{"wrong shape", `{"version": 1, "policies": {"example.com": 1}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "mta-sts.json")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var logged []string
			n := &fakeNet{}
			c := newTestCache(t, path, clock, n, func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) })
			if c.LoadError() == nil || len(logged) != 1 {
				t.Fatalf("LoadError %v, logged %q", c.LoadError(), logged)
			}
			t.Log(logged[0])
			// Empty but working, and the next fetch repairs the file.
			n.set(txt("1"), nil, enforce1d, nil)
			if r, err := c.Get(context.Background(), "example.com"); err != nil || r.ID != "1" {
				t.Fatalf("Get: %v, %v", r, err)
			}
			c2 := newTestCache(t, path, clock, n, t.Logf)
			if c2.LoadError() != nil || c2.Cached("example.com").ID != "1" {
				t.Fatalf("after repair: %v, %v", c2.LoadError(), c2.Cached("example.com"))
			}
		})
	}
}

func TestCacheFileInvalidEntries(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	fetched := clock.Now().Add(-time.Hour).Format(time.RFC3339)
	entry := func(domain, id, mode, mx string) string {
		return fmt.Sprintf(`{"domain": %q, "id": %q, "fetched": %q, "mode": %q, "mx": [%q], "max_age": 86400}`, domain, id, fetched, mode, mx)
	}
	content := `{"version": 1, "policies": [` + strings.Join([]string{
		entry("example.com", "1", "enforce", "*.example.com"),
		entry("bad-mode.example", "1", "strict", "mx.example"),
		entry("bad-id.example", "a-b", "enforce", "mx.example"),
		entry("bad-mx.example", "1", "enforce", "mx*.example"),
		entry("Upper.Example", "1", "enforce", "mx.example"),
		entry("example.com", "2", "testing", "*.example.com"),
	}, ",") + `]}`
	path := filepath.Join(t.TempDir(), "mta-sts.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newTestCache(t, path, clock, &fakeNet{}, t.Logf)
	if err := c.LoadError(); err == nil || !strings.Contains(err.Error(), "5 invalid") {
		t.Fatalf("LoadError = %v", err)
	}
	if r := c.Cached("example.com"); r.ID != "1" || r.Mode() != ModeEnforce {
		t.Fatalf("valid entry not loaded: %v", r)
	}
}

func TestCacheMaxDomains(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "mta-sts.json")
	lookup := func(_ context.Context, name string) ([]string, error) { return txt("1"), nil }
	c, err := New(Options{LookupTXT: lookup, Path: path, Now: clock.Now, MaxDomains: 3})
	if err != nil {
		t.Fatal(err)
	}
	c.fetch = func(context.Context, string) (*Policy, error) { return enforce1d, nil }
	get := func(d string) {
		t.Helper()
		clock.Add(time.Second)
		if r, err := c.Get(context.Background(), d); err != nil || r.Policy == nil {
			t.Fatalf("Get(%s) = %v, %v", d, r, err)
		}
	}
	get("a.example")
	get("b.example")
	get("c.example")
	get("a.example") // b is now the least recently used
	get("d.example")
	for d, want := range map[string]bool{"a.example": true, "b.example": false, "c.example": true, "d.example": true} {
		if got := c.Cached(d).Policy != nil; got != want {
			t.Errorf("%s cached: %v, want %v", d, got, want)
		}
	}
	// The file is bounded on load too, keeping the most recently used.
	c2, _ := New(Options{LookupTXT: lookup, Path: path, Now: clock.Now, MaxDomains: 2})
	for d, want := range map[string]bool{"a.example": true, "c.example": false, "d.example": true} {
		if got := c2.Cached(d).Policy != nil; got != want {
			t.Errorf("after load with 2: %s cached: %v, want %v", d, got, want)
		}
	}
}

// Concurrent Gets share one discovery, and a caller that gives up does
// not make the fetch fail for the others.
func TestCacheConcurrentGets(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	n := &fakeNet{gate: make(chan struct{})}
	n.set(txt("1"), nil, enforce1d, nil)
	c := newTestCache(t, "", clock, n, t.Logf)

	impatient, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Get(impatient, "example.com"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with cancelled context: %v", err)
	}
	var wg sync.WaitGroup
	results := make([]*Result, 10)
	for i := range results {
		wg.Go(func() {
			r, err := c.Get(context.Background(), "example.com")
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	time.Sleep(50 * time.Millisecond) // let them all wait on the one discovery
	close(n.gate)
	wg.Wait()
	for i, r := range results {
		if r == nil || r.ID != "1" || r.FetchErr != nil {
			t.Fatalf("result %d: %v", i, r)
		}
	}
	if f := n.takeFetches(); f != 1 {
		t.Fatalf("%d fetches, want 1", f)
	}
}

// A caller whose context ends during a refresh gets the cached policy.
func TestCacheCallerGivesUpDuringRefresh(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	n := &fakeNet{}
	n.set(txt("1"), nil, enforce1d, nil)
	c := newTestCache(t, "", clock, n, t.Logf)
	if r, err := c.Get(context.Background(), "example.com"); err != nil || r.ID != "1" {
		t.Fatalf("Get = %v, %v", r, err)
	}
	gate := make(chan struct{})
	n.mu.Lock()
	n.gate = gate
	n.mu.Unlock()
	n.set(txt("2"), nil, testing1d, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r, err := c.Get(ctx, "example.com")
	if err != nil || r.ID != "1" || !r.FromCache || !errors.Is(r.LookupErr, context.DeadlineExceeded) {
		t.Fatalf("Get during the refresh = %v, %v; want the cached policy", r, err)
	}
	close(gate) // the discovery, not cancelled, ends and caches the new policy
	for deadline := time.Now().Add(5 * time.Second); c.Cached("example.com").ID != "2"; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the new policy never arrived")
		}
	}
}

func TestCacheTimeout(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}
	n := &fakeNet{gate: make(chan struct{})} // never opened: the fetch hangs
	n.set(txt("1"), nil, enforce1d, nil)
	c, err := New(Options{LookupTXT: n.lookup, Now: clock.Now, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.fetch = n.fetch
	r, err := c.Get(context.Background(), "example.com")
	if err != nil || r.Policy != nil || !errors.Is(r.FetchErr, context.DeadlineExceeded) {
		t.Fatalf("Get = %v, %v; want no policy after a timeout", r, err)
	}
}

func TestCacheBadInput(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without LookupTXT succeeded")
	}
	c, err := New(Options{LookupTXT: (&fakeNet{}).lookup})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", ".", "[192.0.2.1]", "example.com/x", "exa mple.com", "ex\u00e4mple.com"} {
		if _, err := c.Get(context.Background(), d); err == nil {
			t.Errorf("Get(%q) succeeded", d)
		}
	}
}

// The whole path: a Cache with the real Fetch against a TLS policy host.
func TestCacheWithPolicyHost(t *testing.T) {
	pki := newPKI(t)
	client := policyServer(t, pki, pki.leaf(t, "mta-sts.example.com"), servePolicy(200, "text/plain", goodPolicy))
	path := filepath.Join(t.TempDir(), "mta-sts.json")
	c, err := New(Options{LookupTXT: (&fakeNet{txt: txt("20240101")}).lookup, Client: client, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Get(context.Background(), "example.com")
	if err != nil || r.Mode() != ModeEnforce || r.FromCache || !r.Policy.MatchMX("mx1.example.com") || r.Policy.MatchMX("mx.evil.example") {
		t.Fatalf("Get = %v, %v", r, err)
	}
	if r, _ := c.Get(context.Background(), "example.com"); !r.FromCache {
		t.Fatalf("second Get = %v", r)
	}
	t.Log(r)
}
