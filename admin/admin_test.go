package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeCache struct{ hits, misses uint64 }

func (c *fakeCache) Stats() (uint64, uint64) { return c.hits, c.misses }

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// wantLines checks that each line appears in the exposition as is.
func wantLines(t *testing.T, body string, lines ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		have[l] = true
	}
	for _, l := range lines {
		if !have[l] {
			t.Errorf("missing %q", l)
		}
	}
}

func TestMetricsFromHooks(t *testing.T) {
	m := NewMetrics()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return now }

	// relay.Observer
	m.Connection(true)
	m.Connection(true)
	m.Connection(false)
	m.Disconnect()
	for _, c := range []int{250, 250, 250, 550, 554, 451} {
		m.Rcpt(c)
	}
	m.Message(true)
	m.Message(false)
	// routing.Observed around the directory
	m.ObserveLDAP(3*time.Millisecond, nil)
	m.ObserveLDAP(2*time.Second, errors.New("ldap down"))
	// the cache, replaced once by a reload
	old := &fakeCache{hits: 10, misses: 4}
	m.SetCache(old)
	m.SetCache(&fakeCache{hits: 1, misses: 2})
	// SRS
	m.ObserveSRS("forward", "ok")
	m.ObserveSRS("forward", "ok")
	m.ObserveSRS("reverse", "bad_hash")
	// queue
	m.SetQueue(func() (int, time.Time) { return 7, now.Add(-90 * time.Second) })
	m.ObserveQueue("delivery", "sent")
	m.ObserveQueue("delivery", "deferred")
	m.ObserveQueue("delivery", "deferred")
	m.ObserveQueue("delivery", "bounced")
	m.ObserveQueue("dsn", "failure")

	body := scrape(t, m.Handler())
	wantLines(t, body,
		`mailfwd_connections_total{result="accepted"} 2`,
		`mailfwd_connections_total{result="rejected"} 1`,
		`mailfwd_connections_open 1`,
		`mailfwd_rcpt_replies_total{code="250"} 3`,
		`mailfwd_rcpt_replies_total{code="550"} 1`,
		`mailfwd_rcpt_replies_total{code="554"} 1`,
		`mailfwd_rcpt_replies_total{code="451"} 1`,
		`mailfwd_messages_total{result="queued"} 1`,
		`mailfwd_messages_total{result="rejected"} 1`,
		`mailfwd_ldap_lookup_seconds_count 2`,
		`mailfwd_ldap_lookup_seconds_bucket{le="0.005"} 1`,
		`mailfwd_ldap_lookup_seconds_bucket{le="2.5"} 2`,
		`mailfwd_ldap_errors_total 1`,
		`mailfwd_directory_cache_hits_total 11`,
		`mailfwd_directory_cache_misses_total 6`,
		`mailfwd_srs_total{op="forward",result="ok"} 2`,
		`mailfwd_srs_total{op="reverse",result="bad_hash"} 1`,
		`mailfwd_queue_messages 7`,
		`mailfwd_queue_oldest_message_age_seconds 90`,
		`mailfwd_deliveries_total{result="sent"} 1`,
		`mailfwd_deliveries_total{result="deferred"} 2`,
		`mailfwd_deliveries_total{result="bounced"} 1`,
		`mailfwd_deliveries_total{result="expired"} 0`,
		`mailfwd_dsns_total{kind="failure"} 1`,
		`mailfwd_dsns_total{kind="delay"} 0`,
	)
	if !strings.Contains(body, "\ngo_goroutines ") {
		t.Error("no Go runtime metrics")
	}
	// The counters of a replaced cache only grow.
	old.hits = 1000
	if v := testutil.ToFloat64(m.CacheHits); v != 11 {
		t.Errorf("cache hits %v after the old cache changed, want 11", v)
	}
	if problems, err := testutil.GatherAndLint(m.Registry()); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// Before the queue and cache are attached the gauges read 0, and an empty
// queue has no age.
func TestMetricsUnattached(t *testing.T) {
	m := NewMetrics()
	wantLines(t, scrape(t, m.Handler()),
		`mailfwd_queue_messages 0`, `mailfwd_queue_oldest_message_age_seconds 0`,
		`mailfwd_directory_cache_hits_total 0`, `mailfwd_connections_total{result="rejected"} 0`)
	m.SetQueue(func() (int, time.Time) { return 0, time.Time{} })
	wantLines(t, scrape(t, m.Handler()), `mailfwd_queue_oldest_message_age_seconds 0`)
}

func TestHealthz(t *testing.T) {
	var failing error
	h := NewHandler(NewMetrics(), func() error { return failing }, false)
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != 200 || body != "ok\n" {
		t.Fatalf("healthy: %d %q", code, body)
	}
	failing = errors.New("spool /var/spool/mailfwd/msg is not writable: no space left on device")
	if code, body := get(); code != 503 || !strings.Contains(body, "no space left") {
		t.Fatalf("unhealthy: %d %q", code, body)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 404 {
		t.Fatalf("/: %d", rec.Code)
	}
}

// Serve answers on its own listener and stops with its context.
func TestServe(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	m.Rcpt(250)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, l, m, func() error { return nil }, false, nil) }()
	base := "http://" + l.Addr().String()
	for _, p := range []struct{ path, want string }{
		{"/healthz", "ok"},
		{"/metrics", `mailfwd_rcpt_replies_total{code="250"} 1`},
	} {
		resp, err := http.Get(base + p.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), p.want) {
			t.Fatalf("%s: %d %s", p.path, resp.StatusCode, b)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not stop with its context")
	}
}

// /debug/pprof/ only when asked for: the profiles show internals.
func TestProfiling(t *testing.T) {
	for _, on := range []bool{false, true} {
		h := NewHandler(NewMetrics(), nil, on)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
			if want := map[bool]int{false: 404, true: 200}[on]; rec.Code != want {
				t.Errorf("profiling %v: %s: %d, want %d", on, path, rec.Code, want)
			}
		}
	}
}
