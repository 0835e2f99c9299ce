package queue

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// clockHop answers by the fake time: code(now) for every recipient, and
// records each transaction.
type clockHop struct {
	name  string // default "clock"
	clock *fakeClock
	code  func(now time.Time, rcpt string) int
	mu    sync.Mutex
	txns  []clockTxn
}

type clockTxn struct {
	at    time.Time
	from  string
	rcpts []string
	body  string
}

func (h *clockHop) String() string {
	if h.name != "" {
		return h.name
	}
	return "clock"
}
func (h *clockHop) Send(_ context.Context, _ *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]nexthop.Reply, error) {
	b, _ := io.ReadAll(body)
	now := h.clock.Now()
	out := make([]nexthop.Reply, len(rcpts))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, r := range rcpts {
		c := h.code(now, r)
		out[i] = nexthop.Reply{Code: c, Enhanced: map[bool]string{true: "5.1.1", false: "4.4.2"}[c >= 500], Text: "scripted"}
		if c == 250 {
			out[i].Enhanced = "2.0.0"
		}
	}
	h.txns = append(h.txns, clockTxn{now, from, rcpts, string(b)})
	return out, nil
}

func (h *clockHop) transactions() []clockTxn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]clockTxn(nil), h.txns...)
}

// dsnsTo returns the DSN bodies delivered to addr.
func (h *clockHop) dsnsTo(addr string) []string {
	var out []string
	for _, t := range h.transactions() {
		if t.from == "" && len(t.rcpts) == 1 && t.rcpts[0] == addr {
			out = append(out, t.body)
		}
	}
	return out
}

type clockRun struct {
	q     *Scheduler
	s     *Spool
	clock *fakeClock
	hop   *clockHop
}

func startClockScheduler(t *testing.T, code func(time.Time, string) int, tune func(*Scheduler)) *clockRun {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	hop := &clockHop{clock: clock, code: code}
	s := openTestSpool(t)
	q := limited(&Scheduler{Spool: s, Hop: hop, Workers: 2, Clock: clock, Hostname: "relay.test",
		Retry: Retry{Min: 10 * time.Second, Max: 5 * time.Minute}})
	if tune != nil {
		tune(q)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { q.Run(ctx); close(stopped) }()
	t.Cleanup(func() { cancel(); <-stopped })
	return &clockRun{q: q, s: s, clock: clock, hop: hop}
}

// commitAt commits a message received at the fake now.
func (c *clockRun) commitAt(t *testing.T, env *envelope.Envelope, body string) {
	t.Helper()
	w, err := c.s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, body)
	env.Received = c.clock.Now()
	env.NextAttempt = env.Received.Add(c.q.Retry.Min)
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	c.q.Submit(env)
}

// run moves the fake clock in steps until cond holds or limit passes.
func (c *clockRun) run(t *testing.T, step, limit time.Duration, cond func() bool) {
	t.Helper()
	for passed := time.Duration(0); ; passed += step {
		deadline := time.Now().Add(2 * time.Second)
		for !cond() && time.Now().Before(deadline) {
			// let due work happen at this fake instant
			time.Sleep(2 * time.Millisecond)
			if c.q.idle() {
				break
			}
		}
		if cond() {
			return
		}
		if passed >= limit {
			t.Fatalf("condition not met after %v of fake time", limit)
		}
		c.clock.Advance(step)
		c.q.Kick()
	}
}

// A next hop that answers 4xx for an hour gets the message when it
// recovers, with growing, capped intervals between attempts.
func TestDeferredForAnHourThenDelivered(t *testing.T) {
	var start time.Time
	c := startClockScheduler(t, func(now time.Time, _ string) int {
		if now.Sub(start) < time.Hour {
			return 451
		}
		return 250
	}, func(q *Scheduler) { q.DelayWarning = -1 })
	start = c.clock.Now()
	c.commitAt(t, &envelope.Envelope{From: "a@x.test", Recipients: []envelope.Recipient{{Addr: "b@company.test", Status: envelope.Pending}}}, "m\r\n")
	c.run(t, 5*time.Second, 2*time.Hour, spoolEmpty(c.s))
	txns := c.hop.transactions()
	last := txns[len(txns)-1]
	if last.at.Sub(start) < time.Hour || last.at.Sub(start) > time.Hour+6*time.Minute {
		t.Fatalf("delivered at +%v, want soon after +1h", last.at.Sub(start))
	}
	for i := 2; i < len(txns)-1; i++ {
		prev, gap := txns[i-1].at.Sub(txns[i-2].at), txns[i].at.Sub(txns[i-1].at)
		if gap+5*time.Second < prev || gap > 5*time.Minute+5*time.Second {
			t.Fatalf("attempt %d after %v (previous gap %v): backoff not monotone or over retry_max", i, gap, prev)
		}
	}
	if len(txns) < 10 || len(txns) > 30 {
		t.Fatalf("%d attempts in an hour with 10s doubling to 5m", len(txns))
	}
	if n := len(c.hop.dsnsTo("a@x.test")); n != 0 {
		t.Fatalf("%d DSNs for a message that was delivered", n)
	}
}

// A 5xx yields exactly one DSN, even with another recipient still deferred
// for a while (it is sent at once, not when the message is done).
func TestPermanentFailureOneDSN(t *testing.T) {
	var start time.Time
	c := startClockScheduler(t, func(now time.Time, r string) int {
		switch {
		case r == "bad@company.test":
			return 550
		case r == "later@company.test" && now.Sub(start) < 10*time.Minute:
			return 451
		}
		return 250
	}, nil)
	start = c.clock.Now()
	c.commitAt(t, &envelope.Envelope{From: "a@x.test", DSNEnvID: "env-42", Recipients: []envelope.Recipient{
		{Addr: "bad@company.test", OrigTo: "alias@company.test", Status: envelope.Pending, ORcpt: "rfc822;Alias@Company.test"},
		{Addr: "later@company.test", Status: envelope.Pending}}}, "Subject: s\r\n\r\nbody text\r\n")
	c.run(t, 10*time.Second, time.Minute, func() bool { return len(c.hop.dsnsTo("a@x.test")) == 1 })
	if c.clock.Now().Sub(start) > 30*time.Second {
		t.Errorf("DSN sent at +%v, want with the first attempt", c.clock.Now().Sub(start))
	}
	c.run(t, 10*time.Second, time.Hour, spoolEmpty(c.s))
	dsns := c.hop.dsnsTo("a@x.test")
	if len(dsns) != 1 {
		t.Fatalf("%d DSNs, want exactly 1", len(dsns))
	}
	f := parseDSN(t, dsns[0])
	if f["Action"] != "failed" || f["Status"] != "5.1.1" || f["Final-Recipient"] != "rfc822; bad@company.test" ||
		f["Original-Recipient"] != "rfc822; Alias@Company.test" || f["Original-Envelope-Id"] != "env-42" ||
		f["Reporting-MTA"] != "dns; relay.test" || !strings.HasPrefix(f["Diagnostic-Code"], "smtp; 550 5.1.1") {
		t.Fatalf("DSN fields %v", f)
	}
	if strings.Contains(dsns[0], "body text") || strings.Contains(dsns[0], "later@company.test") {
		t.Fatalf("DSN carries the body (RET not FULL) or a delivered recipient:\n%s", dsns[0])
	}
}

// parseDSN returns the fields of the message/delivery-status part
// (per-message and the first per-recipient block together).
func parseDSN(t *testing.T, msg string) map[string]string {
	t.Helper()
	i := strings.Index(msg, "Content-Type: message/delivery-status\r\n\r\n")
	if i < 0 {
		t.Fatalf("no delivery-status part:\n%s", msg)
	}
	part := msg[i+len("Content-Type: message/delivery-status\r\n\r\n"):]
	part = part[:strings.Index(part, "\r\n--")]
	f := map[string]string{}
	for _, l := range strings.Split(part, "\r\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			if _, dup := f[k]; !dup {
				f[k] = v
			}
		}
	}
	return f
}

// A message still undeliverable after the delay warning time gets one
// delay notice; after the lifetime it fails with 4.4.7 and one bounce.
func TestDelayWarningAndExpiry(t *testing.T) {
	c := startClockScheduler(t, func(_ time.Time, r string) int {
		if r == "a@x.test" { // the DSNs themselves get through
			return 250
		}
		return 451
	}, func(q *Scheduler) {
		q.DelayWarning = time.Hour
		q.Lifetime = 3 * time.Hour
	})
	start := c.clock.Now()
	c.commitAt(t, &envelope.Envelope{From: "a@x.test", DSNRet: "FULL", Recipients: []envelope.Recipient{{Addr: "b@company.test", Status: envelope.Pending}}},
		"Subject: s\r\n\r\nfull body\r\n")
	c.run(t, time.Minute, 4*time.Hour, spoolEmpty(c.s))
	dsns := c.hop.dsnsTo("a@x.test")
	if len(dsns) != 2 {
		t.Fatalf("%d DSNs, want a delay notice and a bounce", len(dsns))
	}
	d, f := parseDSN(t, dsns[0]), parseDSN(t, dsns[1])
	if d["Action"] != "delayed" || d["Status"] != "4.4.2" || f["Action"] != "failed" || f["Status"] != "4.4.7" ||
		d["Will-Retry-Until"] != start.Add(3*time.Hour).Format(time.RFC1123Z) {
		t.Fatalf("delay %v / failure %v", d, f)
	}
	if !strings.Contains(dsns[1], "Content-Type: message/rfc822") || !strings.Contains(dsns[1], "full body") {
		t.Fatalf("RET=FULL bounce without the message:\n%s", dsns[1])
	}
	var last time.Time
	for _, tx := range c.hop.transactions() {
		if tx.from != "" {
			last = tx.at
		}
	}
	if age := last.Sub(start); age > 3*time.Hour {
		t.Fatalf("delivery attempted at +%v, after the lifetime", age)
	}
}

// NOTIFY=NEVER: no DSN at all; NOTIFY=SUCCESS: no failure DSN.
func TestNotifyHonoured(t *testing.T) {
	c := startClockScheduler(t, func(time.Time, string) int { return 550 }, nil)
	c.commitAt(t, &envelope.Envelope{From: "a@x.test", Recipients: []envelope.Recipient{
		{Addr: "n1@company.test", Status: envelope.Pending, DSNNotify: "NEVER"},
		{Addr: "n2@company.test", Status: envelope.Pending, DSNNotify: "SUCCESS"}}}, "m\r\n")
	c.run(t, 10*time.Second, time.Minute, spoolEmpty(c.s))
	if n := len(c.hop.dsnsTo("a@x.test")); n != 0 {
		t.Fatalf("%d DSNs despite NOTIFY", n)
	}
}

type recordSigner struct{ seen strings.Builder }

func (r *recordSigner) Write(p []byte) (int, error) { return r.seen.Write(p) }
func (r *recordSigner) Finish() (string, error) {
	return "DKIM-Signature: v=1; test=" + fmt.Sprint(r.seen.Len()) + "\r\n", nil
}

// Our DSNs go out signed: the signer sees the DSN as written, and its
// header is sent in front of it.
func TestDSNSigned(t *testing.T) {
	signer := &recordSigner{}
	c := startClockScheduler(t, func(_ time.Time, r string) int {
		if r == "bad@company.test" {
			return 550
		}
		return 250
	}, func(q *Scheduler) { q.SignDSN = func() DSNSigner { return signer } })
	c.commitAt(t, &envelope.Envelope{From: "a@x.test", Recipients: []envelope.Recipient{{Addr: "bad@company.test", Status: envelope.Pending}}}, "Subject: s\r\n\r\nb\r\n")
	c.run(t, 10*time.Second, time.Minute, func() bool { return len(c.hop.dsnsTo("a@x.test")) == 1 })
	dsn := c.hop.dsnsTo("a@x.test")[0]
	want := fmt.Sprintf("DKIM-Signature: v=1; test=%d\r\nFrom: Mail Delivery System", signer.seen.Len())
	if !strings.HasPrefix(dsn, want) || !strings.HasSuffix(dsn, signer.seen.String()) {
		t.Fatalf("DSN not signed as written:\n%s", dsn)
	}
}
