package routing

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeSource is a map-based directory: keys match case-insensitively, as
// 389-DS's caseIgnore matching rules do. failOn makes the lookup of that
// address fail with an error wrapping ErrUnavailable.
type fakeSource struct {
	m      map[string][]string
	failOn map[string]bool

	mu    sync.Mutex
	calls []string
}

func newFake(m map[string][]string) *fakeSource {
	f := &fakeSource{m: map[string][]string{}, failOn: map[string]bool{}}
	for k, v := range m {
		f.m[strings.ToLower(k)] = v
	}
	return f
}

func (f *fakeSource) Lookup(ctx context.Context, addr string) ([]Match, error) {
	f.mu.Lock()
	f.calls = append(f.calls, addr)
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if f.failOn[strings.ToLower(addr)] {
		return nil, fmt.Errorf("%w: fake server down while looking up %s", ErrUnavailable, addr)
	}
	// Return a copy, as a real source does: the expander must not be able
	// to alter the directory.
	var out []Match
	for _, v := range f.m[strings.ToLower(addr)] {
		out = append(out, Match{Value: v, Source: "fake"})
	}
	return out, nil
}

func (f *fakeSource) count(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.EqualFold(c, addr) {
			n++
		}
	}
	return n
}

func TestExpand(t *testing.T) {
	small := Limits{Recursion: 5, Expansion: 10, AddressLength: 100}
	tests := []struct {
		name    string
		dir     map[string][]string
		failOn  []string
		limits  Limits
		addr    string
		want    []string
		wantErr error
		// lookups: address → how many times the source must have been asked
		lookups map[string]int
	}{
		{
			name: "fan-out keeps result order",
			dir:  map[string][]string{"a@x.com": {"b@x.com", "c@x.com", "d@x.com"}},
			addr: "a@x.com",
			want: []string{"b@x.com", "c@x.com", "d@x.com"},
		},
		{
			name:    "chain a→b→c",
			dir:     map[string][]string{"a@x.com": {"b@x.com"}, "b@x.com": {"c@x.com"}},
			addr:    "a@x.com",
			want:    []string{"c@x.com"},
			lookups: map[string]int{"a@x.com": 1, "b@x.com": 1, "c@x.com": 1},
		},
		{
			// Postfix cleanup order: the first result replaces the address
			// in place and is expanded at once; the others go to the end.
			// a → b,c; b → d,e; c → f gives d (in b's place, in a's
			// place), then f (c's first result in c's place), then e.
			name: "first result in place, others appended",
			dir: map[string][]string{
				"a@x.com": {"b@x.com", "c@x.com"},
				"b@x.com": {"d@x.com", "e@x.com"},
				"c@x.com": {"f@x.com"},
			},
			addr: "a@x.com",
			want: []string{"d@x.com", "f@x.com", "e@x.com"},
		},
		{
			name: "self-map first among several",
			dir:  map[string][]string{"a@x.com": {"a@x.com", "b@x.com"}},
			addr: "a@x.com",
			want: []string{"a@x.com", "b@x.com"},
			// a is final after its first lookup and not asked again.
			lookups: map[string]int{"a@x.com": 1, "b@x.com": 1},
		},
		{
			name:    "self-map last among several",
			dir:     map[string][]string{"a@x.com": {"b@x.com", "a@x.com"}},
			addr:    "a@x.com",
			want:    []string{"b@x.com", "a@x.com"},
			lookups: map[string]int{"a@x.com": 1, "b@x.com": 1},
		},
		{
			name:    "self-map is case-insensitive and keeps the directory's spelling",
			dir:     map[string][]string{"a@x.com": {"A@X.com", "b@x.com"}},
			addr:    "a@x.com",
			want:    []string{"A@X.com", "b@x.com"},
			lookups: map[string]int{"a@x.com": 1},
		},
		{
			name:    "self-map of a differently spelt input",
			dir:     map[string][]string{"a@x.com": {"a@x.com"}},
			addr:    "A@X.COM",
			want:    []string{"a@x.com"},
			lookups: map[string]int{"a@x.com": 1},
		},
		{
			name: "result spelling kept",
			dir:  map[string][]string{"a@x.com": {"Bob.Smith@Example.ORG"}},
			addr: "a@x.com",
			want: []string{"Bob.Smith@Example.ORG"},
		},
		{
			// x@y.com is reached through b and, spelt differently, through
			// c; the first in expansion order wins.
			name: "dedup across branches, first wins",
			dir: map[string][]string{
				"a@x.com": {"b@x.com", "c@x.com"},
				"b@x.com": {"x@y.com"},
				"c@x.com": {"X@Y.COM", "z@y.com"},
			},
			addr: "a@x.com",
			want: []string{"x@y.com", "z@y.com"},
		},
		{
			name: "dedup of repeated results",
			dir:  map[string][]string{"a@x.com": {"b@x.com", "B@x.com", "c@x.com", "b@X.COM"}},
			addr: "a@x.com",
			want: []string{"b@x.com", "c@x.com"},
		},
		{
			// Two branches converging on a self-mapping address.
			name: "dedup of a shared self-mapping target",
			dir: map[string][]string{
				"list@x.com":    {"a@x.com", "b@x.com"},
				"a@x.com":       {"central@x.com"},
				"b@x.com":       {"central@x.com"},
				"central@x.com": {"central@x.com"},
			},
			addr: "list@x.com",
			want: []string{"central@x.com"},
		},
		{
			// U-label and A-label forms of one domain are one recipient.
			name: "dedup compares domains in A-label form",
			dir:  map[string][]string{"a@x.com": {"u@bücher.example", "u@xn--bcher-kva.example"}},
			addr: "a@x.com",
			want: []string{"u@bücher.example"},
		},
		{
			name:    "loop without self-map hits the recursion limit",
			dir:     map[string][]string{"a@x.com": {"b@x.com"}, "b@x.com": {"a@x.com"}},
			limits:  small,
			addr:    "a@x.com",
			wantErr: ErrExpansionLimit,
			// Recursion 5 allows exactly 5 lookups for one slot.
			lookups: map[string]int{"a@x.com": 3, "b@x.com": 2},
		},
		{
			// no defaults of its own: the wiring passes the configured ones
			name:    "zero Limits are refused before any lookup",
			dir:     map[string][]string{"a@x.com": {"b@x.com"}, "b@x.com": {"a@x.com"}},
			addr:    "a@x.com",
			wantErr: errNoLimits,
			lookups: map[string]int{},
		},
		{
			// a→b→c costs three lookups of one slot (the last finds
			// nothing): Recursion 3 is enough, 2 is not.
			name:   "recursion limit: exactly enough",
			dir:    map[string][]string{"a@x.com": {"b@x.com"}, "b@x.com": {"c@x.com"}},
			limits: Limits{Recursion: 3, Expansion: 10, AddressLength: 100},
			addr:   "a@x.com",
			want:   []string{"c@x.com"},
		},
		{
			name:    "recursion limit: one short",
			dir:     map[string][]string{"a@x.com": {"b@x.com"}, "b@x.com": {"c@x.com"}},
			limits:  Limits{Recursion: 2, Expansion: 10, AddressLength: 100},
			addr:    "a@x.com",
			wantErr: ErrExpansionLimit,
		},
		{
			name:   "self-map needs only one lookup",
			dir:    map[string][]string{"a@x.com": {"a@x.com"}},
			limits: Limits{Recursion: 1, Expansion: 10, AddressLength: 100},
			addr:   "a@x.com",
			want:   []string{"a@x.com"},
		},
		{
			name:    "fan-out beyond the expansion limit",
			dir:     map[string][]string{"a@x.com": {"b@x.com", "c@x.com", "d@x.com", "e@x.com"}},
			limits:  Limits{Recursion: 5, Expansion: 3, AddressLength: 100},
			addr:    "a@x.com",
			wantErr: ErrExpansionLimit,
		},
		{
			name:   "fan-out exactly at the expansion limit",
			dir:    map[string][]string{"a@x.com": {"b@x.com", "c@x.com", "d@x.com"}},
			limits: Limits{Recursion: 5, Expansion: 3, AddressLength: 100},
			addr:   "a@x.com",
			want:   []string{"b@x.com", "c@x.com", "d@x.com"},
		},
		{
			// 2 then 3 then 4 addresses: the limit is on the list, over
			// all levels.
			name: "nested fan-out beyond the expansion limit",
			dir: map[string][]string{
				"a@x.com": {"b@x.com", "c@x.com"},
				"b@x.com": {"d@x.com", "e@x.com"},
				"c@x.com": {"f@x.com", "g@x.com"},
			},
			limits:  Limits{Recursion: 5, Expansion: 3, AddressLength: 100},
			addr:    "a@x.com",
			wantErr: ErrExpansionLimit,
		},
		{
			// Postfix counts the list before de-duplication.
			name:    "duplicates count towards the expansion limit",
			dir:     map[string][]string{"a@x.com": {"b@x.com", "b@x.com", "b@x.com", "b@x.com"}},
			limits:  Limits{Recursion: 5, Expansion: 3, AddressLength: 100},
			addr:    "a@x.com",
			wantErr: ErrExpansionLimit,
		},
		{
			name:    "result longer than the address length limit",
			dir:     map[string][]string{"a@x.com": {"b@x.com", "much.too.long@x.com"}},
			limits:  Limits{Recursion: 5, Expansion: 10, AddressLength: 10},
			addr:    "a@x.com",
			wantErr: ErrExpansionLimit,
		},
		{
			name:   "result exactly at the address length limit",
			dir:    map[string][]string{"a@x.com": {"bcd@x.com1"}}, // 10 octets
			limits: Limits{Recursion: 5, Expansion: 10, AddressLength: 10},
			addr:   "a@x.com",
			want:   []string{"bcd@x.com1"},
		},
		{
			name:    "not in the directory",
			dir:     map[string][]string{"a@x.com": {"b@x.com"}},
			addr:    "nobody@x.com",
			wantErr: ErrNotFound,
		},
		{
			name:    "empty directory",
			addr:    "a@x.com",
			wantErr: ErrNotFound,
		},
		{
			name:    "source fails on the second hop",
			dir:     map[string][]string{"a@x.com": {"b@x.com"}, "b@x.com": {"c@x.com"}},
			failOn:  []string{"b@x.com"},
			addr:    "a@x.com",
			wantErr: ErrUnavailable,
		},
		{
			name:    "source fails on an appended branch",
			dir:     map[string][]string{"a@x.com": {"b@x.com", "c@x.com", "d@x.com"}},
			failOn:  []string{"c@x.com"},
			addr:    "a@x.com",
			wantErr: ErrUnavailable,
		},
		{
			name:    "source fails on the first lookup",
			failOn:  []string{"a@x.com"},
			addr:    "a@x.com",
			wantErr: ErrUnavailable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFake(tt.dir)
			for _, a := range tt.failOn {
				src.failOn[strings.ToLower(a)] = true
			}
			e := &Expander{Source: src, Limits: tt.limits}
			if tt.limits == (Limits{}) && tt.wantErr != errNoLimits {
				e.Limits = small
			}
			got, err := e.Expand(context.Background(), tt.addr)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Expand(%q) = %q, %v; want error %v", tt.addr, got, err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("Expand(%q) returned partial results %q with its error", tt.addr, got)
				}
				for _, other := range []error{ErrNotFound, ErrExpansionLimit, ErrUnavailable} {
					if other != tt.wantErr && errors.Is(err, other) {
						t.Errorf("error %v also matches %v", err, other)
					}
				}
			} else {
				if err != nil {
					t.Fatalf("Expand(%q): %v", tt.addr, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("Expand(%q) = %q, want %q", tt.addr, got, tt.want)
				}
			}
			for a, n := range tt.lookups {
				if c := src.count(a); c != n {
					t.Errorf("%s looked up %d times, want %d (calls %q)", a, c, n, src.calls)
				}
			}
		})
	}
}

type ctxKey struct{}

// ctxSource records the context it was given.
type ctxSource struct {
	fakeSource
	seen []any
}

func (s *ctxSource) Lookup(ctx context.Context, addr string) ([]Match, error) {
	s.seen = append(s.seen, ctx.Value(ctxKey{}))
	return s.fakeSource.Lookup(ctx, addr)
}

func TestExpandPassesContext(t *testing.T) {
	dir := map[string][]string{"a@x.com": {"b@x.com", "c@x.com"}, "b@x.com": {"d@x.com"}}

	t.Run("every lookup gets the caller's context", func(t *testing.T) {
		src := &ctxSource{fakeSource: *newFake(dir)}
		e := &Expander{Source: src, Limits: PostfixLimits}
		ctx := context.WithValue(context.Background(), ctxKey{}, "marker")
		if _, err := e.Expand(ctx, "a@x.com"); err != nil {
			t.Fatal(err)
		}
		if len(src.seen) != 4 { // a, b, d, c
			t.Errorf("%d lookups, want 4", len(src.seen))
		}
		for i, v := range src.seen {
			if v != "marker" {
				t.Errorf("lookup %d got context value %v", i, v)
			}
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		src := newFake(dir)
		e := &Expander{Source: src, Limits: PostfixLimits}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		got, err := e.Expand(ctx, "a@x.com")
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Expand with cancelled context = %q, %v; want context.Canceled wrapped", got, err)
		}
		if got != nil {
			t.Errorf("partial results %q", got)
		}
	})
}
