package queue

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// The queue manager, in the spirit of Postfix's qmgr(8):
//
//   - Every queued message has a small record (entry) in memory: its ID,
//     when it is due, and its state. Its envelope is read from the spool
//     only when it is due, into an active set with a limit per class
//     (ActiveLimit), so memory does not grow with the backlog, and a
//     restart indexes the spool from its directory entries alone.
//   - A due message is split into jobs: its due recipients grouped by
//     destination, envelope sender and header (at most RecipientLimit in
//     one). Each destination has its own queue of jobs and its own
//     concurrency window (destination.go); a worker only ever takes a job
//     from a destination that may start one now, so no destination holds a
//     worker it cannot use, and our own next hops (Postfix) and the
//     Internet have separate workers and active sets: no amount of slow
//     Internet traffic delays local delivery.
//   - A destination that keeps failing is marked dead: its mail waits
//     (parked) without connection attempts, log lines or disk writes, and
//     one probe goes out when the dead time is over; when it succeeds the
//     parked mail is due at once.
//   - Each recipient has its own next attempt, after the backoff of its
//     class (Retry towards our next hops, ExternalRetry towards the
//     Internet), so a message's local recipients never wait on the
//     Internet's backoff.

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

// DestinationLimit overrides the concurrency and pacing of one
// destination (zero fields: the defaults).
type DestinationLimit struct {
	Concurrency int
	// RateDelay is the least time between the starts of two transactions
	// to it (Postfix's default_destination_rate_delay).
	RateDelay time.Duration
}

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
	// the Internet. A dead destination stays dead for the same backoff, per
	// failed probe.
	Retry         Retry
	ExternalRetry Retry
	// Lifetime: pending recipients of an older message fail (DSN).
	Lifetime time.Duration
	// DelayWarning: a delay DSN is sent once for recipients still pending
	// after this long (0 or negative: never).
	DelayWarning time.Duration
	// Workers deliver to our own next hops, ExternalWorkers to the
	// Internet (more of each than one destination's concurrency, so one
	// slow MX cannot hold them all).
	Workers         int
	ExternalWorkers int
	// DestinationConcurrency is the most parallel transactions to one
	// destination; InitialConcurrency where its window starts:
	// it grows with each success and shrinks with failures and slow-down
	// replies (destination.go).
	DestinationConcurrency int
	InitialConcurrency     int
	// Limits, if set, overrides concurrency and pacing per destination.
	Limits func(nexthop.Destination) DestinationLimit
	// RecipientLimit is the most recipients in one transaction.
	RecipientLimit int
	// ActiveLimit is the most messages of a class (local, external) with
	// their envelope in memory at once; the rest wait as records.
	ActiveLimit int
	// DeadAfter consecutive failed connections mark a destination dead.
	DeadAfter int
	// SlowDownPause is how long a destination that asked us to slow down
	// gets no new transaction (1 s, doubling while it goes on asking).
	SlowDownPause time.Duration
	Log           *slog.Logger
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

	running   atomic.Bool // Run is delivering (Health)
	initOnce  sync.Once
	indexOnce sync.Once // the recovered messages have records

	mu      sync.Mutex
	entries map[string]*entry
	peak    int // most entries since the map was last rebuilt
	heaps   [3]entryHeap
	active  [3]int
	cached  int // waiting messages whose envelope Submit kept in memory
	dests   map[string]*dest
	timers  destTimers
	ready   [2]readyList
	cond    [2]*sync.Cond
	stopped bool
	wake    chan struct{}
	loads   chan *entry
}

// class is which workers and which active set a message uses.
type class int8

const (
	classLocal    class = iota // some recipient goes to one of our next hops
	classExternal              // all go to the Internet
	classUnknown               // recovered, envelope not read yet
)

type entryState int8

const (
	waiting entryState = iota // in its class heap, due at due
	active                    // envelope read, being planned or delivered
	held                      // mailfwd queue hold: neither
)

// entry is the scheduler's record of one queued message: all of its state
// is here (and, while active, in its envelope).
type entry struct {
	id       string
	received int64 // unix nanoseconds (Stats)
	due      time.Time
	idx      int // in heaps[class]; -1 when in none
	class    class
	state    entryState
	statted  bool // its due time is known (recovered: read from the spool)
	env      *envelope.Envelope
	jobs     int  // outstanding jobs of the current attempt
	flushed  bool // due now, whatever its recipients' next attempts
	deleted  bool // mailfwd queue delete during an attempt
	holdReq  bool // mailfwd queue hold during an attempt
	parkedOn *dest
	dest     *dest // where its mail went last (Destinations)
}

// check refuses a Scheduler with a limit unset: the queue has no defaults
// of its own for what the config sets (cmd/mailfwd/wire.go passes them),
// and a zero would deliver nothing or retry in a hot loop.
func (q *Scheduler) check() error {
	var unset []string
	for name, v := range map[string]int64{
		"Workers": int64(q.Workers), "ExternalWorkers": int64(q.ExternalWorkers),
		"Retry.Min": int64(q.Retry.Min), "ExternalRetry.Min": int64(q.ExternalRetry.Min), "Lifetime": int64(q.Lifetime),
		"DestinationConcurrency": int64(q.DestinationConcurrency), "InitialConcurrency": int64(q.InitialConcurrency),
		"RecipientLimit": int64(q.RecipientLimit), "ActiveLimit": int64(q.ActiveLimit), "DeadAfter": int64(q.DeadAfter),
	} {
		if v <= 0 {
			unset = append(unset, name)
		}
	}
	if len(unset) > 0 {
		slices.Sort(unset)
		return fmt.Errorf("queue: Scheduler.%s must be positive", strings.Join(unset, ", Scheduler."))
	}
	return nil
}

func (q *Scheduler) init() {
	q.initOnce.Do(func() {
		if err := q.check(); err != nil {
			panic(err) // a wiring bug, not a runtime condition
		}
		q.Retry.Max = max(q.Retry.Max, q.Retry.Min)
		q.ExternalRetry.Max = max(q.ExternalRetry.Max, q.ExternalRetry.Min)
		q.InitialConcurrency = min(q.InitialConcurrency, q.DestinationConcurrency)
		if q.SlowDownPause <= 0 {
			q.SlowDownPause = time.Second
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
		q.entries = map[string]*entry{}
		q.dests = map[string]*dest{}
		q.wake = make(chan struct{}, 1)
		q.loads = make(chan *entry, 256)
		for c := range q.cond {
			q.cond[c] = sync.NewCond(&q.mu)
		}
	})
}

// hopRouter sends our domains' mail to one hop and external forwards to
// another.
type hopRouter struct{ local, external nexthop.Hop }

func (r hopRouter) Route(rc *envelope.Recipient) nexthop.Destination {
	if rc.Forward && r.external != nil {
		return nexthop.Destination{Key: r.external.String(), Hop: r.external, Internet: true}
	}
	return nexthop.Destination{Key: r.local.String(), Hop: r.local}
}

func (q *Scheduler) now() time.Time { return q.Clock.Now() }

// Submit schedules a just-committed message for immediate delivery.
func (q *Scheduler) Submit(env *envelope.Envelope) {
	q.init()
	q.mu.Lock()
	if _, ok := q.entries[env.ID]; ok {
		q.mu.Unlock()
		return
	}
	c := q.classOf(env)
	e := &entry{id: env.ID, received: env.Received.UnixNano(), due: q.now(), idx: -1, class: c, statted: true}
	if q.cached < q.ActiveLimit {
		e.env = env // its first attempt needs no read
		q.cached++
	}
	q.addLocked(e)
	q.mu.Unlock()
	q.Kick()
}

// addLocked records a new entry and puts it in its heap.
func (q *Scheduler) addLocked(e *entry) {
	q.entries[e.id] = e
	q.peak = max(q.peak, len(q.entries))
	heap.Push(&q.heaps[e.class], e)
}

// classOf is a message's class: local if any pending recipient goes to
// one of our own next hops.
func (q *Scheduler) classOf(env *envelope.Envelope) class {
	for _, r := range env.Pending() {
		if !q.Router.Route(r).Internet {
			return classLocal
		}
	}
	return classExternal
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

// Run delivers until ctx ends, starting with what the spool held when it
// was opened.
func (q *Scheduler) Run(ctx context.Context) error {
	q.init()
	q.indexOnce.Do(q.index)
	q.running.Store(true)
	defer q.running.Store(false)
	var wg sync.WaitGroup
	for range 4 { // envelope readers: disk I/O off the dispatcher
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case e := <-q.loads:
					q.start(ctx, e)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	for c, n := range map[class]int{classLocal: q.Workers, classExternal: q.ExternalWorkers} {
		for range n {
			wg.Add(1)
			go func() { defer wg.Done(); q.work(ctx, c) }()
		}
	}
	go func() {
		<-ctx.Done()
		q.mu.Lock()
		q.stopped = true
		for _, c := range q.cond {
			c.Broadcast()
		}
		q.mu.Unlock()
	}()
	q.dispatch(ctx)
	wg.Wait()
	return nil
}

// index gives every message the spool held when it was opened a record,
// once. It reads no envelope: each one's class is learnt when it is first
// due, and its due time from its envelope file's modification time.
func (q *Scheduler) index() {
	recovered := q.Spool.TakeRecovered()
	q.mu.Lock()
	for _, r := range recovered {
		if _, ok := q.entries[r.ID]; ok {
			continue
		}
		q.addLocked(&entry{id: r.ID, received: idTime(r.ID), idx: -1, class: classUnknown, statted: !r.Updated, due: time.Time{}})
	}
	q.mu.Unlock()
	if len(recovered) > 0 {
		q.Log.Info("spool indexed", "messages", len(recovered))
	}
}

// idTime is the arrival time a queue ID from NewID encodes (unix
// nanoseconds; 0 for other IDs).
func idTime(id string) int64 {
	if len(id) < 13 {
		return 0
	}
	us, err := strconv.ParseInt(id[:13], 16, 64)
	if err != nil {
		return 0
	}
	return us * 1e3
}

// activeTotal is how many messages are active, in every class.
func (q *Scheduler) activeTotal() int {
	n := 0
	for _, a := range q.active {
		n += a
	}
	return n
}

// limit is how many messages of class c may be active.
func (q *Scheduler) limit(c class) int {
	if c == classUnknown {
		return max(100, q.ActiveLimit/4)
	}
	return q.ActiveLimit
}

// dispatch moves due messages to the envelope readers, and wakes
// destinations whose dead, paused or pacing time is over.
func (q *Scheduler) dispatch(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	lastTidy := time.Now()
	for {
		q.mu.Lock()
		now := q.now()
		q.fireTimersLocked(now)
		var batch []*entry
		wait := time.Hour
		for c := range q.heaps {
			h := &q.heaps[c]
			for h.Len() > 0 && len(batch) < 64 {
				if q.active[c] >= q.limit(class(c)) || class(c) == classUnknown && q.activeTotal() >= q.ActiveLimit {
					break // an unknown message becomes local or external once read: it counts against them all
				}
				top := (*h)[0]
				if d := top.due.Sub(now); d > 0 {
					wait = min(wait, d)
					break
				}
				heap.Pop(h)
				if !top.statted {
					top.statted = true
					if due := q.Spool.DueTime(top.id); due.After(now) {
						top.due = due
						heap.Push(h, top)
						continue
					}
				}
				if top.env != nil {
					q.cached-- // counted as active now
				}
				top.state = active
				q.unparkLocked(top)
				q.active[c]++
				batch = append(batch, top)
			}
		}
		if len(q.timers) > 0 {
			wait = min(wait, max(q.timers[0].at.Sub(now), 0))
		}
		if time.Since(lastTidy) > time.Minute {
			q.tidyLocked(now)
			lastTidy = time.Now()
		}
		q.mu.Unlock()
		for _, e := range batch {
			select {
			case q.loads <- e:
			case <-ctx.Done():
				return
			}
		}
		if len(batch) > 0 {
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

// start reads a due message's envelope (unless it is in memory already)
// and plans its attempt.
func (q *Scheduler) start(ctx context.Context, e *entry) {
	env := e.env
	if env == nil {
		var err error
		env, err = q.Spool.LoadQueued(e.id)
		switch {
		case errors.Is(err, ErrGone) || errors.Is(err, os.ErrNotExist):
			q.mu.Lock()
			q.dropLocked(e)
			q.mu.Unlock()
			return
		case err != nil:
			q.Log.Error("cannot read queued message; will retry", "queue_id", e.id, "err", err)
			q.mu.Lock()
			q.requeueLocked(e, q.now().Add(q.Retry.Min))
			q.mu.Unlock()
			return
		}
		q.mu.Lock()
		e.received = env.Received.UnixNano()
		q.mu.Unlock()
	}
	q.plan(ctx, e, env)
}

// job is one transaction of an attempt: recipients of one message for one
// destination, sender and header.
type job struct {
	e       *entry
	env     *envelope.Envelope
	d       *dest
	from    string
	rewrite bool
	rcpts   []*envelope.Recipient
}

// plan splits a message's due recipients into jobs on their destinations'
// queues; a message with nothing to try now (its destinations dead, or its
// recipients not due) waits again without a write.
func (q *Scheduler) plan(ctx context.Context, e *entry, env *envelope.Envelope) {
	now := q.now()
	q.mu.Lock()
	switch {
	case e.deleted:
		q.mu.Unlock()
		q.Log.Info("deleted by the administrator", "queue_id", e.id)
		q.Spool.Remove(e.id)
		q.mu.Lock()
		q.dropLocked(e)
		q.mu.Unlock()
		return
	case env.Held || e.holdReq:
		q.mu.Unlock()
		if !env.Held {
			env.Held = true
			if err := q.Spool.Update(env); err != nil {
				q.Log.Error("cannot record hold", "queue_id", e.id, "err", err)
			}
		}
		q.mu.Lock()
		q.holdLocked(e)
		q.mu.Unlock()
		return
	}
	flushed := e.flushed
	e.flushed = false
	q.moveClassLocked(e, q.classOf(env))
	if now.Sub(env.Received) >= q.Lifetime {
		e.env = env
		q.mu.Unlock()
		q.finish(e) // expires what is pending
		return
	}
	var jobs []*job
	byKey := map[string]*job{}
	var deadOn *dest
	for _, r := range env.Pending() {
		dd := q.Router.Route(r)
		d := q.destLocked(dd)
		if e.dest == nil {
			e.dest = d
		}
		if !flushed && !r.NextAttempt.IsZero() && r.NextAttempt.After(now) {
			continue
		}
		if d.blocked(now) {
			if deadOn == nil {
				deadOn = d
			}
			continue
		}
		k := fmt.Sprint(dd.Key, "\x00", r.Sender(env), "\x00", r.RewritesFrom(env))
		j := byKey[k]
		if j == nil || len(j.rcpts) >= q.RecipientLimit {
			j = &job{e: e, env: env, d: d, from: r.Sender(env), rewrite: r.RewritesFrom(env)}
			byKey[k] = j
			jobs = append(jobs, j)
		}
		j.rcpts = append(j.rcpts, r)
	}
	if len(jobs) == 0 {
		if deadOn != nil {
			q.parkLocked(e, env, deadOn, now)
		} else {
			q.requeueLocked(e, q.nextDue(env, now))
		}
		q.mu.Unlock()
		return
	}
	q.mu.Unlock()
	// Persist when the attempt after this one is due before trying, so a
	// crash in the middle of it cannot make a restart retry at once, again
	// and again. The first attempt needs no write: a restart finds the
	// message never updated, and tries it once more.
	env.Attempts++
	for _, j := range jobs {
		for _, r := range j.rcpts {
			r.NextAttempt = now.Add(q.retryOf(j.d).Delay(r.Attempts+1, env.ID))
		}
	}
	env.NextAttempt = q.nextDue(env, now)
	if env.Attempts > 1 {
		// A full or failing disk must not freeze the queue: delivery is
		// what frees space. Without the record a crash during this attempt
		// makes a restart retry it at once (a duplicate at worst).
		if err := q.Spool.Update(env); err != nil {
			q.Log.Error("cannot record attempt; delivering anyway", "queue_id", e.id, "err", err)
		}
	}
	q.mu.Lock()
	e.env, e.jobs = env, len(jobs)
	for _, j := range jobs {
		j.d.queue = append(j.d.queue, j)
		q.readyLocked(j.d, now)
	}
	q.mu.Unlock()
}

// retryOf is the backoff of a destination's class.
func (q *Scheduler) retryOf(d *dest) Retry {
	if d.external {
		return q.ExternalRetry
	}
	return q.Retry
}

// nextDue is when a message is next due: its earliest pending recipient's
// next attempt, not before a moment from now, never after its expiry.
func (q *Scheduler) nextDue(env *envelope.Envelope, now time.Time) time.Time {
	var at time.Time
	for _, r := range env.Pending() {
		t := r.NextAttempt
		if t.IsZero() {
			t = now.Add(q.Retry.Min)
		}
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	if at.IsZero() {
		at = now.Add(q.Retry.Min)
	}
	if exp := env.Received.Add(q.Lifetime); at.After(exp) {
		at = exp
	}
	return at
}

// finish ends an attempt once all of its jobs are done: it expires and
// warns about old pending recipients, bounces failed ones, then removes a
// message with none left pending, or persists its state and makes it wait.
func (q *Scheduler) finish(e *entry) {
	env := e.env
	log := q.Log.With("queue_id", e.id)
	now := q.now()
	q.mu.Lock()
	deleted := e.deleted
	q.mu.Unlock()
	if deleted {
		log.Info("deleted by the administrator")
		q.Spool.Remove(e.id)
		q.mu.Lock()
		q.dropLocked(e)
		q.mu.Unlock()
		return
	}
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
		q.mu.Lock()
		q.requeueLocked(e, env.NextAttempt)
		q.mu.Unlock()
		return
	}
	if len(env.Pending()) == 0 {
		if err := q.Spool.Remove(e.id); err != nil {
			log.Error("removing delivered message", "err", err)
		} else {
			log.Info("removed")
		}
		q.mu.Lock()
		q.dropLocked(e)
		q.mu.Unlock()
		return
	}
	q.mu.Lock()
	flushed, hold := e.flushed, e.holdReq
	q.mu.Unlock()
	env.NextAttempt = q.nextDue(env, now)
	if flushed {
		env.NextAttempt = now
	}
	env.Held = env.Held || hold
	if err := q.Spool.Update(env); err != nil {
		log.Error("cannot record delivery outcome; will retry pending recipients", "err", err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if env.Held || e.holdReq {
		if !env.Held { // held while we wrote: record it
			env.Held = true
			q.mu.Unlock()
			q.Spool.Update(env)
			q.mu.Lock()
		}
		q.holdLocked(e)
		return
	}
	q.moveClassLocked(e, q.classOf(env))
	if e.flushed { // flushed during the attempt: plan sees the flag, and ignores the backoff
		q.requeueLocked(e, now)
		return
	}
	// All that is pending waits for dead destinations: park it there.
	var deadOn *dest
	for _, r := range env.Pending() {
		d := q.destLocked(q.Router.Route(r))
		if !d.dead {
			deadOn = nil
			break
		}
		if deadOn == nil {
			deadOn = d
		}
	}
	if deadOn != nil {
		q.parkLocked(e, env, deadOn, now)
		return
	}
	q.requeueLocked(e, env.NextAttempt)
}

// requeueLocked ends an attempt (or a plan without one): the envelope
// leaves memory and the message waits in its heap until at.
func (q *Scheduler) requeueLocked(e *entry, at time.Time) {
	q.deactivateLocked(e)
	e.due = at
	e.state = waiting
	heap.Push(&q.heaps[e.class], e)
	q.kickLocked()
}

// parkLocked makes a message whose due mail all goes to dead destinations
// wait on d: without a timer of its own, but for its expiry or delay
// warning, until d comes back.
func (q *Scheduler) parkLocked(e *entry, env *envelope.Envelope, d *dest, now time.Time) {
	at := env.Received.Add(q.Lifetime)
	if q.DelayWarning > 0 {
		for _, r := range env.Pending() {
			if !r.DelayNotified && r.Wants("DELAY") && env.From != "" {
				if w := env.Received.Add(q.DelayWarning); w.Before(at) {
					at = w
				}
				break
			}
		}
	}
	q.deactivateLocked(e)
	e.parkedOn = d
	d.parked = append(d.parked, e)
	d.parkedCount++
	e.due = maxTime(at, now.Add(time.Second))
	e.state = waiting
	heap.Push(&q.heaps[e.class], e)
}

// holdLocked ends an attempt of a held message: it leaves the heaps.
func (q *Scheduler) holdLocked(e *entry) {
	q.deactivateLocked(e)
	e.state = held
	e.holdReq = false
}

// deactivateLocked gives back the active slot of e, if it has one.
func (q *Scheduler) deactivateLocked(e *entry) {
	if e.state == active {
		q.active[e.class]--
		q.kickLocked() // room for the next due message
	} else if e.env != nil {
		q.cached--
	}
	e.env = nil
	e.jobs = 0
	q.unparkLocked(e)
}

// unparkLocked takes e off the destination it waits on (its entry in the
// destination's list goes stale, and is skipped).
func (q *Scheduler) unparkLocked(e *entry) {
	if e.parkedOn != nil {
		e.parkedOn.parkedCount--
		e.parkedOn = nil
	}
}

// moveClassLocked counts an active message under its class once known.
func (q *Scheduler) moveClassLocked(e *entry, c class) {
	if e.class == c {
		return
	}
	if e.state == active {
		q.active[e.class]--
		q.active[c]++
	}
	e.class = c
}

// dropLocked forgets a message that left the spool.
func (q *Scheduler) dropLocked(e *entry) {
	q.deactivateLocked(e)
	if e.idx >= 0 {
		heap.Remove(&q.heaps[e.class], e.idx)
	}
	delete(q.entries, e.id)
	e.state = held // no longer scheduled
	q.shrinkLocked()
}

// shrinkLocked gives memory back after a backlog drained: Go maps never
// shrink, so the map is rebuilt once it holds a quarter of its peak, and
// the heaps' arrays are trimmed likewise.
func (q *Scheduler) shrinkLocked() {
	if q.peak < 1024 || len(q.entries) > q.peak/4 {
		return
	}
	m := make(map[string]*entry, len(q.entries))
	for k, v := range q.entries {
		m[k] = v
	}
	q.entries, q.peak = m, len(m)
	for c := range q.heaps {
		if h := q.heaps[c]; cap(h) > 4*len(h)+64 {
			q.heaps[c] = append(make(entryHeap, 0, len(h)*2), h...)
		}
	}
}

func (q *Scheduler) kickLocked() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// entryHeap orders waiting messages by due time.
type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil // the popped entry must not stay reachable from here
	e.idx = -1
	*h = old[:len(old)-1]
	return e
}

// idle reports whether nothing is being delivered and nothing is due now
// (for tests that drive a fake clock).
func (q *Scheduler) idle() bool {
	q.init()
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for c := range q.heaps {
		if q.active[c] > 0 || q.heaps[c].Len() > 0 && !q.heaps[c][0].due.After(now) {
			return false
		}
	}
	for _, t := range q.timers {
		if !t.at.After(now) {
			return false
		}
	}
	return len(q.loads) == 0
}

// oneLine folds a reply onto one log line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
