package dane

import (
	"reflect"
	"testing"
)

func TestUsable(t *testing.T) {
	p := newPKI(t, "mx.example.net", []string{"mx.example.net"}, false)
	s256, s512 := rec(3, 1, 1, p.leaf).Data, rec(3, 1, 2, p.leaf).Data
	tests := []struct {
		name string
		r    Record
		ok   bool
	}{
		{"3 1 1", Record{3, 1, 1, s256}, true},
		{"3 0 2", Record{3, 0, 2, s512}, true},
		{"2 0 1", rec(2, 0, 1, p.root), true},
		{"2 1 0", rec(2, 1, 0, p.root), true},
		{"3 0 0", rec(3, 0, 0, p.leaf), true},
		{"PKIX-TA", rec(0, 0, 1, p.root), false},
		{"PKIX-EE", rec(1, 1, 1, p.leaf), false},
		{"unknown usage", Record{4, 1, 1, s256}, false},
		{"unknown usage 255", Record{255, 1, 1, s256}, false},
		{"unknown selector", Record{3, 2, 1, s256}, false},
		{"unknown matching type", Record{3, 1, 3, s256}, false},
		{"SHA-256 of 31 bytes", Record{3, 1, 1, s256[:31]}, false},
		{"SHA-256 of 64 bytes", Record{3, 1, 1, s512}, false},
		{"SHA-512 of 32 bytes", Record{3, 1, 2, s256}, false},
		{"full, no data", Record{3, 1, 0, nil}, false},
		{"SHA-256, no data", Record{2, 0, 1, nil}, false},
	}
	var in, want []Record
	for _, tt := range tests {
		if got := len(Usable([]Record{tt.r})) == 1; got != tt.ok {
			t.Errorf("%s: usable %v, want %v (%s)", tt.name, got, tt.ok, unusable(tt.r))
		}
		in = append(in, tt.r)
		if tt.ok {
			want = append(want, tt.r)
		}
	}
	if got := Usable(in); !reflect.DeepEqual(got, want) {
		t.Errorf("Usable of all: %v, want %v in order", got, want)
	}
	if got := Usable(nil); got != nil {
		t.Errorf("Usable(nil) = %v", got)
	}
}

func TestRecordMatches(t *testing.T) {
	p := newPKI(t, "mx.example.net", []string{"mx.example.net"}, false)
	for _, sel := range []uint8{SelectorCert, SelectorSPKI} {
		for _, mt := range []uint8{MatchFull, MatchSHA256, MatchSHA512} {
			r := rec(3, sel, mt, p.leaf)
			if !r.matches(p.leaf) || r.matches(p.inter) {
				t.Errorf("%v: matches leaf %v, intermediate %v", r, r.matches(p.leaf), r.matches(p.inter))
			}
		}
	}
	// A PKIX record holding the right digest still never matches.
	if r := rec(1, 1, 1, p.leaf); r.matches(p.leaf) {
		t.Errorf("%v matched", r)
	}
}
