package dane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

func TestVerify(t *testing.T) {
	mx := []string{"mx1.example.net", "example.net"}
	p := newPKI(t, "mx1.example.net", []string{"mx1.example.net"}, false)
	old := newPKI(t, "mx1.example.net", []string{"mx1.example.net"}, true)
	wild := newPKI(t, "*.example.net", []string{"*.example.net"}, false)
	other := newPKI(t, "mx.elsewhere.test", []string{"mx.elsewhere.test"}, false)
	domain := newPKI(t, "example.net", []string{"example.net"}, false)
	cnOnly := newPKI(t, "mx1.example.net", nil, false)
	stray, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	strayKey, err := x509.MarshalPKIXPublicKey(&stray.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	truncated := rec(3, 1, 1, p.leaf)
	truncated.Data = truncated.Data[:31]

	tests := []struct {
		name    string
		p       pki
		chain   []*x509.Certificate // nil: p.chain()
		records []Record
		names   []string // nil: mx
		tls12   bool
		want    error // nil: verified
		msg     string
	}{
		// DANE-EE(3): the leaf only, any name, any date (RFC 7672 §3.1.1).
		{name: "3 1 1", p: p, records: []Record{rec(3, 1, 1, p.leaf)}},
		{name: "3 0 1", p: p, records: []Record{rec(3, 0, 1, p.leaf)}},
		{name: "3 1 2 (SHA-512)", p: p, records: []Record{rec(3, 1, 2, p.leaf)}},
		{name: "3 1 0 (full SPKI)", p: p, records: []Record{rec(3, 1, 0, p.leaf)}},
		{name: "3 0 0 (full certificate)", p: p, records: []Record{rec(3, 0, 0, p.leaf)}},
		{name: "3 1 1 over TLS 1.2", p: p, records: []Record{rec(3, 1, 1, p.leaf)}, tls12: true},
		{name: "3 1 1, leaf alone", p: p, chain: []*x509.Certificate{p.leaf}, records: []Record{rec(3, 1, 1, p.leaf)}},
		{name: "3 1 1 mismatch", p: p, records: []Record{rec(3, 1, 1, other.leaf)},
			want: ErrNoMatch, msg: "DANE: no TLSA record matched the certificate of mx1.example.net (records 3 1 1)"},
		{name: "3 1 1 mismatch over TLS 1.2", p: p, records: []Record{rec(3, 1, 1, other.leaf)}, tls12: true, want: ErrNoMatch},
		{name: "3 1 1 of the issuer is not the leaf", p: p, records: []Record{rec(3, 1, 1, p.inter)}, want: ErrNoMatch},
		{name: "3 1 1, leaf names neither name", p: other, records: []Record{rec(3, 1, 1, other.leaf)}},
		{name: "3 1 1, expired leaf", p: old, records: []Record{rec(3, 1, 1, old.leaf)}},

		// DANE-TA(2): an issuer, then path validation and names (§3.2).
		{name: "2 0 1 on the root in the chain", p: p, records: []Record{rec(2, 0, 1, p.root)}},
		{name: "2 1 1 on the root in the chain", p: p, records: []Record{rec(2, 1, 1, p.root)}},
		{name: "2 0 1 on the root, expired leaf", p: old, records: []Record{rec(2, 0, 1, old.root)},
			want: ErrNotTrusted, msg: "DANE: TLSA record 2 0 1 matched an issuer of the certificate of mx1.example.net, but the certificate does not chain to it: x509: certificate has expired"},
		{name: "2 0 1 on the root, leaf names neither name", p: other, records: []Record{rec(2, 0, 1, other.root)},
			want: ErrHostMismatch, msg: "DANE: TLSA record 2 0 1 matched, but the certificate of mx1.example.net names none of mx1.example.net, example.net"},
		{name: "2 0 1 on the intermediate", p: p, chain: p.noRoot(), records: []Record{rec(2, 0, 1, p.inter)}},
		{name: "2 1 2 on the intermediate", p: p, records: []Record{rec(2, 1, 2, p.inter)}},
		{name: "2 0 1 on the root, chain of another CA", p: other, chain: []*x509.Certificate{other.leaf, other.inter, p.root},
			records: []Record{rec(2, 0, 1, p.root)}, names: []string{"mx.elsewhere.test"}, want: ErrNotTrusted},
		{name: "2 0 1 on the leaf is no trust anchor", p: p, records: []Record{rec(2, 0, 1, p.leaf)}, want: ErrNoMatch},
		{name: "2 0 1 on a root not sent", p: p, chain: p.noRoot(), records: []Record{rec(2, 0, 1, p.root)}, want: ErrNoMatch},
		{name: "2 0 0 on a root not sent", p: p, chain: p.noRoot(), records: []Record{rec(2, 0, 0, p.root)}},
		{name: "2 1 0, bare root key not sent", p: p, chain: p.noRoot(), records: []Record{rec(2, 1, 0, p.root)}},
		{name: "2 1 0, bare intermediate key not sent", p: p, chain: []*x509.Certificate{p.leaf}, records: []Record{rec(2, 1, 0, p.inter)}},
		{name: "2 1 0, bare key of nothing", p: p, chain: p.noRoot(), records: []Record{{2, 1, 0, strayKey}}, want: ErrNoMatch},
		{name: "2 1 0, bare root key, expired leaf", p: old, chain: old.noRoot(), records: []Record{rec(2, 1, 0, old.root)}, want: ErrNotTrusted},
		{name: "2 1 0, bare root key, leaf names neither name", p: other, chain: other.noRoot(), records: []Record{rec(2, 1, 0, other.root)}, want: ErrHostMismatch},
		{name: "2 1 0 on the leaf's own key", p: p, chain: p.noRoot(), records: []Record{rec(2, 1, 0, p.leaf)}, want: ErrNoMatch},

		// Reference identifiers (§3.2.2, RFC 6125 wildcards).
		{name: "wildcard leaf, MX mx1.example.net", p: wild, records: []Record{rec(2, 0, 1, wild.root)}},
		{name: "wildcard covers one label", p: wild, records: []Record{rec(2, 0, 1, wild.root)},
			names: []string{"a.mx1.example.net", "example.org"}, want: ErrHostMismatch},
		{name: "wildcard is not the bare domain", p: wild, records: []Record{rec(2, 0, 1, wild.root)},
			names: []string{"mx.example.org", "example.net"}, want: ErrHostMismatch},
		{name: "leaf names the next-hop domain", p: domain, records: []Record{rec(2, 0, 1, domain.root)}},
		{name: "MX name with a trailing dot", p: p, records: []Record{rec(2, 0, 1, p.root)}, names: []string{"MX1.example.net.", "example.net."}},
		{name: "CNAME-expanded name first", p: p, records: []Record{rec(2, 0, 1, p.root)}, names: []string{"mx1.example.net", "alias.example.org", "example.org"}},
		{name: "subject CN without DNS SANs", p: cnOnly, records: []Record{rec(2, 0, 1, cnOnly.root)}},
		{name: "no reference identifiers", p: p, records: []Record{rec(2, 0, 1, p.root)}, names: []string{},
			want: ErrHostMismatch, msg: "DANE: TLSA record 2 0 1 matched, but there is no name to check the certificate of the server against"},

		// RRsets: any usable record verifying is enough.
		{name: "one unusable, one usable", p: p, records: []Record{rec(1, 1, 1, p.leaf), truncated, rec(3, 1, 1, p.leaf)}},
		{name: "unusable records only", p: p, records: []Record{rec(1, 1, 1, p.leaf), rec(0, 0, 1, p.root), truncated},
			want: ErrNoMatch, msg: "DANE: no usable TLSA record to verify mx1.example.net with"},
		{name: "DANE-EE mismatch, DANE-TA match", p: p, records: []Record{rec(3, 1, 1, other.leaf), rec(2, 0, 1, p.root)}},
		{name: "DANE-TA name mismatch, DANE-EE match", p: other, records: []Record{rec(2, 0, 1, other.root), rec(3, 1, 1, other.leaf)}},
		{name: "name mismatch reported over chain failure", p: other, records: []Record{rec(2, 0, 1, p.root), rec(2, 0, 1, other.root)},
			chain: []*x509.Certificate{other.leaf, other.inter, other.root, p.root}, want: ErrHostMismatch},
		{name: "no record matched", p: p, records: []Record{rec(3, 1, 1, other.leaf), rec(2, 0, 1, other.root)},
			want: ErrNoMatch, msg: "DANE: no TLSA record matched the certificate of mx1.example.net (records 3 1 1, 2 0 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chain, names := tt.chain, tt.names
			if chain == nil {
				chain = tt.p.chain()
			}
			if names == nil {
				names = mx
			}
			base := &tls.Config{MinVersion: tls.VersionTLS12}
			if tt.tls12 {
				base.MaxVersion = tls.VersionTLS12
			}
			sni, err := handshake(t, tt.p.leafKey, chain, Config(base, tt.records, names))
			check(t, "handshake", err, tt.want, tt.msg)
			if len(names) > 0 && sni != strings.TrimSuffix(names[0], ".") {
				t.Errorf("SNI %q, want %q", sni, names[0])
			}
			check(t, "Verify", Verify(chain, tt.records, names), tt.want, tt.msg)
		})
	}
}

// check compares err with the wanted kind and message prefix.
func check(t *testing.T, what string, err, want error, msg string) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Errorf("%s: %v, want verified", what, err)
	case want == nil:
	case !errors.Is(err, want):
		t.Errorf("%s: %v, want %v", what, err, want)
	case !strings.HasPrefix(err.Error(), msg):
		t.Errorf("%s: %q, want it to start %q", what, err, msg)
	}
	for _, other := range []error{ErrNoMatch, ErrNotTrusted, ErrHostMismatch} {
		if other != want && errors.Is(err, other) {
			t.Errorf("%s: %v is also %v", what, err, other)
		}
	}
}

func TestVerifyErrors(t *testing.T) {
	p := newPKI(t, "mx1.example.net", []string{"mx1.example.net"}, false)
	old := newPKI(t, "mx1.example.net", []string{"mx1.example.net"}, true)
	err := Verify(nil, []Record{rec(3, 1, 1, p.leaf)}, []string{"mx1.example.net"})
	check(t, "no certificate", err, ErrNoMatch, "DANE: mx1.example.net sent no certificate")

	// The caller tells certificate-expired from other failures (TLS-RPT).
	err = Verify(old.chain(), []Record{rec(2, 0, 1, old.root)}, []string{"mx1.example.net"})
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.Expired {
		t.Errorf("expired leaf under DANE-TA: %v, want it to wrap x509.Expired", err)
	}
}
