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

// Hold stops delivery of a message until Release.
func (q *Scheduler) Hold(id string) error {
	q.init()
	q.load()
	if _, err := q.Spool.Load(id); err != nil {
		return fmt.Errorf("%w: %s", ErrNoMessage, id)
	}
	q.mu.Lock()
	q.held[id] = true
	busy := q.inflight[id]
	q.removeFromHeap(id)
	q.mu.Unlock()
	if busy {
		return nil // finish persists it
	}
	return q.updateFile(id, func(e *envelope.Envelope) { e.Held = true })
}

// Release resumes delivery of a held message, at once.
func (q *Scheduler) Release(id string) error {
	q.init()
	q.load()
	env, err := q.Spool.Load(id)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrNoMessage, id)
	}
	q.mu.Lock()
	delete(q.held, id)
	busy := q.inflight[id]
	q.mu.Unlock()
	if busy {
		return nil
	}
	env.Held = false
	env.NextAttempt = q.now()
	if err := q.Spool.Update(env); err != nil {
		return err
	}
	q.schedule(env, q.now())
	return nil
}

// Delete removes a message without delivering or bouncing it.
func (q *Scheduler) Delete(id string) error {
	q.init()
	q.load()
	if _, err := q.Spool.Load(id); err != nil {
		return fmt.Errorf("%w: %s", ErrNoMessage, id)
	}
	q.mu.Lock()
	busy := q.inflight[id]
	// A tombstone even when idle: the message may be on its way to a
	// worker, whose attempt must then not write it back.
	q.deleted[id] = true
	q.removeFromHeap(id)
	q.mu.Unlock()
	if busy {
		return nil // finish removes it
	}
	q.Log.Info("deleted by the administrator", "queue_id", id)
	return q.Spool.Remove(id)
}

// Flush makes deferred messages (or one, given its ID) due now.
func (q *Scheduler) Flush(id string) error {
	q.init()
	q.load()
	q.mu.Lock()
	found := id == ""
	now := q.now()
	for i := range q.pending {
		if id == "" || q.pending[i].env.ID == id {
			q.pending[i].at = now
			found = true
		}
	}
	heap.Init(&q.pending)
	for busy := range q.inflight {
		if id == "" || busy == id {
			q.flushed[busy] = true
			found = true
		}
	}
	q.mu.Unlock()
	if !found {
		return fmt.Errorf("%w (or held): %s", ErrNoMessage, id)
	}
	q.Kick()
	return nil
}

// removeFromHeap drops a scheduled message (q.mu held).
func (q *Scheduler) removeFromHeap(id string) {
	for i := range q.pending {
		if q.pending[i].env.ID == id {
			heap.Remove(&q.pending, i)
			delete(q.queued, id)
			return
		}
	}
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
