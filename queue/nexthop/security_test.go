package nexthop

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"mailfwd/queue/nexthop/mtasts"
	"mailfwd/queue/nexthop/resolve"
)

// tlsaDNS answers TLSA lookups from a map; hosts in fail are SERVFAIL.
type tlsaDNS struct {
	fakeDNS
	tlsa map[string]resolve.TLSAResult
	bad  map[string]bool
}

func (d *tlsaDNS) LookupTLSA(_ context.Context, _ int, host string) (resolve.TLSAResult, error) {
	if d.bad[host] {
		return resolve.TLSAResult{}, fmt.Errorf("%s: %w", host, resolve.ErrTemporary)
	}
	if r, ok := d.tlsa[host]; ok {
		return r, nil
	}
	return resolve.TLSAResult{}, notFound(host)
}

// The decision table of security.go: override, then DANE (only on a
// secure MX answer and secure addresses), then MTA-STS, then the default.
func TestSecurityForHost(t *testing.T) {
	ee := resolve.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}
	pkix := resolve.TLSA{Usage: 1, Selector: 1, MatchingType: 1, Data: make([]byte, 32)}
	dns := &tlsaDNS{
		tlsa: map[string]resolve.TLSAResult{
			"dane.test":     {Records: []resolve.TLSA{ee}, Secure: true},
			"unusable.test": {Records: []resolve.TLSA{pkix}, Secure: true},
			"insecure.test": {Records: []resolve.TLSA{ee}, Secure: false},
		},
		bad: map[string]bool{"bogus.test": true},
	}
	enforce := &mtasts.Result{Domain: "d.test", Policy: &mtasts.Policy{Mode: mtasts.ModeEnforce, MX: []string{"*.d.test"}}}
	testing_ := &mtasts.Result{Domain: "d.test", Policy: &mtasts.Policy{Mode: mtasts.ModeTesting, MX: []string{"*.d.test"}}}
	secure := resolve.AddrResult{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Secure: true}
	plain := resolve.AddrResult{Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}}
	var seen []string
	s := &Security{DANE: true, Observe: func(p, r string) { seen = append(seen, p+"/"+r) }}
	tests := []struct {
		name      string
		dp        DomainPolicy
		host      string
		secureMX  bool
		addrs     resolve.AddrResult
		policy    string // "" for nil: the hop's default
		verifyOff bool   // InsecureSkipVerify with no DANE/STS check of its own
		err       error
	}{
		{"DANE-EE", DomainPolicy{}, "dane.test", true, secure, TLSRequire, false, nil},
		{"DANE wins over MTA-STS", DomainPolicy{STS: enforce}, "dane.test", true, secure, TLSRequire, false, nil},
		{"TLSA, none usable: TLS, not authenticated", DomainPolicy{}, "unusable.test", true, secure, TLSRequire, true, nil},
		{"TLSA not secure: no DANE", DomainPolicy{}, "insecure.test", true, secure, "", false, nil},
		{"MX answer not secure: no TLSA lookup", DomainPolicy{}, "bogus.test", false, secure, "", false, nil},
		{"addresses not secure: no TLSA lookup", DomainPolicy{}, "bogus.test", true, plain, "", false, nil},
		{"TLSA SERVFAIL: host unusable", DomainPolicy{}, "bogus.test", true, secure, "", false, errTLSALookup},
		{"no TLSA: MTA-STS enforce", DomainPolicy{STS: enforce}, "mx.d.test", true, secure, TLSRequire, false, nil},
		{"MTA-STS testing", DomainPolicy{STS: testing_}, "mx.d.test", false, plain, TLSOpportunistic, false, nil},
		{"override", DomainPolicy{Override: "none", STS: enforce}, "dane.test", true, secure, "", false, nil},
		{"nothing published", DomainPolicy{}, "mx.d.test", false, plain, "", false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := s.ForHost(context.Background(), dns, tt.dp, "d.test", tt.host, 25, tt.secureMX, tt.addrs)
			if !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if tt.policy == "" {
				if h != nil {
					t.Fatalf("got %+v, want the hop's default", h)
				}
				return
			}
			if h == nil || h.Policy != tt.policy {
				t.Fatalf("got %+v, want policy %s", h, tt.policy)
			}
			if h.Config == nil || h.Config.ServerName != tt.host || h.Config.VerifyConnection == nil || h.Key == "" {
				t.Errorf("config %+v: want SNI %s, a verification of its own and a pool key", h.Config, tt.host)
			}
			if tt.verifyOff != strings.Contains(h.Label, "not authenticated") {
				t.Errorf("label %q: want authenticated=%v", h.Label, !tt.verifyOff)
			}
			if !h.Config.InsecureSkipVerify {
				t.Errorf("InsecureSkipVerify off: the default verification would apply instead of the policy's")
			}
		})
	}
	if len(seen) != 1 || seen[0] != "dane/failed" {
		t.Errorf("observed %v, want one dane/failed (the SERVFAIL)", seen)
	}
}

// Explain, for lookup -v: the MX hosts, whether DNSSEC signed them, the
// domain's policy and each host's TLS.
func TestSecurityExplain(t *testing.T) {
	dns := &tlsaDNS{fakeDNS: fakeDNS{
		mx: map[string][]resolve.MX{
			"two.test":  {{Host: "mx1.two.test", Preference: 10}, {Host: "mx2.two.test", Preference: 20}},
			"null.test": {{Host: "."}},
		},
		hosts: map[string][]string{"mx1.two.test": {"192.0.2.1"}, "mx2.two.test": {"192.0.2.2"}},
	}}
	s := &Security{DANE: true}
	got := strings.Join(s.Explain(context.Background(), dns, "two.test", 25), "\n")
	want := `two.test: MX mx1.two.test, mx2.two.test (not DNSSEC-signed)
  policy: no MTA-STS policy
  mx1.two.test: [192.0.2.1]: the default TLS policy (opportunistic unless tls_policy says otherwise)
  mx2.two.test: [192.0.2.2]: the default TLS policy (opportunistic unless tls_policy says otherwise)`
	if got != want {
		t.Errorf("Explain:\n%s\nwant\n%s", got, want)
	}
	for domain, want := range map[string]string{"null.test": "null MX", "nowhere.test": "no such domain"} {
		if got := strings.Join(s.Explain(context.Background(), dns, domain, 25), "\n"); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", domain, got, want)
		}
	}
}
