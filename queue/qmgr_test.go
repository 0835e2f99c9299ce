package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// The queue manager's behaviour on a bad day: a slow MX, a dead next hop,
// a receiver that asks us to slow down, a big backlog.

// domainRouter routes by recipient domain, each to its hop; a domain
// marked external goes to the Internet's class.
type domainRouter map[string]struct {
	hop      nexthop.Hop
	external bool
}

func (r domainRouter) Route(rc *envelope.Recipient) nexthop.Destination {
	d := rc.Addr[strings.LastIndexByte(rc.Addr, '@')+1:]
	h := r[d]
	return nexthop.Destination{Key: "test:" + d, Hop: h.hop, Internet: h.external}
}

// slowHop holds each transaction until released (a tarpitting MX).
type slowHop struct {
	release chan struct{}
	cur, n  atomic.Int64
}

func (h *slowHop) String() string { return "slow" }
func (h *slowHop) Send(ctx context.Context, _ *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.cur.Add(1)
	h.n.Add(1)
	defer h.cur.Add(-1)
	select {
	case <-h.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return repeatReply(len(rcpts), nexthop.Reply{Code: 250}), nil
}

// timedHop answers 250 at once and records when each recipient arrived.
type timedHop struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (h *timedHop) String() string { return "timed" }
func (h *timedHop) Send(_ context.Context, _ *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.at == nil {
		h.at = map[string]time.Time{}
	}
	for _, r := range rcpts {
		h.at[r] = time.Now()
	}
	return repeatReply(len(rcpts), nexthop.Reply{Code: 250}), nil
}

func (h *timedHop) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.at)
}

func runQ(t *testing.T, q *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { q.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
}

func commitTo(t *testing.T, s *Spool, q *Scheduler, rcpt string, external bool) *envelope.Envelope {
	t.Helper()
	env := commitEnv(t, s, &envelope.Envelope{From: "alice@example.org", Received: time.Now(),
		Recipients: []envelope.Recipient{{Addr: rcpt, OrigTo: rcpt, Status: envelope.Pending, Forward: external}}})
	q.Submit(env)
	return env
}

func commitEnv(t *testing.T, s *Spool, env *envelope.Envelope) *envelope.Envelope {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "Subject: t\r\n\r\nx\r\n")
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	return env
}

// Forty forwards stuck on a tarpitting MX, then ten messages for our own
// users and ten for a healthy outside domain: those go at once. (Before,
// every worker sat on the slow MX and the local mail waited for it.)
func TestNoHeadOfLineBlocking(t *testing.T) {
	s := openTestSpool(t)
	slow := &slowHop{release: make(chan struct{})}
	defer close(slow.release)
	local, fast := &timedHop{}, &timedHop{}
	q := limited(&Scheduler{Spool: s, Workers: 4, ExternalWorkers: 8, DestinationConcurrency: 20, InitialConcurrency: 20,
		Router: domainRouter{"tarpit.test": {slow, true}, "company.com": {local, false}, "fast.test": {fast, true}},
		Retry:  Retry{Min: time.Hour, Max: time.Hour}, ExternalRetry: Retry{Min: time.Hour, Max: time.Hour}})
	runQ(t, q)
	for i := range 40 {
		commitTo(t, s, q, fmt.Sprintf("u%d@tarpit.test", i), true)
	}
	waitFor(t, "the tarpit to hold transactions", func() bool { return slow.cur.Load() >= 7 })
	start := time.Now()
	for i := range 10 {
		commitTo(t, s, q, fmt.Sprintf("user%d@company.com", i), false)
		commitTo(t, s, q, fmt.Sprintf("f%d@fast.test", i), true)
	}
	waitFor(t, "local and healthy external mail", func() bool { return local.count() == 10 && fast.count() == 10 })
	took := time.Since(start)
	if took > 2*time.Second {
		t.Errorf("local and healthy mail took %v behind the tarpit", took)
	}
	if n := slow.cur.Load(); n > 7 {
		t.Errorf("%d transactions on the tarpit: it held more external workers than all but one", n)
	}
	t.Logf("20 messages delivered in %v while %d transactions sat on the tarpit", took.Round(time.Millisecond), slow.cur.Load())
}

// downHop refuses every connection until up; it counts the attempts.
type downHop struct {
	up       atomic.Bool
	attempts atomic.Int64
	sent     atomic.Int64
	delay    time.Duration // each attempt's time to fail
}

func (h *downHop) String() string { return "down" }
func (h *downHop) Send(_ context.Context, _ *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.attempts.Add(1)
	time.Sleep(h.delay)
	if !h.up.Load() {
		return nil, errors.New("dial tcp 127.0.0.1:10025: connect: connection refused")
	}
	h.sent.Add(int64(len(rcpts)))
	return repeatReply(len(rcpts), nexthop.Reply{Code: 250}), nil
}

// countingHandler counts log records, and those naming a queue ID.
type countingHandler struct {
	n, perMessage atomic.Int64
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.n.Add(1)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "queue_id" {
			h.perMessage.Add(1)
		}
		return true
	})
	return nil
}
func (h *countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	for _, a := range as {
		if a.Key == "queue_id" {
			return &withQueueID{h}
		}
	}
	return h
}
func (h *countingHandler) WithGroup(string) slog.Handler { return h }

type withQueueID struct{ *countingHandler }

func (h *withQueueID) Handle(ctx context.Context, r slog.Record) error {
	h.perMessage.Add(1)
	h.n.Add(1)
	return nil
}

// A dead next hop: after a few failed connections nothing more is tried
// until the dead time is over, then one probe per dead time (doubling),
// with no log line per message; when a probe succeeds, the parked mail
// goes at once.
func TestDeadDestinationParksMail(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	hop := &downHop{}
	logs := &countingHandler{}
	s := openTestSpool(t)
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 4, Clock: clock, Log: slog.New(logs),
		Retry: Retry{Min: time.Minute, Max: 4 * time.Minute}})
	c := &clockRun{q: q, s: s, clock: clock}
	runQ(t, q)
	const n = 50
	for range n {
		c.commitAt(t, &envelope.Envelope{From: "a@example.org",
			Recipients: []envelope.Recipient{{Addr: "u@company.com", Status: envelope.Pending}}}, "x\r\n")
	}
	settle := func() {
		deadline := time.Now().Add(2 * time.Second)
		for !q.idle() && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	settle()
	first := hop.attempts.Load()
	if first < int64(q.DeadAfter) || first > int64(q.InitialConcurrency+q.DeadAfter) {
		t.Fatalf("%d connection attempts before the destination was dead, want %d..%d", first, q.DeadAfter, q.InitialConcurrency+q.DeadAfter)
	}
	linesAtDeath := logs.perMessage.Load()
	// dead for 1 min, then 2, then 4: one probe each
	probesAt := []time.Duration{time.Minute, 3 * time.Minute, 7 * time.Minute}
	elapsed := time.Duration(0)
	for i, at := range probesAt {
		for elapsed+10*time.Second < at {
			clock.Advance(10 * time.Second)
			elapsed += 10 * time.Second
			q.Kick()
			settle()
		}
		if got := hop.attempts.Load(); got != first+int64(i) {
			t.Fatalf("at %v: %d attempts, want %d (no connection while dead)", elapsed, got, first+int64(i))
		}
		clock.Advance(at - elapsed + time.Second)
		elapsed = at + time.Second
		q.Kick()
		settle()
		if got := hop.attempts.Load(); got != first+int64(i)+1 {
			t.Fatalf("after %v: %d attempts, want %d (one probe)", elapsed, got, first+int64(i)+1)
		}
	}
	if lines := logs.perMessage.Load() - linesAtDeath; lines > 10 {
		t.Errorf("%d log lines about messages while dead (%d messages, %d probes): not one per message per retry", lines, n, len(probesAt))
	}
	if envs, _ := s.List(); len(envs) != n {
		t.Fatalf("%d messages in the spool, want %d", len(envs), n)
	}
	// The next hop is back: the next probe succeeds and the rest follows.
	hop.up.Store(true)
	c.run(t, 10*time.Second, 20*time.Minute, func() bool { return hop.sent.Load() == n })
	waitFor(t, "spool to empty", spoolEmpty(s))
	if extra := hop.attempts.Load() - first - int64(len(probesAt)) - n; extra > 0 {
		t.Errorf("%d attempts more than one per message after the destination came back", extra)
	}
}

// throttleHop answers 421 4.7.0 to every second transaction and 250 to
// the others, and records the peak of concurrent transactions.
type throttleHop struct {
	throttle           bool
	mu                 sync.Mutex
	n, cur, peak, sent int
}

func (h *throttleHop) String() string { return "throttle" }
func (h *throttleHop) Send(_ context.Context, _ *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.mu.Lock()
	h.n++
	slow := h.throttle && h.n%2 == 0
	h.cur++
	h.peak = max(h.peak, h.cur)
	h.mu.Unlock()
	time.Sleep(10 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cur--
	if slow {
		return repeatReply(len(rcpts), nexthop.Reply{Code: 421, Enhanced: "4.7.0", Text: "Try again later, closing connection (rate limited)"}), nil
	}
	h.sent += len(rcpts)
	return repeatReply(len(rcpts), nexthop.Reply{Code: 250}), nil
}

// A receiver answering 421 4.7.0 to every second transaction gets less
// concurrency than one that does not, and all of its mail arrives, with
// no bounce.
func TestSlowDownReplies(t *testing.T) {
	peak := map[bool]int{}
	for _, throttle := range []bool{false, true} {
		s := openTestSpool(t)
		hop := &throttleHop{throttle: throttle}
		q := limited(&Scheduler{Spool: s, ExternalHop: hop, Hop: hop, ExternalWorkers: 30, DestinationConcurrency: 20,
			SlowDownPause: 5 * time.Millisecond, Hostname: "relay.test",
			Retry: Retry{Min: time.Hour, Max: time.Hour}, ExternalRetry: Retry{Min: time.Hour, Max: time.Hour}})
		// All queued before the scheduler starts: the backlog, not the
		// arrival rate, is what bounds concurrency (slow start from 5
		// needs ~180 successes to reach 20).
		const n = 300
		for i := range n {
			commitTo(t, s, q, fmt.Sprintf("u%d@gmail.example", i), true)
		}
		runQ(t, q)
		t0 := time.Now()
		for hop.mu.Lock(); hop.sent < n && time.Since(t0) < 60*time.Second; hop.mu.Lock() {
			hop.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
		if hop.sent < n {
			t.Fatalf("%d of %d delivered in a minute", hop.sent, n)
		}
		hop.mu.Unlock()
		waitFor(t, "spool to empty", spoolEmpty(s)) // no DSN either: it would be queued here
		peak[throttle] = hop.peak
		t.Logf("throttling=%v: %d transactions for %d messages in %v, peak concurrency %d", throttle, hop.n, n, time.Since(t0).Round(time.Millisecond), hop.peak)
	}
	if peak[true]*2 > peak[false] {
		t.Errorf("peak concurrency %d with 421s, %d without: the slow-down replies did not reduce it", peak[true], peak[false])
	}
}

// A message with a local and an external recipient, both deferred: the
// local one is retried after the local backoff, not the Internet's.
func TestRetryPerRecipientClass(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	local := &clockHop{clock: clock, code: func(now time.Time, _ string) int {
		if now.Before(time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC)) {
			return 451
		}
		return 250
	}}
	ext := &clockHop{name: "external", clock: clock, code: func(time.Time, string) int { return 451 }}
	s := openTestSpool(t)
	q := limited(&Scheduler{Spool: s, Hop: local, ExternalHop: ext, Clock: clock,
		Retry: Retry{Min: 10 * time.Second, Max: time.Minute}, ExternalRetry: Retry{Min: 10 * time.Minute, Max: time.Hour}})
	c := &clockRun{q: q, s: s, clock: clock}
	runQ(t, q)
	c.commitAt(t, &envelope.Envelope{From: "a@example.org", Recipients: []envelope.Recipient{
		{Addr: "u@company.com", Status: envelope.Pending},
		{Addr: "x@gmail.example", Status: envelope.Pending, Forward: true},
	}}, "x\r\n")
	c.run(t, time.Second, time.Minute, func() bool { return len(local.transactions()) == 2 })
	tx := local.transactions()
	if d := tx[1].at.Sub(tx[0].at); d > 15*time.Second {
		t.Errorf("the local recipient was retried after %v: the Internet's backoff", d)
	}
	if n := len(ext.transactions()); n != 1 {
		t.Errorf("%d external attempts within a minute, want 1 (its backoff is 10 min)", n)
	}
	c.run(t, 10*time.Second, 15*time.Minute, func() bool { return len(ext.transactions()) == 2 })
	if d := ext.transactions()[1].at.Sub(ext.transactions()[0].at); d < 8*time.Minute {
		t.Errorf("the external recipient was retried after %v", d)
	}
}

// However large the backlog, at most ActiveLimit envelopes per class are
// in memory; and the scheduler's memory returns to where it was once a
// backlog has drained.
func TestActiveLimitAndMemoryAfterDrain(t *testing.T) {
	s := openTestSpool(t)
	gate := &gateHop{release: make(chan struct{})}
	q := limited(&Scheduler{Spool: s, Hop: gate, Workers: 9, DestinationConcurrency: 8, InitialConcurrency: 8, ActiveLimit: 50,
		Retry: Retry{Min: time.Hour, Max: time.Hour}, Log: slog.New(slog.DiscardHandler)})
	heapInUse := func() uint64 { // live heap objects, after a full collection
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	q.init()
	base := heapInUse()
	const n = 20000
	var wg sync.WaitGroup
	ch := make(chan int)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range ch {
				env := commitEnv(t, s, &envelope.Envelope{From: "a@example.org", Received: time.Now(),
					Recipients: []envelope.Recipient{{Addr: "u@company.com", Status: envelope.Pending}}})
				q.Submit(env)
			}
		}()
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	runQ(t, q)
	waitFor(t, "transactions to start", func() bool { gate.mu.Lock(); defer gate.mu.Unlock(); return gate.cur == 8 })
	q.mu.Lock()
	activeNow, entries := q.active[classLocal], len(q.entries)
	q.mu.Unlock()
	if activeNow > 50 {
		t.Errorf("%d messages active, limit 50", activeNow)
	}
	full := heapInUse()
	close(gate.release)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if m, _ := q.Stats(); m == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backlog did not drain")
		}
		time.Sleep(20 * time.Millisecond)
	}
	drained := heapInUse()
	t.Logf("heap in use: %d KiB idle, %d KiB with %d queued (%d active), %d KiB after the drain",
		base>>10, full>>10, entries, activeNow, drained>>10)
	if full < base+n*50 {
		t.Fatalf("the backlog took only %d bytes: the measurement cannot tell", full-base)
	}
	if drained > base+(full-base)/10 {
		t.Errorf("after the drain the heap holds %d KiB more than idle (the backlog took %d KiB)", (drained-base)>>10, (full-base)>>10)
	}
}

// A dead destination keeps being probed while mail for it goes on
// arriving and after it stops (in real time: new mail parks between the
// probes, the probe's own message is retried on its backoff). Failures of
// transactions begun before it died neither push its probe back nor lose
// it (they did: the probe's wake-up was dropped for an earlier one, and no
// probe ever came).
func TestDeadDestinationProbesWhileMailArrives(t *testing.T) {
	hop := &downHop{delay: 20 * time.Millisecond}
	s := openTestSpool(t)
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 16, ActiveLimit: 20, Retry: Retry{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}})
	runQ(t, q)
	n := 0
	for range 10 { // a burst: five transactions in flight when it dies
		commitTo(t, s, q, "u@company.com", false)
		n++
	}
	stop := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(stop) {
		commitTo(t, s, q, "u@company.com", false)
		n++
		time.Sleep(2 * time.Millisecond)
	}
	during := hop.attempts.Load()
	time.Sleep(2 * time.Second)
	idle := hop.attempts.Load() - during
	t.Logf("%d messages: %d attempts while they arrived, %d in the 2 s after (probes every 400 ms at most)", n, during, idle)
	if during > 20 {
		t.Errorf("%d attempts for %d messages: not treated as dead", during, n)
	}
	if idle < 3 || idle > 8 {
		t.Errorf("%d probes in 2 s of a dead destination with dead time up to 400 ms, want 3..8", idle)
	}
}

// A spool that cannot take an envelope write (full) still drains once the
// next hop is back: delivery is attempted without the record (a retry
// first wrote the envelope, and on ENOSPC retried nothing, ever).
func TestFullSpoolDrains(t *testing.T) {
	hop := &downHop{}
	s := openTestSpool(t)
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 4, Retry: Retry{Min: 50 * time.Millisecond, Max: 100 * time.Millisecond}})
	const n = 20
	for range n {
		commitTo(t, s, q, "u@company.com", false)
	}
	s.dataSync = func(*os.File) error { return &os.PathError{Op: "write", Path: "x", Err: syscall.ENOSPC} }
	runQ(t, q)
	waitFor(t, "first attempts", func() bool { return hop.attempts.Load() >= 3 })
	hop.up.Store(true)
	q.Flush("")
	deadline := time.Now().Add(10 * time.Second)
	for hop.sent.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d delivered from a full spool once the next hop was back", hop.sent.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, "spool to empty", spoolEmpty(s))
}

// A recovered backlog (every message of unknown class until read) stays
// within the active limit while its messages turn local: reading one
// freed a slot of the unknown class, and the whole backlog went active
// (440 MiB for 200k after a restart and a flush).
func TestRecoveredBacklogKeepsActiveLimit(t *testing.T) {
	root := t.TempDir()
	s := openSpoolAt(t, root)
	const n = 2000
	for range n {
		commitEnv(t, s, &envelope.Envelope{From: "a@example.org", Received: time.Now(),
			Recipients: []envelope.Recipient{{Addr: "u@company.com", Status: envelope.Pending}}})
	}
	s.Close()
	s = openSpoolAt(t, root)
	hop := &downHop{delay: 2 * time.Millisecond}
	hop.up.Store(true)
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 4, ActiveLimit: 100, Retry: Retry{Min: time.Hour, Max: time.Hour}})
	runQ(t, q)
	peak := 0
	deadline := time.Now().Add(30 * time.Second)
	for hop.sent.Load() < n && time.Now().Before(deadline) {
		q.mu.Lock()
		peak = max(peak, q.activeTotal())
		q.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	t.Logf("peak %d active while %d recovered messages drained (%d sent)", peak, n, hop.sent.Load())
	if peak > 100+4 {
		t.Fatalf("peak %d messages active with active_limit 100", peak)
	}
}
