package relay

import (
	"sync"
	"time"
)

// windowCounter counts events per key over a fixed window, bounded in
// memory: counts live in two generations (this window and the one before),
// a key's history is dropped in O(1) when its generation ages out, and a
// generation that fills up (max keys) ages out early. A count covers between
// one and two windows: it errs towards limiting.
type windowCounter struct {
	window time.Duration
	max    int
	now    func() time.Time

	mu        sync.Mutex
	start     time.Time // of cur
	cur, prev map[string]int
}

func newWindowCounter(window time.Duration, max int) *windowCounter {
	return &windowCounter{window: window, max: max, now: time.Now, cur: map[string]int{}, prev: map[string]int{}}
}

func (w *windowCounter) rotate(now time.Time) {
	switch d := now.Sub(w.start); {
	case d >= 2*w.window:
		w.prev, w.cur, w.start = map[string]int{}, map[string]int{}, now
	case d >= w.window || len(w.cur) >= w.max:
		w.prev, w.cur, w.start = w.cur, map[string]int{}, now
	}
}

// count returns key's events in the window.
func (w *windowCounter) count(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rotate(w.now())
	return w.cur[key] + w.prev[key]
}

// add counts one event for key and returns the count with it.
func (w *windowCounter) add(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.rotate(w.now())
	w.cur[key]++
	return w.cur[key] + w.prev[key]
}

// size is the number of keys held (tests).
func (w *windowCounter) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.cur) + len(w.prev)
}
