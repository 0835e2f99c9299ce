package srs

import (
	"errors"
	"strings"
	"testing"
)

func TestSRSObserve(t *testing.T) {
	var got []string
	s := testSRS()
	s.Observe = func(op, result string) { got = append(got, op+":"+result) }
	fwd, _ := s.fwd("alice@example.com")
	s.fwd("")
	s.fwd("no-at-sign")
	s.fwd(strings.Repeat("a", 60) + "@example.com")
	s.rev(fwd)
	s.rev("alice@example.com")
	s.rev(strings.Replace(fwd, "gIVm", "zzzz", 1))
	s.at(srsTestDay.AddDate(0, 0, 30)).rev(fwd)
	s.rev("SRS0=gfkj@x@srs.example.net")
	s.legacy(srsTestDay).rev("SRS0=gfkj=KH=example.com=alice@srs.example.net")
	st := newMemStore()
	s.Store = st
	db, _ := s.fwd(strings.Repeat("a", 60) + "@example.com")
	s.rev(db)
	st.m = map[string]string{}
	s.rev(db)
	st.err = errors.New("down")
	s.rev(db)
	want := []string{"forward:ok", "forward:unchanged", "forward:malformed", "forward:too_long",
		"reverse:ok", "reverse:not_srs", "reverse:bad_hash", "reverse:expired", "reverse:malformed", "reverse:legacy",
		"forward:database", "reverse:database", "reverse:unknown_key", "reverse:store_error"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("observed\n %v\nwant\n %v", got, want)
	}
	if r := Result(false, errors.New("srs: no secrets")); r != "error" {
		t.Errorf("settings error: %q", r)
	}
}
