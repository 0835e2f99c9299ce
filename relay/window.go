package relay

import (
	"sync"
	"time"
)

// windowCounter counts events per key over a fixed window, bounded in
// memory: counts live in two generations (this window and the one before),
// a key's history is dropped in O(1) when its generation ages out, and a
// generation that fills up (max keys) ages out early. A count is the
// sliding-window estimate over the last window.
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

// count returns key's events in the last window: those of this
// generation, and the part of the previous one's that falls in it (the
// sliding-window estimate).
func (w *windowCounter) count(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.countLocked(key, w.now())
}

func (w *windowCounter) countLocked(key string, now time.Time) int {
	w.rotate(now)
	frac := 1 - float64(now.Sub(w.start))/float64(w.window)
	return w.cur[key] + int(float64(w.prev[key])*max(frac, 0)+0.5)
}

// add counts one event for key and returns the count with it.
func (w *windowCounter) add(key string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	w.rotate(now)
	w.cur[key]++
	return w.countLocked(key, now)
}

// size is the number of keys held (tests).
func (w *windowCounter) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.cur) + len(w.prev)
}
