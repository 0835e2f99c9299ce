package queue

import (
	"strings"
	"testing"
	"time"
)

// limited is q with each limit it leaves unset given a test value: the
// scheduler has no defaults of its own (Scheduler.check), and most tests
// are about something else. The values are the shipped defaults' order
// of magnitude, so that no test trips a limit it does not set.
func limited(q *Scheduler) *Scheduler {
	set := func(v *int, n int) {
		if *v == 0 {
			*v = n
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	set(&q.Workers, 16)
	set(&q.ExternalWorkers, 100)
	dur(&q.Retry.Min, 10*time.Second)
	dur(&q.Retry.Max, 5*time.Minute)
	dur(&q.ExternalRetry.Min, 5*time.Minute)
	dur(&q.ExternalRetry.Max, 4*time.Hour)
	dur(&q.Lifetime, 5*24*time.Hour)
	dur(&q.DelayWarning, 4*time.Hour)
	set(&q.DestinationConcurrency, 20)
	set(&q.InitialConcurrency, 5)
	set(&q.RecipientLimit, 100)
	set(&q.ActiveLimit, 5000)
	set(&q.DeadAfter, 3)
	return q
}

// The scheduler refuses to run with a limit unset rather than invent one.
func TestSchedulerRefusesUnsetLimits(t *testing.T) {
	q := &Scheduler{Workers: 2}
	err := q.check()
	if err == nil || !strings.Contains(err.Error(), "Scheduler.Lifetime") || strings.Contains(err.Error(), "Scheduler.Workers") {
		t.Errorf("check of a scheduler with only Workers: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("init of a scheduler with unset limits did not panic")
		}
	}()
	q.init()
}

func TestLimitedSchedulerPasses(t *testing.T) {
	if err := limited(&Scheduler{}).check(); err != nil {
		t.Error(err)
	}
}
