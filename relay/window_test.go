package relay

import (
	"fmt"
	"testing"
	"time"
)

func TestWindowCounter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := newWindowCounter(time.Hour, 1000)
	w.now = func() time.Time { return now }
	for i := 1; i <= 5; i++ {
		if n := w.add("a"); n != i {
			t.Fatalf("add %d: %d", i, n)
		}
	}
	now = now.Add(59 * time.Minute)
	if n := w.count("a"); n != 5 {
		t.Errorf("within the window: %d", n)
	}
	now = now.Add(2 * time.Minute) // next window: the last one still counts
	if n := w.add("a"); n != 6 {
		t.Errorf("next window: %d", n)
	}
	now = now.Add(61 * time.Minute) // two windows on: only the last event
	if n := w.count("a"); n != 1 {
		t.Errorf("a window later: %d", n)
	}
	now = now.Add(3 * time.Hour)
	if n := w.count("a"); n != 0 {
		t.Errorf("long after: %d", n)
	}
	// Bounded: a flood of keys never holds more than two generations.
	for i := range 10_000 {
		w.add(fmt.Sprint("k", i))
	}
	if s := w.size(); s > 2000 {
		t.Errorf("%d keys held, want <= 2000", s)
	}
}
