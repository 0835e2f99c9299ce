package routing_test

// The expansion engine over a real directory source: an external test,
// since routing/directory imports routing.

import (
	"context"
	"errors"
	"os"
	"reflect"
	"testing"

	"mailfwd/routing"
	"mailfwd/routing/directory"
)

func seedSource(t *testing.T) *directory.LDIFSource {
	t.Helper()
	b, err := os.ReadFile("../deploy/seed.ldif")
	if err != nil {
		t.Fatal(err)
	}
	s, err := directory.NewLDIFBytes(b, directory.MailRecipientSchema)
	if err != nil {
		t.Fatalf("seed.ldif: %v", err)
	}
	return s
}

// The three scenarios of the seed directory, through the real LDIF source.
func TestExpandSeedScenarios(t *testing.T) {
	e := &routing.Expander{Source: seedSource(t), Limits: routing.PostfixLimits}
	tests := []struct {
		addr    string
		want    []string
		wantErr error
	}{
		// mailAlternateAddress → mailForwardingAddress, which is the
		// entry's own mail and so maps to itself: final.
		{addr: "old.address@domain.com", want: []string{"new.address@domain.ro"}},
		{addr: "new.address@domain.ro", want: []string{"new.address@domain.ro"}},
		// Forwarded outside: gmail.com is in no entry, so it is final.
		{addr: "internal.user@company.com", want: []string{"external.user@gmail.com"}},
		// Three alternates of one entry forwarding to its own mail.
		{addr: "sales@company.com", want: []string{"central@company.com"}},
		{addr: "info@company.com", want: []string{"central@company.com"}},
		{addr: "support@company.com", want: []string{"central@company.com"}},
		{addr: "central@company.com", want: []string{"central@company.com"}},
		{addr: "SALES@Company.COM", want: []string{"central@company.com"}},
		// Not in the directory at all.
		{addr: "nobody@company.com", wantErr: routing.ErrNotFound},
		{addr: "external.user@gmail.com", wantErr: routing.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, err := e.Expand(context.Background(), tt.addr)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Expand(%q) = %q, %v; want error %v", tt.addr, got, err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("Expand(%q) returned %q along with an error", tt.addr, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Expand(%q): %v", tt.addr, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Expand(%q) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}
