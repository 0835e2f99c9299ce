package queue

import (
	"container/heap"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// DSNSigner signs one DSN as it is written (auth.SignStream is one).
type DSNSigner interface {
	io.Writer
	Finish() (string, error)
}

// Router picks each recipient's destination.
type Router interface {
	Route(r *envelope.Recipient) nexthop.Destination
}

// Retry is a backoff policy: the first retry after Min, doubling up to Max.
// Each message gets its own fixed jitter factor (from its ID), so deferred
// messages do not return in lockstep and one message's delays never shrink.
type Retry struct {
	Min, Max time.Duration
}

// Delay is the wait before the next attempt after n failed attempts (n ≥ 1)
// of message id: non-decreasing in n.
func (r Retry) Delay(n int, id string) time.Duration {
	d := r.Min
	for i := 1; i < n && d < r.Max; i++ {
		d *= 2
	}
	if d > r.Max {
		d = r.Max
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	f := 0.8 + 0.2*float64(h.Sum32()%1000)/1000 // 0.8 .. 1.0
	return time.Duration(float64(d) * f)
}

// Clock is the scheduler's time: time.Now in production, a fake in tests.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Defaults of the delivery policy.
const (
	DefaultLifetime     = 5 * 24 * time.Hour
	DefaultDelayWarning = 4 * time.Hour
)

// Scheduler is the queue manager: it delivers committed messages now and
// deferred ones when due, records each recipient's outcome, and bounces
// (DSN) what fails or expires.
type Scheduler struct {
	Spool *Spool
	// Router picks destinations; without one, Hop takes our own domains'
	// mail and ExternalHop (or Hop) the external forwards.
	Router      Router
	Hop         nexthop.Hop
	ExternalHop nexthop.Hop
	// Local reports whether a domain is ours; it routes our own DSNs.
	Local func(domain string) bool
	// Retry is the backoff towards our own next hops, ExternalRetry towards
	// the Internet (zero: 5 min doubling to 4 h).
	Retry         Retry
	ExternalRetry Retry
	// Lifetime: pending recipients of an older message fail (DSN).
	Lifetime time.Duration
	// DelayWarning: a delay DSN is sent once for recipients still pending
	// after this long (0: DefaultDelayWarning; negative: never).
	DelayWarning time.Duration
	Workers      int
	// DestinationConcurrency bounds parallel transactions per destination.
	DestinationConcurrency int
	Log                    *slog.Logger
	// Hostname names us in DSNs.
	Hostname string
	// SignDSN, if set, returns a writer that sees each DSN we generate and
	// then gives its DKIM-Signature header (sent before the DSN).
	SignDSN func() DSNSigner
	// ForwardDSN: which senders get DSNs about failed or delayed external
	// forwards (default ForwardDSNAuthenticated). RevealForward: those DSNs
	// name the outside address and quote its MX's reply (default: the
	// address the sender used, and the reply's codes only).
	ForwardDSN    ForwardDSN
	RevealForward bool
	Clock         Clock
	// Observe, if set, hears each recipient's delivery outcome ("delivery":
	// sent, deferred, bounced or expired) and each DSN queued ("dsn":
	// failure or delay). It must not block.
	Observe func(event, result string)

	running atomic.Bool // Run is delivering (Health)
	mu      sync.Mutex
	pending timeHeap
	queued  map[string]time.Time // in the heap or being delivered: arrival time (Stats)
	wake    chan struct{}
	work    chan *envelope.Envelope
	slots   map[string]chan struct{} // per-destination concurrency
	// Administrator's operations (control.go).
	held     map[string]bool
	deleted  map[string]bool
	inflight map[string]bool
	flushed  map[string]bool // flushed while in flight: retry at once
	loadOnce sync.Once
}

func (q *Scheduler) init() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.queued != nil {
		return
	}
	if q.Workers <= 0 {
		q.Workers = 16
	}
	if q.Retry.Min <= 0 {
		q.Retry.Min = 10 * time.Second
	}
	if q.Retry.Max < q.Retry.Min {
		q.Retry.Max = 5 * time.Minute
	}
	if q.ExternalRetry.Min <= 0 {
		q.ExternalRetry.Min = 5 * time.Minute
	}
	if q.ExternalRetry.Max < q.ExternalRetry.Min {
		q.ExternalRetry.Max = 4 * time.Hour
	}
	if q.Lifetime <= 0 {
		q.Lifetime = DefaultLifetime
	}
	if q.DelayWarning == 0 {
		q.DelayWarning = DefaultDelayWarning
	}
	if q.DestinationConcurrency <= 0 {
		q.DestinationConcurrency = 20
	}
	if q.Log == nil {
		q.Log = slog.Default()
	}
	if q.Clock == nil {
		q.Clock = realClock{}
	}
	if q.Router == nil {
		q.Router = hopRouter{local: q.Hop, external: q.ExternalHop}
	}
	q.queued = map[string]time.Time{}
	q.wake = make(chan struct{}, 1)
	q.work = make(chan *envelope.Envelope, q.Workers)
	q.slots = map[string]chan struct{}{}
	q.held, q.deleted, q.inflight, q.flushed = map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
}

// hopRouter sends our domains' mail to one hop and external forwards to
// another.
type hopRouter struct{ local, external nexthop.Hop }

func (r hopRouter) Route(rc *envelope.Recipient) nexthop.Destination {
	if rc.External && r.external != nil {
		return nexthop.Destination{Key: r.external.String(), Hop: r.external}
	}
	return nexthop.Destination{Key: r.local.String(), Hop: r.local}
}

func (q *Scheduler) now() time.Time { return q.Clock.Now() }

// Submit schedules a just-committed message for immediate delivery.
func (q *Scheduler) Submit(env *envelope.Envelope) {
	q.init()
	q.load()
	q.schedule(env, q.now())
}

// Kick makes the scheduler look at its timers again (after a fake clock
// moved, or a queue flush).
func (q *Scheduler) Kick() {
	q.init()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *Scheduler) schedule(env *envelope.Envelope, at time.Time) {
	q.mu.Lock()
	if _, ok := q.queued[env.ID]; ok {
		q.mu.Unlock()
		return
	}
	q.queued[env.ID] = env.Received
	heap.Push(&q.pending, timedEnv{at, env})
	q.mu.Unlock()
	q.Kick()
}

// Run delivers until ctx ends, starting with what the spool held when it
// was opened.
func (q *Scheduler) Run(ctx context.Context) error {
	q.init()
	q.load()
	q.running.Store(true)
	defer q.running.Store(false)
	var wg sync.WaitGroup
	for range q.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case env := <-q.work:
					q.attempt(ctx, env)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	q.dispatch(ctx)
	wg.Wait()
	return nil
}

// load schedules the messages the spool held when it was opened, once,
// before anything else touches the queue. They are spread over the first
// seconds (jitter), so a restart after an outage does not hit the next hop
// all at once.
func (q *Scheduler) load() {
	q.loadOnce.Do(q.loadRecovered)
}

func (q *Scheduler) loadRecovered() {
	envs := q.Spool.TakeRecovered()
	now := q.now()
	spread := time.Duration(len(envs)) * time.Millisecond
	if spread > 5*time.Second {
		spread = 5 * time.Second
	}
	for _, env := range envs {
		if env.Held {
			q.mu.Lock()
			q.held[env.ID] = true
			q.mu.Unlock()
			continue
		}
		at := env.NextAttempt
		if at.Before(now) {
			at = now
		}
		if spread > 0 {
			at = at.Add(time.Duration(rand.Int64N(int64(spread))))
		}
		q.schedule(env, at)
	}
	if len(envs) > 0 {
		q.Log.Info("spool loaded", "messages", len(envs))
	}
}

// dispatch moves due messages to the workers.
func (q *Scheduler) dispatch(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		var next *envelope.Envelope
		wait := time.Hour
		if len(q.pending) > 0 {
			top := q.pending[0]
			if d := top.at.Sub(q.now()); d <= 0 {
				heap.Pop(&q.pending)
				next = top.env
			} else {
				wait = d
			}
		}
		q.mu.Unlock()
		if next != nil {
			select {
			case q.work <- next:
			case <-ctx.Done():
				return
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-q.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		case <-ctx.Done():
			return
		}
	}
}

// route is one transaction of an attempt: a destination and a sender.
type route struct {
	dest nexthop.Destination
	from string
}

// attempt delivers one message's pending recipients and records the
// outcome of each before the message is touched again.
func (q *Scheduler) attempt(ctx context.Context, env *envelope.Envelope) {
	log := q.Log.With("queue_id", env.ID)
	done := func() {
		q.mu.Lock()
		delete(q.queued, env.ID)
		delete(q.inflight, env.ID)
		q.mu.Unlock()
	}
	q.mu.Lock()
	skip := q.held[env.ID] || q.deleted[env.ID]
	delete(q.deleted, env.ID)
	q.inflight[env.ID] = true
	q.mu.Unlock()
	if skip {
		done()
		return
	}
	// Persist when the attempt after this one is due before trying, so a
	// crash in the middle of it cannot make a restart retry at once, again
	// and again. The first attempt needs no write: Commit stored a next
	// attempt time already.
	env.Attempts++
	if env.Attempts > 1 {
		env.NextAttempt = q.nextAttempt(env)
		if err := q.Spool.Update(env); err != nil {
			log.Error("cannot record attempt; will retry", "err", err)
			done()
			q.schedule(env, q.now().Add(q.Retry.Min))
			return
		}
	}
	// One transaction per destination, envelope sender and header: an
	// external forward leaves with its SRS sender (and maybe our From),
	// local mail with the original.
	var order []string
	groups := map[string]*struct {
		route
		rewrite bool
		rcpts   []*envelope.Recipient
	}{}
	for _, r := range env.Pending() {
		d := q.Router.Route(r)
		k := fmt.Sprint(d.Key, "\x00", r.Sender(env), "\x00", r.RewritesFrom(env))
		g, ok := groups[k]
		if !ok {
			g = &struct {
				route
				rewrite bool
				rcpts   []*envelope.Recipient
			}{route: route{d, r.Sender(env)}, rewrite: r.RewritesFrom(env)}
			groups[k] = g
			order = append(order, k)
		}
		g.rcpts = append(g.rcpts, r)
	}
	for _, k := range order {
		g := groups[k]
		if !q.acquire(ctx, g.dest.Key) {
			break // shutting down: the recipients stay pending
		}
		q.deliver(ctx, log, env, g.dest.Hop, g.from, g.rcpts, g.rewrite)
		q.release(g.dest.Key)
	}
	q.finish(log, env, done)
}

func (q *Scheduler) acquire(ctx context.Context, key string) bool {
	q.mu.Lock()
	s, ok := q.slots[key]
	if !ok {
		s = make(chan struct{}, q.DestinationConcurrency)
		q.slots[key] = s
	}
	q.mu.Unlock()
	select {
	case s <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (q *Scheduler) release(key string) {
	q.mu.Lock()
	s := q.slots[key]
	q.mu.Unlock()
	<-s
}

// nextAttempt is when a message that just failed is tried again: after the
// backoff of the slowest class among its pending recipients, but never
// after its expiry (so it expires on time).
func (q *Scheduler) nextAttempt(env *envelope.Envelope) time.Time {
	r := q.Retry
	for _, rc := range env.Pending() {
		if q.Router.Route(rc).External {
			r = q.ExternalRetry
			break
		}
	}
	at := q.now().Add(r.Delay(env.Attempts, env.ID))
	if exp := env.Received.Add(q.Lifetime); at.After(exp) {
		at = exp
	}
	return at
}

// deliver sends to the pending recipients and records each one's outcome
// in env (in memory; finish persists it).
func (q *Scheduler) deliver(ctx context.Context, log *slog.Logger, env *envelope.Envelope, hop nexthop.Hop, from string, rcpts []*envelope.Recipient, rewrite bool) {
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = r.Addr
	}
	start := time.Now()
	external := false
	for _, r := range rcpts {
		external = external || r.External
	}
	replies, err := q.send(ctx, hop, env, from, addrs, external, rewrite)
	delay := q.now().Sub(env.Received).Round(time.Millisecond)
	for i, r := range rcpts {
		var reply nexthop.Reply
		if err != nil {
			reply = nexthop.Reply{Code: 451, Enhanced: "4.4.1", Text: err.Error()}
		} else {
			reply = replies[i]
		}
		r.LastReply = reply.String()
		r.Attempts++
		status := "deferred"
		switch {
		case reply.OK():
			r.Status, status = envelope.Sent, "sent"
		case reply.Permanent():
			r.Status, status = envelope.Failed, "bounced"
		}
		q.observe("delivery", status)
		// One line per recipient and attempt, as Postfix's smtp(8) logs it,
		// so that admins' greps and log tools keep working.
		dsn := reply.Enhanced
		if dsn == "" {
			dsn = fmt.Sprintf("%d.0.0", reply.Code/100)
		}
		log.Info(fmt.Sprintf("to=<%s>, orig_to=<%s>, relay=%s, delay=%.2f, delays=%.2f, dsn=%s, status=%s (%s)",
			r.Addr, r.OrigTo, hop.String(), delay.Seconds(), time.Since(start).Seconds(), dsn, status, oneLine(reply.String())),
			"from", from, "status", status)
	}
}

// finish expires and warns about old pending recipients, then removes a
// message with none left pending (bouncing the failed ones first), or
// persists its state and schedules the next attempt.
func (q *Scheduler) finish(log *slog.Logger, env *envelope.Envelope, done func()) {
	now := q.now()
	q.mu.Lock()
	held, deleted, flushed := q.held[env.ID], q.deleted[env.ID], q.flushed[env.ID]
	delete(q.deleted, env.ID)
	delete(q.flushed, env.ID)
	q.mu.Unlock()
	if deleted {
		log.Info("deleted by the administrator")
		q.Spool.Remove(env.ID)
		done()
		return
	}
	env.Held = held
	if age := now.Sub(env.Received); age >= q.Lifetime {
		for _, r := range env.Pending() {
			r.Status = envelope.Failed
			r.LastReply = fmt.Sprintf("message expired after %s in the queue; last error: %s", q.Lifetime, r.LastReply)
			r.Expired = true
			q.observe("delivery", "expired")
			log.Info("expired", "to", r.Addr, "orig_to", r.OrigTo, "status", r.LastReply)
		}
	} else if q.DelayWarning > 0 && age >= q.DelayWarning {
		if err := q.warnDelay(env); err != nil {
			log.Error("cannot queue delay notice; will try again", "err", err)
		}
	}
	// Failures are reported as soon as they happen, not when the last
	// recipient is done. The bounce is durable before the envelope records
	// it as sent: a crash in between sends it twice at worst, never not at all.
	if err := q.bounce(env); err != nil {
		log.Error("cannot queue bounce; keeping the message and retrying", "err", err)
		for i := range env.Recipients {
			if env.Recipients[i].Expired {
				env.Recipients[i].Status, env.Recipients[i].Expired = envelope.Pending, false
			}
		}
		env.NextAttempt = now.Add(q.Retry.Min)
		q.Spool.Update(env)
		done()
		q.schedule(env, env.NextAttempt)
		return
	}
	if len(env.Pending()) == 0 {
		if err := q.Spool.Remove(env.ID); err != nil {
			log.Error("removing delivered message", "err", err)
		} else {
			log.Info("removed")
		}
		done()
		return
	}
	env.NextAttempt = q.nextAttempt(env)
	if flushed {
		env.NextAttempt = now
	}
	if err := q.Spool.Update(env); err != nil {
		log.Error("cannot record delivery outcome; will retry pending recipients", "err", err)
	}
	q.requeue(env, held)
}

// requeue ends an attempt and puts the message back on the timer heap in
// one step, so that a queue operation never finds it in neither place.
func (q *Scheduler) requeue(env *envelope.Envelope, held bool) {
	q.mu.Lock()
	if q.held[env.ID] && !env.Held {
		// Held while this attempt was finishing: Hold left the writing to
		// us (the message is still in flight), so record it now.
		q.mu.Unlock()
		env.Held = true
		if err := q.Spool.Update(env); err != nil {
			q.Log.Error("cannot record hold", "queue_id", env.ID, "err", err)
		}
		q.mu.Lock()
	}
	delete(q.inflight, env.ID)
	at := env.NextAttempt
	if q.flushed[env.ID] { // flushed after finish looked
		delete(q.flushed, env.ID)
		at = q.now()
	}
	if held || q.held[env.ID] {
		delete(q.queued, env.ID)
		q.mu.Unlock()
		return
	}
	heap.Push(&q.pending, timedEnv{at, env}) // still marked queued
	q.mu.Unlock()
	q.Kick()
}

func (q *Scheduler) send(ctx context.Context, hop nexthop.Hop, env *envelope.Envelope, from string, rcpts []string, external, rewrite bool) ([]nexthop.Reply, error) {
	f, err := q.Spool.OpenBody(env)
	if err != nil {
		return nil, fmt.Errorf("opening body: %w", err)
	}
	defer f.Close()
	prefix := env.AuthHeader
	if external {
		prefix = env.ForwardHeader + prefix
	}
	body := &prefixedBody{prefix: prefix, f: f}
	if rw := env.FromRewrite; rewrite && rw != nil && rw.Offset >= 0 && rw.Offset+rw.Length <= env.Size {
		body.prefix = rw.ForwardHeader + env.AuthHeader
		body.cut, body.with = rw, rw.Fields
	}
	sized := *env // SIZE= and size checks must count what we add
	sized.Size += body.added()
	body.Seek(0, io.SeekStart)
	replies, err := hop.Send(ctx, &sized, from, rcpts, body)
	if err == nil && len(replies) != len(rcpts) {
		err = fmt.Errorf("next hop returned %d replies for %d recipients", len(replies), len(rcpts))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s", hop, strings.TrimSpace(err.Error()))
	}
	return replies, nil
}

// prefixedBody is the message as delivered: our headers, then the spooled
// body file, in which a From field may be replaced (cut). It can be
// rewound (MX delivery tries the next host).
type prefixedBody struct {
	prefix string
	f      io.ReadSeeker
	r      io.Reader
	cut    *envelope.FromRewrite
	with   string
}

// added is how many bytes the delivered message has beyond the file.
func (p *prefixedBody) added() int64 {
	n := int64(len(p.prefix))
	if p.cut != nil {
		n += int64(len(p.with)) - p.cut.Length
	}
	return n
}

func (p *prefixedBody) Read(b []byte) (int, error) { return p.r.Read(b) }

func (p *prefixedBody) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, fmt.Errorf("prefixedBody: only rewinding is supported")
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if p.cut == nil {
		p.r = io.MultiReader(strings.NewReader(p.prefix), p.f)
		return 0, nil
	}
	// the file up to the From field, its replacement, the rest after it
	p.r = io.MultiReader(strings.NewReader(p.prefix), io.LimitReader(p.f, p.cut.Offset),
		strings.NewReader(p.with), &skipReader{r: p.f, skip: p.cut.Length})
	return 0, nil
}

type timedEnv struct {
	at  time.Time
	env *envelope.Envelope
}

type timeHeap []timedEnv

func (h timeHeap) Len() int           { return len(h) }
func (h timeHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timeHeap) Push(x any)        { *h = append(*h, x.(timedEnv)) }
func (h *timeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// idle reports whether nothing is being delivered and nothing is due now
// (for tests that drive a fake clock).
func (q *Scheduler) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.work) > 0 {
		return false
	}
	busy := len(q.queued) - len(q.pending)
	if busy > 0 {
		return false
	}
	return len(q.pending) == 0 || q.pending[0].at.After(q.now())
}

// skipReader drops the first skip bytes of r.
type skipReader struct {
	r    io.Reader
	skip int64
}

func (s *skipReader) Read(b []byte) (int, error) {
	if s.skip > 0 {
		if _, err := io.CopyN(io.Discard, s.r, s.skip); err != nil {
			return 0, err
		}
		s.skip = 0
	}
	return s.r.Read(b)
}

// oneLine folds a reply onto one log line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
