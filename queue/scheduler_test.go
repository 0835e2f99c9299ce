package queue

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// scriptHop answers each Send from a per-recipient script: the n-th attempt
// for a recipient gets script[rcpt][n] (the last entry repeats).
type scriptHop struct {
	mu     sync.Mutex
	script map[string][]int // reply codes; 0 = connection failure
	tries  map[string]int
	bodies map[string]string
	sends  int
}

func (h *scriptHop) String() string { return "script" }

func (h *scriptHop) Send(_ context.Context, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]nexthop.Reply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sends++
	b, _ := io.ReadAll(body)
	out := make([]nexthop.Reply, len(rcpts))
	for i, r := range rcpts {
		codes := h.script[r]
		n := h.tries[r]
		h.tries[r]++
		code := 250
		if len(codes) > 0 {
			code = codes[min(n, len(codes)-1)]
		}
		if code == 0 {
			return nil, errors.New("connection refused")
		}
		out[i] = nexthop.Reply{Code: code, Text: "scripted"}
		if code < 300 {
			h.bodies[r] = string(b)
		}
	}
	return out, nil
}

func newScriptHop(script map[string][]int) *scriptHop {
	return &scriptHop{script: script, tries: map[string]int{}, bodies: map[string]string{}}
}

func (h *scriptHop) delivered(r string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b, ok := h.bodies[r]
	return b, ok
}

func (h *scriptHop) triesOf(r string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tries[r]
}

func runScheduler(t *testing.T, s *Spool, hop nexthop.Hop) (*Scheduler, func()) {
	t.Helper()
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 2, Hostname: "relay.test", Retry: Retry{Min: 20 * time.Millisecond, Max: 50 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	return q, func() { cancel(); <-done }
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func spoolEmpty(s *Spool) func() bool {
	return func() bool { envs, _ := s.List(); return len(envs) == 0 }
}

func TestSchedulerOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		script    map[string][]int
		rcpts     []string
		delivered []string
		failed    []string
		minTries  map[string]int
	}{
		{"all accepted", nil, []string{"a@x.test", "b@x.test"}, []string{"a@x.test", "b@x.test"}, nil, nil},
		{"4xx then 2xx is retried", map[string][]int{"a@x.test": {451, 451, 250}}, []string{"a@x.test"},
			[]string{"a@x.test"}, nil, map[string]int{"a@x.test": 3}},
		{"connection failures then 2xx", map[string][]int{"a@x.test": {0, 0, 250}}, []string{"a@x.test"},
			[]string{"a@x.test"}, nil, map[string]int{"a@x.test": 3}},
		{"5xx is final and never retried", map[string][]int{"a@x.test": {550}}, []string{"a@x.test", "b@x.test"},
			[]string{"b@x.test"}, []string{"a@x.test"}, map[string]int{"a@x.test": 1}},
		{"partial: only the deferred recipient is retried",
			map[string][]int{"a@x.test": {250}, "b@x.test": {450, 250}}, []string{"a@x.test", "b@x.test"},
			[]string{"a@x.test", "b@x.test"}, nil, map[string]int{"a@x.test": 1, "b@x.test": 2}},
	}
	for _, tt := range tests {
		// In a synctest bubble the retry timers run on the bubble's clock:
		// the waits below take no real time, and "no retry after the
		// outcome" is checked after every timer that could fire has.
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := openTestSpool(t)
				hop := newScriptHop(tt.script)
				q, stop := runScheduler(t, s, hop)
				defer stop()
				env := commit(t, s, "msg\r\n", tt.rcpts...)
				q.Submit(env)
				waitFor(t, "spool to empty", spoolEmpty(s))
				for _, r := range tt.delivered {
					if b, ok := hop.delivered(r); !ok || b != "msg\r\n" {
						t.Errorf("%s: delivered=%v body=%q", r, ok, b)
					}
				}
				for _, r := range tt.failed {
					if _, ok := hop.delivered(r); ok {
						t.Errorf("%s delivered despite 5xx", r)
					}
				}
				time.Sleep(time.Hour) // a wrong retry would happen within Retry.Max
				synctest.Wait()
				for r, n := range tt.minTries {
					if got := hop.triesOf(r); got != n {
						t.Errorf("%s tried %d times, want %d", r, got, n)
					}
				}
			})
		})
	}
}

// A message left in the spool by a stopped scheduler is delivered by the
// next one (restart), and its recorded state is honoured: recipients that
// were sent are not sent again.
func TestSchedulerRestartDeliversSpool(t *testing.T) {
	s := openTestSpool(t)
	down := newScriptHop(map[string][]int{"a@x.test": {0}, "b@x.test": {0}})
	q, stop := runScheduler(t, s, down)
	env := commit(t, s, "msg\r\n", "a@x.test", "b@x.test")
	q.Submit(env)
	waitFor(t, "a failed attempt", func() bool { return down.triesOf("a@x.test") >= 1 })
	stop()
	// Pretend b was delivered before the crash.
	got, err := s.Load(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts < 1 || got.Recipients[0].Status != envelope.Pending {
		t.Fatalf("after failed attempt the envelope is %+v", got)
	}
	got.Recipients[1].Status = envelope.Sent
	got.NextAttempt = time.Now()
	if err := s.Update(got); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSpoolAt(t, filepath.Dir(s.Dir())) // restart: a new process opens the spool
	up := newScriptHop(nil)
	_, stop2 := runScheduler(t, s, up)
	defer stop2()
	waitFor(t, "delivery after restart", spoolEmpty(s))
	if _, ok := up.delivered("a@x.test"); !ok {
		t.Fatal("a not delivered after restart")
	}
	if up.triesOf("b@x.test") != 0 {
		t.Fatal("b sent again although recorded as sent")
	}
}

// The next attempt time is written before an attempt, so a crash during a
// retry cannot make the restarted relay retry at once.
func TestSchedulerPersistsNextAttemptBeforeRetry(t *testing.T) {
	s := openTestSpool(t)
	block := make(chan struct{})
	hop := &blockingHop{block: block, started: make(chan *envelope.Envelope, 4)}
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 1, Retry: Retry{Min: time.Hour, Max: time.Hour}})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { q.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	env := commit(t, s, "m\r\n", "a@x.test")
	env.Attempts = 1 // as if a first attempt had failed
	q.Submit(env)
	<-hop.started
	got, err := s.Load(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts != 2 || time.Until(got.NextAttempt) < 30*time.Minute {
		t.Fatalf("during the attempt the spool says attempts=%d next=%v", got.Attempts, got.NextAttempt)
	}
	close(block)
}

type blockingHop struct {
	block   chan struct{}
	started chan *envelope.Envelope
}

func (h *blockingHop) String() string { return "blocking" }
func (h *blockingHop) Send(ctx context.Context, env *envelope.Envelope, from string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.started <- env
	select {
	case <-h.block:
	case <-ctx.Done():
	}
	return nil, errors.New("blocked")
}

// Backoff doubles from Min to Max, each message with its own jitter, and
// never shrinks from one attempt to the next (monotone).
func TestRetryDelay(t *testing.T) {
	for _, r := range []Retry{{Min: time.Second, Max: 8 * time.Second}, {Min: 5 * time.Minute, Max: 4 * time.Hour}} {
		for _, id := range []string{"A", "B", "6610C3F7D41BE4116BD"} {
			prev := time.Duration(0)
			for n := 1; n <= 40; n++ {
				base := r.Min << min(n-1, 30)
				if base > r.Max || base <= 0 {
					base = r.Max
				}
				d := r.Delay(n, id)
				if d < base*8/10 || d > base {
					t.Fatalf("%v Delay(%d, %s) = %v, want within 80..100%% of %v", r, n, id, d, base)
				}
				if d < prev {
					t.Fatalf("%v Delay(%d, %s) = %v < previous %v: not monotone", r, n, id, d, prev)
				}
				prev = d
			}
		}
	}
	if Retry.Delay(Retry{Min: time.Minute, Max: time.Hour}, 3, "A") == Retry.Delay(Retry{Min: time.Minute, Max: time.Hour}, 3, "B") {
		t.Error("two messages got the same jitter")
	}
}

// A 5xx recipient is bounced to the sender with an RFC 3464 report; the
// bounce itself goes out from the null sender.
func TestSchedulerBouncesPermanentFailures(t *testing.T) {
	s := openTestSpool(t)
	hop := newScriptHop(map[string][]int{"bad@x.test": {550}})
	q, stop := runScheduler(t, s, hop)
	defer stop()
	env := commit(t, s, "Subject: hello\r\nMessage-ID: <m1@y.test>\r\n\r\nsecret body\r\n", "bad@x.test", "good@x.test")
	q.Submit(env)
	waitFor(t, "bounce delivered", func() bool { _, ok := hop.delivered("alice@example.org"); return ok })
	waitFor(t, "spool to empty", spoolEmpty(s))
	dsn, _ := hop.delivered("alice@example.org")
	for _, want := range []string{
		"Content-Type: multipart/report; report-type=delivery-status",
		"Final-Recipient: rfc822; bad@x.test", "Action: failed", "Status: 5.0.0",
		"Diagnostic-Code: smtp; 550 scripted", "Message-ID: <m1@y.test>",
	} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "secret body") || strings.Contains(dsn, "good@x.test") {
		t.Errorf("DSN carries the body or a delivered recipient:\n%s", dsn)
	}
}

// No bounce for a message from the null sender.
func TestSchedulerNoBounceOfBounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTestSpool(t)
		hop := newScriptHop(map[string][]int{"bad@x.test": {550}})
		q, stop := runScheduler(t, s, hop)
		defer stop()
		w, _ := s.Create()
		io.WriteString(w, "x\r\n")
		env := &envelope.Envelope{From: "", Recipients: []envelope.Recipient{{Addr: "bad@x.test", Status: envelope.Pending}}}
		if err := w.Commit(env); err != nil {
			t.Fatal(err)
		}
		q.Submit(env)
		waitFor(t, "spool to empty", spoolEmpty(s))
		time.Sleep(time.Hour) // a bounce would be sent by now
		synctest.Wait()
		hop.mu.Lock()
		sends := hop.sends
		hop.mu.Unlock()
		if sends != 1 {
			t.Fatalf("%d transactions, want 1 (no bounce of a bounce)", sends)
		}
	})
}

// recordingHop records each transaction's sender and recipients.
type recordingHop struct {
	name string
	mu   sync.Mutex
	txns []string // "from>rcpt1,rcpt2"
}

func (h *recordingHop) String() string { return h.name }
func (h *recordingHop) Send(_ context.Context, _ *envelope.Envelope, from string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.txns = append(h.txns, from+">"+strings.Join(rcpts, ","))
	return repeatReply(len(rcpts), nexthop.Reply{Code: 250}), nil
}

func (h *recordingHop) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.txns...)
}

// A message with local and external recipients leaves as one transaction
// per next hop and sender: external forwards with their SRS sender.
func TestSchedulerSplitsBySenderAndHop(t *testing.T) {
	s := openTestSpool(t)
	local, ext := &recordingHop{name: "local"}, &recordingHop{name: "external"}
	q := limited(&Scheduler{Spool: s, Hop: local, ExternalHop: ext, Workers: 1, Retry: Retry{Min: time.Second, Max: time.Second}})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { q.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	w, _ := s.Create()
	io.WriteString(w, "m\r\n")
	srs := "SRS0=abcd=KH=example.org=alice@srs.test"
	env := &envelope.Envelope{From: "alice@example.org", Recipients: []envelope.Recipient{
		{Addr: "central@company.com", Status: envelope.Pending},
		{Addr: "x@gmail.com", Status: envelope.Pending, Forward: true, MailFrom: srs},
		{Addr: "new@domain.ro", Status: envelope.Pending},
		{Addr: "y@gmail.com", Status: envelope.Pending, Forward: true, MailFrom: srs},
	}}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	q.Submit(env)
	waitFor(t, "spool to empty", spoolEmpty(s))
	if got := local.got(); len(got) != 1 || got[0] != "alice@example.org>central@company.com,new@domain.ro" {
		t.Errorf("local hop got %q", got)
	}
	if got := ext.got(); len(got) != 1 || got[0] != srs+">x@gmail.com,y@gmail.com" {
		t.Errorf("external hop got %q", got)
	}
}

// gateHop holds every Send until released and records the peak of
// concurrent transactions.
type gateHop struct {
	mu        sync.Mutex
	cur, peak int
	release   chan struct{}
}

func (h *gateHop) String() string { return "gate" }
func (h *gateHop) Send(ctx context.Context, _ *envelope.Envelope, _ string, rcpts []string, _ io.Reader) ([]nexthop.Reply, error) {
	h.mu.Lock()
	h.cur++
	h.peak = max(h.peak, h.cur)
	h.mu.Unlock()
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	h.mu.Lock()
	h.cur--
	h.mu.Unlock()
	return repeatReply(len(rcpts), nexthop.Reply{Code: 250}), nil
}

// No more transactions run at once towards one destination than the
// limit, however many workers are free.
func TestDestinationConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTestSpool(t)
		hop := &gateHop{release: make(chan struct{})}
		q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 8, DestinationConcurrency: 2, Retry: Retry{Min: time.Hour, Max: time.Hour}})
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() { q.Run(ctx); close(stopped) }()
		defer func() { cancel(); <-stopped }()
		for range 6 {
			q.Submit(commit(t, s, "m\r\n", "a@x.test"))
		}
		synctest.Wait() // every worker that could start a transaction has
		hop.mu.Lock()
		peak := hop.peak
		hop.mu.Unlock()
		close(hop.release)
		waitFor(t, "spool to empty", spoolEmpty(s))
		if peak != 2 {
			t.Fatalf("peak of %d concurrent transactions to one destination, want 2", peak)
		}
	})
}

// repeatReply is one reply for each of n recipients.
func repeatReply(n int, r nexthop.Reply) []nexthop.Reply {
	out := make([]nexthop.Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// A message recovered from the spool with its next attempt an hour away
// is tried at once when flushed: the due time its file gives it must not
// undo the flush (it did, when the flush came before the first look at
// the file).
func TestFlushRecoveredMessage(t *testing.T) {
	s := openTestSpool(t)
	env := commit(t, s, "m\r\n", "a@x.test")
	env.Attempts = 1
	env.NextAttempt = time.Now().Add(time.Hour)
	env.Recipients[0].NextAttempt = env.NextAttempt
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openSpoolAt(t, filepath.Dir(s.Dir()))
	hop := newScriptHop(nil)
	q, stop := runScheduler(t, s, hop)
	defer stop()
	if err := q.Flush(""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "delivery after flush", spoolEmpty(s))
}
