package queue

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Stats returns how many messages the scheduler holds (waiting for their
// next attempt or being delivered; held messages are not counted) and when
// the oldest of them arrived (zero when there are none).
func (q *Scheduler) Stats() (messages int, oldest time.Time) {
	q.init()
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, t := range q.queued {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	return len(q.queued), oldest
}

// schedulerStuck is how long Health waits for the scheduler's lock: every
// holder of it only moves a few entries, so a wait this long means a
// deadlock.
const schedulerStuck = 2 * time.Second

// Health reports what can be seen of the scheduler from outside: Run is
// running (its workers and dispatch loop are up), and the lock every queue
// operation takes can be had.
func (q *Scheduler) Health() error {
	if !q.running.Load() {
		return errors.New("scheduler is not running")
	}
	deadline := time.Now().Add(schedulerStuck)
	for !q.mu.TryLock() {
		if time.Now().After(deadline) {
			return fmt.Errorf("scheduler is stuck: its lock has been held for over %s", schedulerStuck)
		}
		time.Sleep(time.Millisecond)
	}
	q.mu.Unlock()
	return nil
}

// CheckWritable writes, fsyncs and removes a small temp file in the spool,
// as a commit would: it fails when the disk is full, read-only or not ours
// (the relay then answers 452 4.3.1 to every DATA). A crash in between
// leaves a temp file that the next start removes.
func (s *Spool) CheckWritable() error {
	f, err := os.CreateTemp(s.dir, "check-*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("spool %s is not writable: %w", s.dir, err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write([]byte("ok\n"))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("spool %s is not writable: %w", s.dir, err)
	}
	return nil
}

func (q *Scheduler) observe(event, result string) {
	if q.Observe != nil {
		q.Observe(event, result)
	}
}
