package queue

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// events counts what a Scheduler's Observe hears.
type events struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *events) observe(event, result string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[event+":"+result]++
}

func (e *events) get() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.n {
		out[k] = v
	}
	return out
}

func sameCounts(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Each recipient's outcome of each attempt is observed, and the DSN for
// the bounced one (which is then delivered itself).
func TestSchedulerObservesDeliveries(t *testing.T) {
	s := openTestSpool(t)
	hop := newScriptHop(map[string][]int{"a@x.test": {250}, "b@x.test": {451, 250}, "c@x.test": {550}})
	var ev events
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 2, Hostname: "relay.test", Observe: ev.observe,
		Retry: Retry{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	q.Submit(commit(t, s, "msg\r\n", "a@x.test", "b@x.test", "c@x.test"))
	waitFor(t, "spool to empty", spoolEmpty(s))
	// The bounce to alice@example.org is delivered (sent) by the same hop.
	want := map[string]int{"delivery:sent": 3, "delivery:deferred": 1, "delivery:bounced": 1, "dsn:failure": 1}
	waitFor(t, "observed outcomes", func() bool { return sameCounts(ev.get(), want) })
}

// A message that outlives its lifetime is observed as expired, after a
// delay notice.
func TestSchedulerObservesExpiry(t *testing.T) {
	var ev events
	c := startClockScheduler(t, func(_ time.Time, r string) int {
		if r == "a@x.test" {
			return 250
		}
		return 451
	}, func(q *Scheduler) {
		q.DelayWarning, q.Lifetime, q.Observe = time.Hour, 3*time.Hour, ev.observe
	})
	c.commitAt(t, &envelope.Envelope{From: "a@x.test", Recipients: []envelope.Recipient{{Addr: "b@company.test", Status: envelope.Pending}}}, "x\r\n")
	c.run(t, time.Minute, 4*time.Hour, spoolEmpty(c.s))
	got := ev.get()
	if got["delivery:expired"] != 1 || got["dsn:delay"] != 1 || got["dsn:failure"] != 1 ||
		got["delivery:sent"] != 2 || got["delivery:deferred"] < 3 || got["delivery:bounced"] != 0 {
		t.Fatalf("observed %v", got)
	}
}

// blockHop holds every Send until release is closed.
type blockHop struct {
	started chan string
	release chan struct{}
}

func (h *blockHop) String() string { return "block" }
func (h *blockHop) Send(_ context.Context, env *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.started <- env.ID
	<-h.release
	out := make([]nexthop.Reply, len(rcpts))
	for i := range out {
		out[i] = nexthop.Reply{Code: 250}
	}
	return out, nil
}

// Stats counts messages waiting and being delivered, with the oldest
// arrival; Health follows Run.
func TestSchedulerStatsAndHealth(t *testing.T) {
	s := openTestSpool(t)
	hop := &blockHop{started: make(chan string, 10), release: make(chan struct{})}
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 1, Hostname: "relay.test"})
	if n, oldest := q.Stats(); n != 0 || !oldest.IsZero() {
		t.Fatalf("empty scheduler: %d, %v", n, oldest)
	}
	if err := q.Health(); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("health before Run: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	waitFor(t, "Run to start", func() bool { return q.Health() == nil })

	first := commit(t, s, "1\r\n", "a@x.test")
	first.Received = first.Received.Add(-time.Hour) // an old message
	second := commit(t, s, "2\r\n", "b@x.test")
	q.Submit(first)
	q.Submit(second)
	<-hop.started // one in flight (one worker), the other waiting
	if n, oldest := q.Stats(); n != 2 || !oldest.Equal(first.Received) {
		t.Fatalf("Stats = %d, %v; want 2, %v", n, oldest, first.Received)
	}
	close(hop.release)
	waitFor(t, "spool to empty", spoolEmpty(s))
	waitFor(t, "queue to empty", func() bool { n, _ := q.Stats(); return n == 0 })
	if _, oldest := q.Stats(); !oldest.IsZero() {
		t.Fatalf("oldest of an empty queue: %v", oldest)
	}

	cancel()
	<-done
	if err := q.Health(); err == nil {
		t.Fatal("health after Run returned: ok")
	}
}

func TestSpoolCheckWritable(t *testing.T) {
	s := openTestSpool(t)
	if err := s.CheckWritable(); err != nil {
		t.Fatal(err)
	}
	if files := spoolFiles(t, s); len(files) != 0 {
		t.Fatalf("check left files behind: %v", files)
	}
	if os.Geteuid() == 0 {
		// root writes through permissions: make the spool a dangling path instead.
		os.RemoveAll(s.Dir())
		os.WriteFile(s.Dir(), nil, 0o600) // a file where the directory was
	} else {
		os.Chmod(s.Dir(), 0o500)
		defer os.Chmod(s.Dir(), 0o700)
	}
	if err := s.CheckWritable(); err == nil || !strings.Contains(err.Error(), filepath.Base(s.Dir())) {
		t.Fatalf("unwritable spool: %v", err)
	}
}
