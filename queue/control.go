package queue

import (
	"container/heap"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"mailfwd/queue/envelope"
)

// ErrNoMessage: no message with that queue ID.
var ErrNoMessage = errors.New("no such message in the queue")

// Operations of `mailfwd queue` on a running scheduler. Each one works with
// the delivery that may be in progress for the message: a message being
// delivered is changed by that attempt's own bookkeeping when it ends, so
// the two never write the envelope over each other.

// lookup finds a message's record (the recovered messages are indexed
// first, if Run has not done it yet).
func (q *Scheduler) lookup(id string) (*entry, error) {
	q.init()
	q.indexOnce.Do(q.index)
	q.mu.Lock()
	e := q.entries[id]
	q.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoMessage, id)
	}
	return e, nil
}

// Hold stops delivery of a message until Release.
func (q *Scheduler) Hold(id string) error {
	e, err := q.lookup(id)
	if err != nil {
		return err
	}
	q.mu.Lock()
	switch e.state {
	case active:
		e.holdReq = true // its attempt records it when it ends
		q.mu.Unlock()
		return nil
	case held:
		q.mu.Unlock()
		return nil
	}
	if e.idx >= 0 {
		heap.Remove(&q.heaps[e.class], e.idx)
	}
	q.holdLocked(e)
	q.mu.Unlock()
	return q.updateFile(id, func(env *envelope.Envelope) { env.Held = true })
}

// Release resumes delivery of a held message, at once.
func (q *Scheduler) Release(id string) error {
	e, err := q.lookup(id)
	if err != nil {
		return err
	}
	q.mu.Lock()
	if e.state != held {
		e.holdReq = false
		q.mu.Unlock()
		return nil
	}
	q.mu.Unlock()
	var c class
	if err := q.updateFile(id, func(env *envelope.Envelope) {
		env.Held, env.NextAttempt = false, q.now()
		c = q.classOf(env)
	}); err != nil {
		return err
	}
	q.mu.Lock()
	if e.state == held {
		e.class, e.state, e.flushed, e.statted, e.due = c, waiting, true, true, q.now()
		heap.Push(&q.heaps[c], e)
		q.kickLocked()
	}
	q.mu.Unlock()
	return nil
}

// Delete removes a message without delivering or bouncing it.
func (q *Scheduler) Delete(id string) error {
	e, err := q.lookup(id)
	if err != nil {
		return err
	}
	q.mu.Lock()
	if e.state == active {
		e.deleted = true // its attempt removes it when it ends
		q.mu.Unlock()
		return nil
	}
	q.dropLocked(e)
	q.mu.Unlock()
	q.Log.Info("deleted by the administrator", "queue_id", id)
	return q.Spool.Remove(id)
}

// Flush makes deferred messages (or one, given its ID) due now, whatever
// their recipients' next attempts. Dead destinations of flushed mail get
// their probe at once: one transaction, not the whole backlog at a
// destination that may still be down.
func (q *Scheduler) Flush(id string) error {
	if id != "" {
		if _, err := q.lookup(id); err != nil {
			return err
		}
	}
	q.init()
	q.indexOnce.Do(q.index)
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	for _, e := range q.entries {
		if id != "" && e.id != id {
			continue
		}
		switch e.state {
		case active:
			e.flushed = true // its attempt makes it due again at once
		case waiting:
			if d := e.parkedOn; d != nil && d.dead {
				d.deadUntil = now
				q.wakeAtLocked(d, now)
				continue
			}
			// statted: its file's time must not undo the flush.
			e.flushed, e.statted, e.due = true, true, now
			heap.Fix(&q.heaps[e.class], e.idx)
		}
	}
	q.kickLocked()
	return nil
}

func (q *Scheduler) updateFile(id string, f func(*envelope.Envelope)) error {
	env, err := q.Spool.Load(id)
	if err != nil {
		return err
	}
	f(env)
	return q.Spool.Update(env)
}

// Lock takes the spool's lock file, which the daemon holds while it runs:
// `mailfwd queue` changes the spool directly only when it gets the lock
// (no daemon), and asks the daemon otherwise.
func (s *Spool) Lock() (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(filepath.Dir(s.dir), "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// ControlSocket is where the running daemon listens for queue commands.
func (s *Spool) ControlSocket() string { return filepath.Join(filepath.Dir(s.dir), "control.sock") }
