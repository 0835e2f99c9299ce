package dane

import "testing"

func TestDescribe(t *testing.T) {
	p := newPKI(t, "mx.example.net", []string{"mx.example.net"}, false)
	ee, ta, pkix := rec(3, 1, 1, p.leaf), rec(2, 0, 1, p.root), rec(0, 0, 1, p.root)
	short := Record{3, 1, 1, ee.Data[:31]}
	tests := []struct {
		records []Record
		auth    bool
		want    string
	}{
		{nil, false, "DANE: no TLSA records"},
		{[]Record{ee, ta}, true, "DANE: 2 usable TLSA records (3 1 1, 2 0 1)"},
		{[]Record{ee}, true, "DANE: 1 usable TLSA record (3 1 1)"},
		{[]Record{pkix, ee}, true, "DANE: 1 usable TLSA record (3 1 1), 1 unusable (0 0 1: PKIX usage)"},
		{[]Record{pkix, short}, false, "DANE: 2 TLSA records, none usable (0 0 1: PKIX usage, 3 1 1: 31-byte digest, want 32): TLS required, not authenticated"},
		{[]Record{{3, 2, 1, ee.Data}}, false, "DANE: 1 TLSA record, none usable (3 2 1: unknown selector): TLS required, not authenticated"},
	}
	for _, tt := range tests {
		r := Evaluate(tt.records)
		if got := Describe(tt.records); got != tt.want || r.String() != tt.want {
			t.Errorf("Describe(%v) = %q, want %q", tt.records, got, tt.want)
		}
		if r.Authenticated() != tt.auth {
			t.Errorf("Evaluate(%v).Authenticated() = %v", tt.records, r.Authenticated())
		}
	}
	// Usable records alone, as callers that kept only those pass them.
	if got := (Result{Usable: []Record{ee, ta}}).String(); got != "DANE: 2 usable TLSA records (3 1 1, 2 0 1)" {
		t.Errorf("Result{Usable}.String() = %q", got)
	}
}
