//go:build e2e

package e2e

// Outbound security on a simulated Internet of real servers
// (e2e/internet: knot signing the zones, unbound validating, Debian
// Postfix as the receiving MXes, an HTTPS policy server): each case of
// internet.Standard gets one forwarded message, and what reached which MX,
// over which TLS, and what waits, is checked against the policy the
// domain publishes (docs/outbound-security.md).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailfwd/e2e/internet"
)

// outboundRelay starts a relay that forwards company.com addresses to
// the domains of s (an LDIF directory: one forwarding entry per case) and
// delivers to their MX hosts, asking s's validating resolver and trusting
// s's CA. extra is appended to its config.
func outboundRelay(t *testing.T, s *internet.Scenario, extra string) (*mailfwdProc, map[string]string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "outbound")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	fwd := map[string]string{} // forwarding address (ours) → the outside recipient
	var ldif strings.Builder
	for _, d := range s.Domains() {
		cn := "fwd-" + strings.TrimSuffix(d.Name, ".test")
		fwd[cn+"@company.com"] = d.Rcpt
		fmt.Fprintf(&ldif, "dn: cn=%s,ou=people,dc=example,dc=net\nobjectClass: top\nobjectClass: inetOrgPerson\nobjectClass: mailRecipient\ncn: %s\nsn: %s\nmail: %s@company.com\nmailForwardingAddress: %s\n\n", cn, cn, cn, cn, d.Rcpt)
	}
	if err := os.WriteFile(filepath.Join(dir, "dir.ldif"), []byte(ldif.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "srs.secrets"), []byte(srsSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr, admin := mustFreePort(t), mustFreePort(t)
	cfg := fmt.Sprintf(`hostname: mx.company.com
listen: [%q]
admin_listen: %q
relay_domains: [company.com]
spool_dir: spool
directory:
  ldif: {file: dir.ldif}
srs:
  domain: %s
  secrets_file: srs.secrets
dns:
  servers: [%q]
delivery:
  next_hop: %q
  tls_ca_file: %q
  retry_min: 300ms
  retry_max: 1s
  external_retry_min: 1s
  external_retry_max: 2s
  connect_timeout: 5s
log:
  level: debug
%s`, addr, admin, srsDomain, s.Resolver(), servers["PF_SMTP"], s.CAFile(), extra)
	cfgPath := filepath.Join(dir, "mailfwd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := startRelayConfig(dir, cfgPath, addr, admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	return p, fwd
}

// arrivedAt waits for the message with token tok at mx and returns it.
func arrivedAt(t *testing.T, mx *internet.MX, tok string, timeout time.Duration) *internet.Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := mx.Messages()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if strings.Contains(string(m.Raw), tok) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no message %s after %v\nMX log:\n%s", mx.Name, tok, timeout, lastLines(mx.Log(), 15))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// never checks that no message with tok reached mx.
func never(t *testing.T, mx *internet.MX, tok, why string) {
	t.Helper()
	msgs, err := mx.Messages()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if strings.Contains(string(m.Raw), tok) {
			t.Errorf("%s: got %s (%s), which must never reach it: %s", mx.Name, tok, tlsOf(m), why)
		}
	}
}

func tlsOf(m *internet.Message) string {
	if m.TLSVersion == "" {
		return "in plaintext"
	}
	return "over " + m.TLSVersion
}

func TestOutboundSecurity(t *testing.T) {
	s := internet.Standard(t)
	p, fwd := outboundRelay(t, s, "")
	tok := token(t)
	for from := range fwd {
		if err := sendGo(p.addr, tok+"-"+strings.TrimSuffix(from, "@company.com"), []string{from}); err != nil {
			t.Fatalf("%s: %v", from, err)
		}
	}
	tk := func(d *internet.Domain) string { return tok + "-fwd-" + strings.TrimSuffix(d.Name, ".test") }

	// Delivered, and how.
	delivered := []struct {
		d   *internet.Domain
		tls bool // over TLS (verified or not is the relay's side: metrics below)
	}{
		{&s.DANE, true},       // DANE-EE TLSA matches: verified
		{&s.STSEnforce, true}, // enforce, good certificate: verified
		{&s.STSTesting, true}, // testing, self-signed: delivered, reported
		{&s.NoTLS, false},     // no policy, no STARTTLS: plaintext is all there is
		{&s.Backup, true},     // first MX down: the second
	}
	for _, c := range delivered {
		m := arrivedAt(t, c.d.MX, tk(c.d), 60*time.Second)
		if (m.TLSVersion != "") != c.tls {
			t.Errorf("%s: delivered %s, want TLS=%v\n%s", c.d.Name, tlsOf(m), c.tls, m.Received)
		}
		t.Logf("%s: delivered to %s %s", c.d.Name, c.d.MX.Name, tlsOf(m))
	}

	// Deferred, never sent: wait for several retries of each first.
	logHas(t, p, 30*time.Second, "dane-mismatch.test", "4.7.5")
	logHas(t, p, 30*time.Second, "sts-badcert.test", "4.7.5")
	logHas(t, p, 30*time.Second, "bogus.test")
	time.Sleep(5 * time.Second) // a few more retries
	never(t, s.DANEMismatch.MX, tk(&s.DANEMismatch), "its TLSA records do not match the certificate (DANE)")
	never(t, s.STSEnforceBadCert.MX, tk(&s.STSEnforceBadCert), "MTA-STS enforce, and its certificate names another host")
	never(t, s.Bogus.MX, tk(&s.Bogus), "its DNS answers are bogus (SERVFAIL): nothing is known of it")

	// Null MX: refused at once, permanently.
	logHas(t, p, 30*time.Second, "nullmx.test", "5.1.10")

	m := scrapeMetrics(t, p)
	for k, min := range map[string]float64{
		`mailfwd_outbound_tls_total{policy="dane",result="verified"}`:          1,
		`mailfwd_outbound_tls_total{policy="dane",result="failed"}`:            2, // the mismatch, retried
		`mailfwd_outbound_tls_total{policy="mta-sts",result="verified"}`:       1,
		`mailfwd_outbound_tls_total{policy="mta-sts",result="failed"}`:         2,
		`mailfwd_outbound_tls_total{policy="mta-sts-testing",result="failed"}`: 1,
	} {
		if m[k] < min {
			t.Errorf("%s = %v, want at least %v", k, m[k], min)
		}
	}
	if v := m[`mailfwd_outbound_tls_total{policy="mta-sts-testing",result="verified"}`]; v != 0 {
		t.Errorf("a self-signed certificate verified under MTA-STS testing: %v", v)
	}

	// What mailfwd lookup -v says for the DANE and MTA-STS forwards.
	for from, want := range map[string][]string{
		"fwd-dane@company.com":        {"mx.dane.test (DNSSEC-signed)", "mx.dane.test: [" + s.DANE.MX.Addr + "]: DANE: 1 usable TLSA record (3 1 1)"},
		"fwd-sts-enforce@company.com": {"MTA-STS enforce", "MTA-STS enforce: TLS verified for mx.sts-enforce.test"},
		"fwd-notls@company.com":       {"no MTA-STS policy", "the default TLS policy"},
	} {
		out, err := exec.Command(binary, "lookup", "-v", "-config", filepath.Join(p.dir, "mailfwd.yaml"), from).CombinedOutput()
		if err != nil {
			t.Errorf("lookup -v %s: %v\n%s", from, err, out)
			continue
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("lookup -v %s: no %q in\n%s", from, w, out)
			}
		}
	}
}
