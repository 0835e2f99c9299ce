package queue

import (
	"container/heap"
	"time"

	"mailfwd/queue/nexthop"
)

// dest is one destination's delivery state (all under Scheduler.mu): its
// queue of jobs, its concurrency window, and whether it is alive.
//
// The window works as Postfix's qmgr concurrency feedback: it starts at
// InitialConcurrency, grows by 1/window with each transaction that worked
// (up to DestinationConcurrency), shrinks by one with each failed
// connection, and is halved by a reply that asks us to slow down (421, or
// a 4.7.x rate-limit reply of a big mailbox provider), which also pauses
// the destination for a while (doubling while they go on). DeadAfter
// failed connections in a row mark it dead: its queued jobs are deferred
// at once, and mail for it waits parked, costing nothing, until the dead
// time is over and one probe transaction goes out; its success brings the
// parked mail back at once, its failure doubles the dead time.
type dest struct {
	key      string
	hop      nexthop.Hop
	external bool
	class    class

	queue     []*job
	active    int     // transactions in progress
	window    float64 // concurrency window
	max       int
	rateDelay time.Duration
	nextStart time.Time // pacing: RateDelay after the last start
	inReady   bool
	timerAt   time.Time // the wake-up queued for it, if any

	failures    int // connections failed in a row
	dead        bool
	deadUntil   time.Time
	deadFor     time.Duration
	probing     bool // dead time over: one transaction may try it
	pausedUntil time.Time
	pauseFor    time.Duration
	parked      []*entry // may hold stale entries (parkedOn says)
	parkedCount int

	lastError string
	lastUsed  time.Time
	sent      int64
	deferred  int64
}

// pauseMax caps a destination's slow-down pause (doubling from
// Scheduler.SlowDownPause while such replies go on).
const pauseMax = 10 * time.Minute

// destLocked is the state of a destination, made on first use.
func (q *Scheduler) destLocked(dd nexthop.Destination) *dest {
	if d := q.dests[dd.Key]; d != nil {
		return d
	}
	d := &dest{key: dd.Key, hop: dd.Hop, external: dd.Internet, class: classLocal,
		window: float64(q.InitialConcurrency), max: q.DestinationConcurrency, lastUsed: q.now()}
	if dd.Internet {
		d.class = classExternal
	}
	if q.Limits != nil {
		l := q.Limits(dd)
		if l.Concurrency > 0 {
			d.max = l.Concurrency
		}
		d.rateDelay = l.RateDelay
	}
	// One destination never takes every worker of its class: the others
	// must get theirs (Postfix: 20 per destination of 100 processes).
	workers := q.Workers
	if dd.Internet {
		workers = q.ExternalWorkers
	}
	d.max = max(1, min(d.max, workers-1))
	d.window = min(d.window, float64(d.max))
	q.dests[dd.Key] = d
	return d
}

// blocked reports whether new mail for d should wait (park) instead of
// joining its queue: d is dead, or its one probe is out.
func (d *dest) blocked(time.Time) bool {
	return d.dead || d.probing && (d.active > 0 || len(d.queue) > 0)
}

func (d *dest) limit() int {
	if d.probing {
		return 1
	}
	return max(1, int(d.window))
}

// canStart reports whether d may start a transaction now; if not only
// because of time (a pause, pacing), at is when it may.
func (d *dest) canStart(now time.Time) (ok bool, at time.Time) {
	if len(d.queue) == 0 || d.dead || d.active >= d.limit() {
		return false, time.Time{} // a new job or a finished one wakes it
	}
	if at := maxTime(d.pausedUntil, d.nextStart); at.After(now) {
		return false, at
	}
	return true, time.Time{}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// readyLocked offers d to its class's workers if it may start a
// transaction now, or sets a wake-up for when it may.
func (q *Scheduler) readyLocked(d *dest, now time.Time) {
	ok, at := d.canStart(now)
	switch {
	case ok:
		if !d.inReady {
			d.inReady = true
			q.ready[d.class].push(d)
			q.cond[d.class].Signal()
		}
	case !at.IsZero():
		q.wakeAtLocked(d, at)
	}
}

// wakeAtLocked makes the dispatcher look at d again at at.
func (q *Scheduler) wakeAtLocked(d *dest, at time.Time) {
	if !d.timerAt.IsZero() && !d.timerAt.After(at) {
		return // an earlier wake-up is queued already
	}
	d.timerAt = at
	heap.Push(&q.timers, destTimer{at, d})
	q.kickLocked()
}

// fireTimersLocked handles the wake-ups that are due.
func (q *Scheduler) fireTimersLocked(now time.Time) {
	for len(q.timers) > 0 && !q.timers[0].at.After(now) {
		t := heap.Pop(&q.timers).(destTimer)
		d := t.d
		if d.timerAt.Equal(t.at) {
			d.timerAt = time.Time{}
		}
		if d.dead {
			if now.Before(d.deadUntil) {
				q.wakeAtLocked(d, d.deadUntil) // an earlier wake-up: keep the probe's
				continue
			}
			q.probeLocked(d, now)
		}
		q.readyLocked(d, now)
	}
}

// feedbackLocked adjusts d after a transaction; it returns the messages
// whose attempt ended with it (jobs deferred because d died).
func (q *Scheduler) feedbackLocked(d *dest, out outcome, errText string, now time.Time) []*entry {
	switch out {
	case outcomeOK:
		d.failures, d.pauseFor = 0, 0
		if d.probing {
			q.reviveLocked(d, now)
		}
		d.window = min(float64(d.max), d.window+1/d.window)
	case outcomeSlow:
		d.failures = 0
		d.lastError = errText
		if d.probing {
			q.reviveLocked(d, now) // it answers: alive, if busy
		}
		d.window = max(1, d.window/2)
		d.pauseFor = min(max(2*d.pauseFor, q.SlowDownPause), pauseMax)
		d.pausedUntil = now.Add(d.pauseFor)
		q.Log.Info("destination asks us to slow down", "destination", d.key, "concurrency", int(d.window),
			"pause", d.pauseFor, "reply", errText)
	case outcomeConnFail:
		d.failures++
		d.lastError = errText
		d.window = max(1, d.window-1)
		if d.dead {
			return nil // begun before it died: its probe stays where it is
		}
		if d.probing || d.failures >= q.DeadAfter {
			return q.markDeadLocked(d, now)
		}
	}
	return nil
}

// markDeadLocked stops all delivery to d until its dead time is over. Its
// queued jobs end at once, deferred without a connection attempt.
func (q *Scheduler) markDeadLocked(d *dest, now time.Time) []*entry {
	r := q.retryOf(d)
	d.deadFor = min(max(2*d.deadFor, r.Min), r.Max)
	d.dead, d.probing = true, false
	d.deadUntil = now.Add(d.deadFor)
	q.wakeAtLocked(d, d.deadUntil)
	q.Log.Warn("destination dead: its mail waits without connection attempts until a probe succeeds",
		"destination", d.key, "failed_connections", d.failures, "probe_at", d.deadUntil.Format(time.RFC3339), "err", d.lastError)
	var done []*entry
	for _, j := range d.queue {
		for _, r := range j.rcpts {
			r.LastReply = "451 4.4.1 delivery temporarily suspended: " + d.lastError
		}
		q.Log.Info("deferred: destination dead", "queue_id", j.env.ID, "recipients", len(j.rcpts), "destination", d.key)
		if j.e.jobs--; j.e.jobs == 0 {
			done = append(done, j.e)
		}
	}
	d.queue = nil
	return done
}

// probeLocked: d's dead time is over; one transaction may try it. If
// nothing is queued for it, a parked message is brought forward.
func (q *Scheduler) probeLocked(d *dest, now time.Time) {
	d.dead, d.probing = false, true
	if len(d.queue) > 0 {
		return
	}
	for i, e := range d.parked {
		if e.parkedOn != d || e.state != waiting {
			continue
		}
		d.parked = d.parked[i+1:]
		q.unparkLocked(e)
		q.dueNowLocked(e, now)
		return
	}
	d.parked = nil // none left: the next message for it is the probe
}

// reviveLocked: a transaction to d worked; its parked mail is due now.
func (q *Scheduler) reviveLocked(d *dest, now time.Time) {
	n := 0
	for _, e := range d.parked {
		if e.parkedOn == d && e.state == waiting {
			q.unparkLocked(e)
			q.dueNowLocked(e, now)
			n++
		}
	}
	d.parked, d.parkedCount = nil, 0
	d.dead, d.probing, d.failures, d.deadFor = false, false, 0, 0
	d.window = float64(min(q.InitialConcurrency, d.max))
	q.Log.Info("destination alive again", "destination", d.key, "parked_messages", n)
}

// dueNowLocked makes a waiting message due at once, whatever its
// recipients' next attempts.
func (q *Scheduler) dueNowLocked(e *entry, now time.Time) {
	e.flushed = true
	e.due = now
	if e.idx >= 0 {
		heap.Fix(&q.heaps[e.class], e.idx)
	}
	q.kickLocked()
}

// tidyLocked forgets destinations idle for a while with nothing pending:
// their number must not grow with the domains ever written to.
func (q *Scheduler) tidyLocked(now time.Time) {
	for k, d := range q.dests {
		if len(d.queue) == 0 && d.active == 0 && d.parkedCount <= 0 && !d.dead && !d.probing &&
			!d.inReady && d.timerAt.IsZero() && now.Sub(d.lastUsed) > 10*time.Minute {
			delete(q.dests, k)
		}
	}
}

// readyList is a FIFO of destinations that may start a transaction now:
// workers take them in turn, so each gets its share.
type readyList struct{ ds []*dest }

func (r *readyList) push(d *dest) { r.ds = append(r.ds, d) }
func (r *readyList) empty() bool  { return len(r.ds) == 0 }
func (r *readyList) pop() *dest {
	d := r.ds[0]
	r.ds[0] = nil
	r.ds = r.ds[1:]
	if len(r.ds) == 0 {
		r.ds = nil
	}
	return d
}

// destTimers orders destination wake-ups.
type destTimer struct {
	at time.Time
	d  *dest
}

type destTimers []destTimer

func (h destTimers) Len() int           { return len(h) }
func (h destTimers) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h destTimers) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *destTimers) Push(x any)        { *h = append(*h, x.(destTimer)) }
func (h *destTimers) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = destTimer{}
	*h = old[:len(old)-1]
	return x
}
