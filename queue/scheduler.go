package queue

import (
	"container/heap"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Hop is a next hop that messages are handed to. It is an interface so that
// unit tests can stand in for a real SMTP server.
type Hop interface {
	Send(ctx context.Context, env *Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error)
	String() string
}

// Retry is the backoff policy: the first retry after Min, doubling up to
// Max, with ±20% jitter so deferred messages do not return in lockstep.
type Retry struct {
	Min, Max time.Duration
}

// Delay is the wait before attempt n+1 after n failed attempts (n ≥ 1).
func (r Retry) Delay(n int) time.Duration {
	d := r.Min
	for i := 1; i < n && d < r.Max; i++ {
		d *= 2
	}
	if d > r.Max {
		d = r.Max
	}
	j := time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return j
}

// Scheduler is the queue manager: it delivers committed messages now, and
// deferred ones when they are due.
type Scheduler struct {
	Spool *Spool
	// Hop takes mail for our own domains (Postfix); ExternalHop takes
	// external forwards (nil: Hop takes them too).
	Hop         Hop
	ExternalHop Hop
	// Local reports whether a domain is ours; it routes our own DSNs.
	Local   func(domain string) bool
	Retry   Retry
	Workers int
	Log     *slog.Logger
	// Hostname names us in DSNs.
	Hostname string

	mu      sync.Mutex
	pending timeHeap
	queued  map[string]bool // in the heap or being delivered
	wake    chan struct{}
	work    chan *Envelope
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
	if q.Log == nil {
		q.Log = slog.Default()
	}
	q.queued = map[string]bool{}
	q.wake = make(chan struct{}, 1)
	q.work = make(chan *Envelope, q.Workers)
}

// Submit schedules a just-committed message for immediate delivery.
func (q *Scheduler) Submit(env *Envelope) {
	q.init()
	q.schedule(env, time.Now())
}

func (q *Scheduler) schedule(env *Envelope, at time.Time) {
	q.mu.Lock()
	if q.queued[env.ID] {
		q.mu.Unlock()
		return
	}
	q.queued[env.ID] = true
	heap.Push(&q.pending, timedEnv{at, env})
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// Run loads the spool and delivers until ctx ends. Messages found on
// start are spread over the first seconds (jitter), so a restart after an
// outage does not hit the next hop with the whole queue at once.
func (q *Scheduler) Run(ctx context.Context) error {
	q.init()
	envs := q.Spool.TakeRecovered()
	now := time.Now()
	spread := time.Duration(len(envs)) * time.Millisecond
	if spread > 5*time.Second {
		spread = 5 * time.Second
	}
	for _, env := range envs {
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

// dispatch moves due messages to the workers.
func (q *Scheduler) dispatch(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		q.mu.Lock()
		var next *Envelope
		wait := time.Hour
		if len(q.pending) > 0 {
			top := q.pending[0]
			if d := time.Until(top.at); d <= 0 {
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

// attempt delivers one message's pending recipients and records the
// outcome of each before the message is touched again.
func (q *Scheduler) attempt(ctx context.Context, env *Envelope) {
	log := q.Log.With("queue_id", env.ID)
	done := func() {
		q.mu.Lock()
		delete(q.queued, env.ID)
		q.mu.Unlock()
	}
	// Persist when the attempt after this one is due before trying, so a
	// crash in the middle of it cannot make a restart retry at once, again
	// and again. The first attempt needs no write: Commit stored a next
	// attempt time already.
	env.Attempts++
	if env.Attempts > 1 {
		env.NextAttempt = time.Now().Add(q.Retry.Delay(env.Attempts))
		if err := q.Spool.Update(env); err != nil {
			log.Error("cannot record attempt; will retry", "err", err)
			done()
			q.schedule(env, time.Now().Add(q.Retry.Min))
			return
		}
	}
	// One transaction per next hop and envelope sender: an external
	// forward leaves with its SRS sender, local mail with the original.
	type route struct {
		external bool
		from     string
	}
	var order []route
	groups := map[route][]*Recipient{}
	for _, r := range env.Pending() {
		k := route{r.External, r.Sender(env)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		q.deliver(ctx, log, env, q.hopFor(k.external), k.from, groups[k])
	}
	q.finish(log, env, done)
}

func (q *Scheduler) hopFor(external bool) Hop {
	if external && q.ExternalHop != nil {
		return q.ExternalHop
	}
	return q.Hop
}

// deliver sends to the pending recipients and records each one's outcome
// in env (in memory; finish persists it).
func (q *Scheduler) deliver(ctx context.Context, log *slog.Logger, env *Envelope, hop Hop, from string, rcpts []*Recipient) {
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = r.Addr
	}
	start := time.Now()
	replies, err := q.send(ctx, hop, env, from, addrs)
	delay := time.Since(env.Received).Round(time.Millisecond)
	for i, r := range rcpts {
		var reply Reply
		if err != nil {
			reply = Reply{Code: 451, Enhanced: "4.4.1", Text: err.Error()}
		} else {
			reply = replies[i]
		}
		r.LastReply = reply.String()
		status := "deferred"
		switch {
		case reply.OK():
			r.Status, status = Sent, "sent"
		case reply.Permanent():
			r.Status, status = Failed, "bounced"
		}
		log.Info(status, "from", from, "to", r.Addr, "orig_to", r.OrigTo, "relay", hop.String(),
			"delay", delay.String(), "attempt_time", time.Since(start).Round(time.Millisecond).String(),
			"status", reply.String())
	}
}

// finish removes a message with no pending recipients (bouncing the failed
// ones first), or persists its state and schedules the next attempt.
func (q *Scheduler) finish(log *slog.Logger, env *Envelope, done func()) {
	if len(env.Pending()) == 0 {
		// The bounce is durable before the message goes: a crash in
		// between sends the bounce twice at worst, never not at all.
		if err := q.bounce(env); err != nil {
			log.Error("cannot queue bounce; keeping the message and retrying", "err", err)
			env.NextAttempt = time.Now().Add(q.Retry.Delay(env.Attempts))
			q.Spool.Update(env)
			done()
			q.schedule(env, env.NextAttempt)
			return
		}
		if err := q.Spool.Remove(env.ID); err != nil {
			log.Error("removing delivered message", "err", err)
		} else {
			log.Info("removed")
		}
		done()
		return
	}
	env.NextAttempt = time.Now().Add(q.Retry.Delay(env.Attempts))
	if err := q.Spool.Update(env); err != nil {
		log.Error("cannot record delivery outcome; will retry pending recipients", "err", err)
	}
	done()
	q.schedule(env, env.NextAttempt)
}

func (q *Scheduler) send(ctx context.Context, hop Hop, env *Envelope, from string, rcpts []string) ([]Reply, error) {
	body, err := q.Spool.OpenBody(env.ID)
	if err != nil {
		return nil, fmt.Errorf("opening body: %w", err)
	}
	defer body.Close()
	replies, err := hop.Send(ctx, env, from, rcpts, body)
	if err == nil && len(replies) != len(rcpts) {
		err = fmt.Errorf("next hop returned %d replies for %d recipients", len(replies), len(rcpts))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %s", hop, strings.TrimSpace(err.Error()))
	}
	return replies, nil
}

type timedEnv struct {
	at  time.Time
	env *Envelope
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
