package routing

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

type slowSource struct {
	delay time.Duration
	err   error
}

func (s slowSource) Lookup(_ context.Context, key string) ([]Match, error) {
	time.Sleep(s.delay)
	if s.err != nil {
		return nil, s.err
	}
	if key == "known@example.com" {
		return []Match{{Value: "target@example.net"}}, nil
	}
	return nil, nil
}

func TestObservedTimesEachLookup(t *testing.T) {
	var durs []time.Duration
	var errs []error
	src := Observed(slowSource{delay: 5 * time.Millisecond}, func(d time.Duration, err error) {
		durs, errs = append(durs, d), append(errs, err)
	})
	ms, err := src.Lookup(context.Background(), "known@example.com")
	if err != nil || len(ms) != 1 || ms[0].Value != "target@example.net" {
		t.Fatalf("found: %v %v", ms, err)
	}
	if ms, err := src.Lookup(context.Background(), "nobody@example.com"); err != nil || len(ms) != 0 {
		t.Fatalf("not found: %v %v", ms, err)
	}
	if len(durs) != 2 || errs[0] != nil || errs[1] != nil {
		t.Fatalf("observed %v %v, want two lookups without error", durs, errs)
	}
	for _, d := range durs {
		if d < 5*time.Millisecond {
			t.Errorf("duration %v shorter than the lookup", d)
		}
	}

	down := fmt.Errorf("ldap://ldap1: %w", ErrUnavailable)
	var got error
	src = Observed(slowSource{err: down}, func(_ time.Duration, err error) { got = err })
	if _, err := src.Lookup(context.Background(), "x@example.com"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("error not passed through: %v", err)
	}
	if !errors.Is(got, ErrUnavailable) {
		t.Fatalf("observer got %v, want the lookup error", got)
	}
}

func TestObservedNilObserver(t *testing.T) {
	if Observed(slowSource{}, nil) != (slowSource{}) {
		t.Fatal("a nil observer should leave the source unwrapped")
	}
}
