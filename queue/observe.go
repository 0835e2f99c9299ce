package queue

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"time"
)

// Stats returns how many messages the scheduler holds (waiting for their
// next attempt or being delivered; held messages are not counted) and when
// the oldest of them arrived (zero when there are none).
func (q *Scheduler) Stats() (messages int, oldest time.Time) {
	q.init()
	q.mu.Lock()
	defer q.mu.Unlock()
	var first int64
	for _, e := range q.entries {
		if e.state == held {
			continue
		}
		messages++
		if e.received > 0 && (first == 0 || e.received < first) {
			first = e.received
		}
	}
	if first > 0 {
		oldest = time.Unix(0, first)
	}
	return messages, oldest
}

// DestinationState is what `mailfwd queue destinations` shows of one
// destination, like Postfix's qshape and qmgr's view of it.
type DestinationState struct {
	Destination string    `json:"destination"`
	External    bool      `json:"external,omitempty"`
	State       string    `json:"state"` // alive, dead, probing, paused
	Until       time.Time `json:"until,omitzero"`
	Concurrency float64   `json:"concurrency"`
	Max         int       `json:"max"`
	Active      int       `json:"active"`
	Queued      int       `json:"queued"`  // jobs waiting for a connection
	Parked      int       `json:"parked"`  // messages waiting for it to come back
	Backlog     int       `json:"backlog"` // messages whose mail went to it last
	Sent        int64     `json:"sent"`
	Deferred    int64     `json:"deferred"`
	LastError   string    `json:"last_error,omitempty"`
}

// Destinations is the state of every destination the scheduler knows,
// the busiest first.
func (q *Scheduler) Destinations() []DestinationState {
	q.init()
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.now()
	backlog := map[*dest]int{}
	for _, e := range q.entries {
		if e.dest != nil && e.state != held {
			backlog[e.dest]++
		}
	}
	out := make([]DestinationState, 0, len(q.dests))
	for _, d := range q.dests {
		st := DestinationState{Destination: d.key, External: d.external, State: "alive", Concurrency: d.window, Max: d.max,
			Active: d.active, Queued: len(d.queue), Parked: max(d.parkedCount, 0), Backlog: backlog[d],
			Sent: d.sent, Deferred: d.deferred, LastError: d.lastError}
		switch {
		case d.dead:
			st.State, st.Until = "dead", d.deadUntil
		case d.probing:
			st.State = "probing"
		case d.pausedUntil.After(now):
			st.State, st.Until = "paused", d.pausedUntil
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backlog != out[j].Backlog {
			return out[i].Backlog > out[j].Backlog
		}
		return out[i].Destination < out[j].Destination
	})
	return out
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
