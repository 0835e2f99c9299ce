//go:build e2e

package e2e

// Outbound security on a simulated Internet of real servers
// (e2e/internet: knot signing the zones, unbound validating, Debian
// Postfix as the receiving MXes, an HTTPS policy server): each case of
// internet.Standard gets one forwarded message, and what reached which MX,
// over which TLS, and what waits, is checked against the policy the
// domain publishes (docs/outbound-security.md).

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
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
	cfgPath := writeConfig(t, filepath.Join(dir, "mailfwd.yaml"), "outbound/mailfwd.yaml", vars{"Listen": addr, "Admin": admin,
		"SRSDomain": srsDomain, "Resolver": s.Resolver(), "NextHop": suite.servers["PF_SMTP"], "CAFile": s.CAFile(), "Extra": extra})
	p, err := suite.startRelayConfig(dir, cfgPath, addr, admin)
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
	tok := suite.token(t)
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
		out, err := exec.Command(suite.binary, "lookup", "-v", "-config", filepath.Join(p.dir, "mailfwd.yaml"), from).CombinedOutput()
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

	// TLS-RPT: the day's counts survive the relay's stop, and the day so
	// far goes to each https: rua as an RFC 8460 report.
	p.stop()
	cfgPath := filepath.Join(p.dir, "mailfwd.yaml")
	// the relay's admin address, for the restart that sends the mailto: reports
	adminAddr := strings.TrimPrefix(p.admin, "http://")
	out, err := exec.Command(suite.binary, "tls-report", "-config", cfgPath, "-day", "today").Output()
	if err != nil {
		t.Fatalf("tls-report -day today: %v\n%s", err, out)
	}
	if out, err := exec.Command(suite.binary, "tls-report", "-config", cfgPath, "-day", "today", "-send").CombinedOutput(); err != nil {
		t.Fatalf("tls-report -send: %v\n%s", err, out)
	}
	reports := s.TLSRPT.WaitReports(t, 4, 30*time.Second)
	byDomain := map[string]tlsReportJSON{}
	for _, r := range reports {
		if r.ContentType != "application/tlsrpt+gzip" {
			t.Errorf("report POSTed as %q, want application/tlsrpt+gzip", r.ContentType)
		}
		rep := validateTLSReport(t, r.JSON)
		for _, pol := range rep.Policies {
			byDomain[pol.Policy.Domain] = rep
		}
	}
	for domain, want := range map[string]struct {
		policyType string
		ok, failed bool
		result     string
	}{
		"dane.test":        {"tlsa", true, false, ""},
		"sts-enforce.test": {"sts", true, false, ""},
		"sts-badcert.test": {"sts", false, true, "certificate-host-mismatch"},
		"sts-testing.test": {"sts", false, true, "certificate-not-trusted"},
	} {
		rep, ok := byDomain[domain]
		if !ok {
			t.Errorf("no TLS report for %s (got %d reports)", domain, len(reports))
			continue
		}
		pol := rep.Policies[0]
		if pol.Policy.Type != want.policyType || (pol.Summary.OK > 0) != want.ok || (pol.Summary.Failed > 0) != want.failed {
			t.Errorf("%s: policy %s, %d successful, %d failed sessions; want %s, successes %v, failures %v",
				domain, pol.Policy.Type, pol.Summary.OK, pol.Summary.Failed, want.policyType, want.ok, want.failed)
		}
		if want.result != "" && (len(pol.Details) == 0 || pol.Details[0].Result != want.result) {
			t.Errorf("%s: failure details %+v, want %s", domain, pol.Details, want.result)
		}
	}

	// The mailto: reports were queued in the spool: the relay sends them
	// through its own queue when it starts again.
	p2, err := suite.startRelayConfig(p.dir, cfgPath, p.addr, adminAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.stop()
	for _, domain := range []string{"dane-mismatch.test", "sts-badcert.test"} {
		m := reportMail(t, s.ReportMX, domain, 60*time.Second)
		rep := validateTLSReport(t, m)
		if pol := rep.Policies[0]; pol.Summary.Failed == 0 || pol.Policy.Domain != domain {
			t.Errorf("mailto report for %s: %+v, want its failures", domain, pol)
		}
	}
}

// reportMail waits at mx for the TLS report mail of domain (RFC 8460 §5.3:
// TLS-Report-Domain, multipart/report with an application/tlsrpt+gzip
// part) and returns the report's JSON.
func reportMail(t *testing.T, mx *internet.MX, domain string, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := mx.Messages()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Header == nil || m.Header.Get("TLS-Report-Domain") != domain {
				continue
			}
			mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
			if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
				t.Fatalf("report mail for %s: Content-Type %q (%v)", domain, m.Header.Get("Content-Type"), err)
			}
			pm, err := mail.ReadMessage(bytes.NewReader(m.Raw))
			if err != nil {
				t.Fatal(err)
			}
			mr := multipart.NewReader(pm.Body, params["boundary"])
			for {
				part, err := mr.NextPart()
				if err != nil {
					t.Fatalf("report mail for %s: no application/tlsrpt+gzip part: %v", domain, err)
				}
				if part.Header.Get("Content-Type") == "" || !strings.HasPrefix(part.Header.Get("Content-Type"), "application/tlsrpt+gzip") {
					continue
				}
				var r io.Reader = part
				if strings.EqualFold(part.Header.Get("Content-Transfer-Encoding"), "base64") {
					r = base64.NewDecoder(base64.StdEncoding, part)
				}
				zr, err := gzip.NewReader(r)
				if err != nil {
					t.Fatalf("report mail for %s: %v", domain, err)
				}
				b, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("report mail for %s: %v", domain, err)
				}
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS report mail for %s at %s after %v\n%s", domain, mx.Name, timeout, lastLines(mx.Log(), 15))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// tlsReportJSON is what the test reads of an RFC 8460 report.
type tlsReportJSON struct {
	Policies []struct {
		Policy struct {
			Type   string `json:"policy-type"`
			Domain string `json:"policy-domain"`
		} `json:"policy"`
		Summary struct {
			OK     int `json:"total-successful-session-count"`
			Failed int `json:"total-failure-session-count"`
		} `json:"summary"`
		Details []struct {
			Result string `json:"result-type"`
			Count  int    `json:"failed-session-count"`
		} `json:"failure-details"`
	} `json:"policies"`
}

// validateTLSReport checks a report against RFC 8460 §4.4's structure:
// every required field, with its type, a date range of one UTC day, and
// result types from the registry; it returns the parsed report.
func validateTLSReport(t *testing.T, b []byte) tlsReportJSON {
	t.Helper()
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("TLS report is not JSON: %v\n%s", err, b)
	}
	str := func(m map[string]any, k, where string) string {
		v, ok := m[k].(string)
		if !ok || v == "" {
			t.Errorf("TLS report: %s: %q missing or not a string", where, k)
		}
		return v
	}
	num := func(m map[string]any, k, where string) {
		if v, ok := m[k].(float64); !ok || v < 0 || v != float64(int64(v)) {
			t.Errorf("TLS report: %s: %q missing or not a count: %v", where, k, m[k])
		}
	}
	obj := func(m map[string]any, k, where string) map[string]any {
		v, ok := m[k].(map[string]any)
		if !ok {
			t.Errorf("TLS report: %s: %q missing or not an object", where, k)
		}
		return v
	}
	str(raw, "organization-name", "report")
	str(raw, "contact-info", "report")
	str(raw, "report-id", "report")
	dr := obj(raw, "date-range", "report")
	s, err1 := time.Parse(time.RFC3339, str(dr, "start-datetime", "date-range"))
	e, err2 := time.Parse(time.RFC3339, str(dr, "end-datetime", "date-range"))
	if err1 != nil || err2 != nil || !s.Equal(s.UTC().Truncate(24*time.Hour)) || e.Sub(s) < 24*time.Hour-time.Second || e.Sub(s) > 24*time.Hour {
		t.Errorf("TLS report: date-range %v – %v (%v %v): want one whole UTC day", s, e, err1, err2)
	}
	pols, ok := raw["policies"].([]any)
	if !ok || len(pols) == 0 {
		t.Fatalf("TLS report: no policies:\n%s", b)
	}
	registry := map[string]bool{"starttls-not-supported": true, "certificate-host-mismatch": true, "certificate-expired": true,
		"certificate-not-trusted": true, "validation-failure": true, "tlsa-invalid": true, "dnssec-invalid": true, "dane-required": true,
		"sts-policy-fetch-error": true, "sts-policy-invalid": true, "sts-webpki-invalid": true}
	for _, pv := range pols {
		pm, _ := pv.(map[string]any)
		pol := obj(pm, "policy", "policies[]")
		if pt := str(pol, "policy-type", "policy"); pt != "tlsa" && pt != "sts" && pt != "no-policy-found" {
			t.Errorf("TLS report: policy-type %q", pt)
		}
		str(pol, "policy-domain", "policy")
		sum := obj(pm, "summary", "policies[]")
		num(sum, "total-successful-session-count", "summary")
		num(sum, "total-failure-session-count", "summary")
		if fd, ok := pm["failure-details"]; ok {
			list, ok := fd.([]any)
			if !ok {
				t.Errorf("TLS report: failure-details is not an array")
			}
			for _, dv := range list {
				d, _ := dv.(map[string]any)
				if rt := str(d, "result-type", "failure-details[]"); !registry[rt] {
					t.Errorf("TLS report: result-type %q is not registered", rt)
				}
				num(d, "failed-session-count", "failure-details[]")
			}
		}
	}
	var rep tlsReportJSON
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}
