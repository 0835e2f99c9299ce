//go:build e2e

package internet

// Self-test: the standard Internet, checked with real clients only
// (kdig, posttls-finger, curl, swaks) plus the package's own readers.
//
//	go test -count=1 -tags e2e ./e2e/internet/

import (
	"bytes"
	"compress/gzip"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestStandardInternet(t *testing.T) {
	for _, b := range []string{"kdig", "posttls-finger", "curl", "swaks"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not installed (run e2e/internet/install-deps.sh): %v", b, err)
		}
	}
	start := time.Now()
	s := Standard(t)
	t.Logf("Standard built and started in %v (resolver %s, %d hosts, %d MXes)",
		time.Since(start).Round(time.Millisecond), s.Resolver(), len(s.Hosts()), len(s.MXes()))

	t.Run("DNS", func(t *testing.T) { testDNS(t, s) })
	t.Run("DANE", func(t *testing.T) { testDANE(t, s) })
	t.Run("PKIX", func(t *testing.T) { testPKIX(t, s) })
	t.Run("MTA-STS", func(t *testing.T) { testMTASTS(t, s) })
	t.Run("SMTP", func(t *testing.T) { testSMTP(t, s) })
	t.Run("Backup", func(t *testing.T) { testBackup(t, s) })
	t.Run("TLSRPT", func(t *testing.T) { testTLSRPT(t, s) })
	t.Run("Isolation", func(t *testing.T) { testIsolation(t, s) })
}

// kdig asks the resolver from this host, as the sender will.
func kdig(t *testing.T, s *Scenario, args ...string) string {
	t.Helper()
	out, err := exec.Command("kdig", append([]string{"@" + s.ResolverHost().Addr, "+dnssec", "+time=3", "+retry=1"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kdig %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// flags is kdig's ";; Flags:" line up to the first ';' (e.g. "qr rd ra ad").
func flags(out string) []string {
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, ";; Flags: "); ok {
			f, _, _ := strings.Cut(rest, ";")
			return strings.Fields(f)
		}
	}
	return nil
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func status(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(l, "status: "); ok {
			st, _, _ := strings.Cut(rest, ";")
			return st
		}
	}
	return ""
}

func wantDig(t *testing.T, s *Scenario, name, qtype, wantStatus string, wantAD bool, wantIn ...string) string {
	t.Helper()
	out := kdig(t, s, name, qtype)
	if st := status(out); st != wantStatus {
		t.Errorf("%s %s: status %q, want %s\n%s", name, qtype, st, wantStatus, out)
	}
	if ad := has(flags(out), "ad"); ad != wantAD {
		t.Errorf("%s %s: ad=%v, want %v (flags %v)\n%s", name, qtype, ad, wantAD, flags(out), out)
	}
	for _, w := range wantIn {
		if !strings.Contains(out, w) {
			t.Errorf("%s %s: no %q in\n%s", name, qtype, w, out)
		}
	}
	return out
}

func testDNS(t *testing.T, s *Scenario) {
	// secure answers
	wantDig(t, s, "dane.test", "MX", "NOERROR", true, "MX\t10 mx.dane.test.")
	wantDig(t, s, "mx.dane.test", "A", "NOERROR", true, s.DANE.MX.Addr)
	tlsa := strings.ToUpper(strings.TrimPrefix(s.DANE.MX.TLSA, "3 1 1 "))
	wantDig(t, s, "_25._tcp.mx.dane.test", "TLSA", "NOERROR", true, "TLSA\t3 1 1 "+tlsa)
	wantDig(t, s, "_25._tcp.mx.dane-mismatch.test", "TLSA", "NOERROR", true, "TLSA\t3 1 1")
	if s.DANEMismatch.MX.TLSA == "3 1 1 "+s.DANEMismatch.MX.Cert.SPKISHA256() {
		t.Error("dane-mismatch.test: the TLSA record matches the certificate")
	}
	// authenticated denial
	wantDig(t, s, "missing.dane.test", "A", "NXDOMAIN", true)
	wantDig(t, s, "_25._tcp.mx.sts-enforce.test", "TLSA", "NXDOMAIN", false)
	// bogus: SERVFAIL, but the data is there (checking disabled)
	out := wantDig(t, s, "bogus.test", "MX", "SERVFAIL", false)
	if !strings.Contains(out, "DS hash mismatches key") && !strings.Contains(out, "EDE") {
		t.Logf("bogus.test: no EDE text in\n%s", out)
	}
	wantDig(t, s, "mx.bogus.test", "A", "SERVFAIL", false)
	if out := kdig(t, s, "+cd", "bogus.test", "MX"); status(out) != "NOERROR" || !strings.Contains(out, "mx.bogus.test.") {
		t.Errorf("bogus.test MX +cd: want the unvalidated answer\n%s", out)
	}
	// insecure zones
	wantDig(t, s, "sts-enforce.test", "MX", "NOERROR", false, "MX\t10 mx.sts-enforce.test.")
	wantDig(t, s, "_mta-sts.sts-enforce.test", "TXT", "NOERROR", false, `"v=STSv1; id=`)
	wantDig(t, s, "_smtp._tls.sts-badcert.test", "TXT", "NOERROR", false,
		`"v=TLSRPTv1; rua=https://tlsrpt.report.test/v1/tlsrpt,mailto:tlsrpt@report.test"`)
	wantDig(t, s, "_smtp._tls.dane.test", "TXT", "NOERROR", true, `"v=TLSRPTv1; rua=https://tlsrpt.report.test/v1/tlsrpt"`)
	wantDig(t, s, "mta-sts.sts-testing.test", "A", "NOERROR", false, s.WebHost().Addr)
	wantDig(t, s, "missing.notls.test", "A", "NXDOMAIN", false)
	wantDig(t, s, "nullmx.test", "MX", "NOERROR", false, "MX\t0 .")
	wantDig(t, s, "backup.test", "MX", "NOERROR", false, "MX\t10 mx1.backup.test.", "MX\t20 mx2.backup.test.")
	// a TLD the root does not have: proven absent by the signed root
	wantDig(t, s, "no-such-tld", "A", "NXDOMAIN", true)

	// the same through the Go API
	m, err := s.Query("dane.test", dns.TypeMX)
	if err != nil || m.Rcode != dns.RcodeSuccess || !m.AuthenticatedData {
		t.Errorf("Query(dane.test MX): %v %v", m, err)
	}
}

func pf(t *testing.T, s *Scenario, args ...string) string {
	t.Helper()
	out, err := s.PostTLSFinger(args...)
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("posttls-finger %v: %v\n%s", args, err, out)
		}
	}
	return out
}

func wantOut(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: no %q in\n%s", what, w, out)
		}
	}
}

func testDANE(t *testing.T, s *Scenario) {
	out := pf(t, s, "-c", "-l", "dane", s.DANE.Name)
	wantOut(t, "dane.test", out, "Matched DANE EE certificate at depth 0",
		"Verified TLS connection established to mx.dane.test["+s.DANE.MX.Addr+"]:25")
	out = pf(t, s, "-c", "-l", "dane", s.DANEMismatch.Name)
	wantOut(t, "dane-mismatch.test", out, "no matching DANE TLSA records",
		"Untrusted TLS connection established to mx.dane-mismatch.test")
	if strings.Contains(out, "Verified TLS") {
		t.Errorf("dane-mismatch.test verified:\n%s", out)
	}
	out = pf(t, s, "-c", "-l", "dane", s.Bogus.Name)
	wantOut(t, "bogus.test", out, "Destination address lookup failed", "try again")
	out = pf(t, s, "-c", "-l", "may", s.NullMX.Name)
	wantOut(t, "nullmx.test", out, "does not accept mail (nullMX)")
}

func testPKIX(t *testing.T, s *Scenario) {
	ca := s.CAFile()
	out := pf(t, s, "-c", "-l", "secure", "-F", ca, "[mx.sts-enforce.test]")
	wantOut(t, "mx.sts-enforce.test", out, "Verified TLS connection established to mx.sts-enforce.test")
	out = pf(t, s, "-c", "-l", "secure", "-F", ca, "[mx.sts-badcert.test]")
	wantOut(t, "mx.sts-badcert.test", out, "hostname mismatch", "Untrusted TLS connection")
	out = pf(t, s, "-c", "-l", "secure", "-F", ca, "[mx.sts-testing.test]")
	wantOut(t, "mx.sts-testing.test", out, "self-signed certificate", "Untrusted TLS connection")
}

func testMTASTS(t *testing.T, s *Scenario) {
	for _, c := range []struct {
		d    *Domain
		mode string
	}{{&s.STSEnforce, "enforce"}, {&s.STSEnforceBadCert, "enforce"}, {&s.STSTesting, "testing"}} {
		// curl in the client host: DNS through the resolver, only the suite CA
		cmd := s.Client().Command("curl", "-sS", "--max-time", "10", "--cacert", s.CAFile(), "-D", "-", c.d.STS)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("curl %s: %v\n%s", c.d.STS, err, out)
			continue
		}
		wantOut(t, c.d.STS, string(out), "HTTP/1.1 200 OK", "Content-Type: text/plain",
			"version: STSv1\r\nmode: "+c.mode+"\r\nmx: "+c.d.MX.Name+"\r\nmax_age: 86400\r\n")
	}
	// no policy host for a domain without MTA-STS
	if out, err := s.Client().Command("curl", "-sS", "--max-time", "5", "--cacert", s.CAFile(),
		"https://mta-sts.notls.test/.well-known/mta-sts.txt").CombinedOutput(); err == nil {
		t.Errorf("mta-sts.notls.test answered:\n%s", out)
	}
	// the web host's other names get a certificate for web.nic.test
	out, err := exec.Command("curl", "-sS", "--max-time", "5", "--cacert", s.CAFile(),
		"--resolve", "mta-sts.unknown.test:443:"+s.WebHost().Addr, "https://mta-sts.unknown.test/.well-known/mta-sts.txt").CombinedOutput()
	if err == nil {
		t.Errorf("unknown SNI verified:\n%s", out)
	}
	// the Go client
	resp, err := s.PolicyClient().Get(s.STSEnforce.STS)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("PolicyClient: %s", resp.Status)
	}
}

func swaks(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("swaks", append([]string{"--timeout", "15", "--from", "sender@sender.test", "--helo", "sender.test"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func testSMTP(t *testing.T, s *Scenario) {
	// 3: STARTTLS, verified against the suite CA, message shows TLS
	mx := s.STSEnforce.MX
	out, err := swaks(t, "--server", mx.Addr, "--to", s.STSEnforce.Rcpt, "--tls", "--tls-verify",
		"--tls-ca-path", s.CAFile(), "--header", "Subject: case 3")
	if err != nil {
		t.Fatalf("swaks to %s: %v\n%s", mx.Name, err, out)
	}
	wantOut(t, "swaks "+mx.Name, out, "<-  220 2.0.0 Ready to start TLS", "=== TLS started with cipher TLSv1.", "250 2.0.0 Ok: queued")
	msgs := mx.WaitMessages(t, 1, 20*time.Second)
	m := msgs[len(msgs)-1]
	if !strings.HasPrefix(m.TLSVersion, "TLSv1.") || m.TLSCipher == "" {
		t.Errorf("case 3 message: TLS %q %q; Received %q", m.TLSVersion, m.TLSCipher, m.Received)
	}
	if m.DeliveredTo != s.STSEnforce.Rcpt || m.ReturnPath != "sender@sender.test" {
		t.Errorf("case 3 message: envelope %q -> %q", m.ReturnPath, m.DeliveredTo)
	}
	if m.Header.Get("Subject") != "case 3" || !strings.Contains(m.Received, "by "+mx.Name) {
		t.Errorf("case 3 message: %s", m.Raw)
	}
	if ss := mx.TLSSessions(); len(ss) == 0 || !strings.Contains(ss[len(ss)-1].Client, "[10.98.") {
		t.Errorf("case 3: TLS sessions %+v", ss)
	}

	// 6: no STARTTLS offered; plain delivery works and shows no TLS
	nt := s.NoTLS.MX
	out, err = swaks(t, "--server", nt.Addr, "--quit-after", "EHLO")
	if err != nil {
		t.Fatalf("swaks EHLO %s: %v\n%s", nt.Name, err, out)
	}
	if strings.Contains(out, "STARTTLS") {
		t.Errorf("%s offers STARTTLS:\n%s", nt.Name, out)
	}
	if out, err := swaks(t, "--server", nt.Addr, "--to", s.NoTLS.Rcpt, "--tls"); err == nil {
		t.Errorf("swaks --tls to %s succeeded:\n%s", nt.Name, out)
	}
	if out, err := swaks(t, "--server", nt.Addr, "--to", s.NoTLS.Rcpt); err != nil {
		t.Fatalf("swaks plain to %s: %v\n%s", nt.Name, err, out)
	}
	pm := nt.WaitMessages(t, 1, 20*time.Second)[0]
	if pm.TLSVersion != "" || strings.Contains(pm.Received, "using TLS") {
		t.Errorf("case 6 message came in with TLS: %q", pm.Received)
	}

	// the other MXes answer with STARTTLS (and reject foreign domains)
	for _, d := range []*Domain{&s.DANE, &s.DANEMismatch, &s.STSEnforceBadCert, &s.STSTesting, &s.Backup, &s.Bogus} {
		out, err := swaks(t, "--server", d.MX.Addr, "--quit-after", "EHLO")
		if err != nil || !strings.Contains(out, "250-STARTTLS") {
			t.Errorf("%s: no STARTTLS (%v)\n%s", d.MX.Name, err, out)
		}
	}
	if out, err := swaks(t, "--server", s.DANE.MX.Addr, "--to", "rcpt@sts-enforce.test", "--quit-after", "RCPT"); err == nil ||
		!strings.Contains(out, "Relay access denied") {
		t.Errorf("mx.dane.test relays: %v\n%s", err, out)
	}
	if msgs, _ := s.Bogus.MX.Messages(); len(msgs) != 0 {
		t.Errorf("bogus.test's MX got %d messages", len(msgs))
	}
}

func testBackup(t *testing.T, s *Scenario) {
	_, err := net.DialTimeout("tcp", s.BackupDown.Addr+":25", 3*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("mx1.backup.test: %v, want connection refused", err)
	}
	out := pf(t, s, "-c", "-l", "may", s.Backup.Name)
	wantOut(t, "backup.test", out, "connect to mx1.backup.test["+s.BackupDown.Addr+"]:25: Connection refused",
		"TLS connection established to mx2.backup.test["+s.Backup.MX.Addr+"]:25")

	// an MX can be stopped (then it refuses too) and started again
	mx := s.Backup.MX
	mx.Stop(t)
	if _, err := net.DialTimeout("tcp", mx.Addr25(), 3*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("stopped %s: %v, want connection refused", mx.Name, err)
	}
	mx.Restart(t)
	out = pf(t, s, "-c", "-l", "secure", "-F", s.CAFile(), "[mx2.backup.test]")
	wantOut(t, "mx2.backup.test after Restart", out, "Verified TLS connection established to mx2.backup.test")
}

func testTLSRPT(t *testing.T, s *Scenario) {
	report := []byte(`{"organization-name":"mfwnet self-test","report-id":"x1","policies":[]}`)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(report)
	zw.Close()
	body := filepath.Join(t.TempDir(), "report.json.gz")
	if err := os.WriteFile(body, gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	before := len(s.TLSRPT.Reports())
	out, err := s.Client().Command("curl", "-sS", "--max-time", "10", "--cacert", s.CAFile(), "-o", "/dev/null",
		"-w", "%{http_code}", "-H", "Content-Type: application/tlsrpt+gzip", "--data-binary", "@"+body, s.ReportURL).CombinedOutput()
	if err != nil || string(out) != "200" {
		t.Fatalf("POST %s: %v %s", s.ReportURL, err, out)
	}
	rs := s.TLSRPT.WaitReports(t, before+1, 5*time.Second)
	r := rs[len(rs)-1]
	if r.Path != "/v1/tlsrpt" || r.ContentType != "application/tlsrpt+gzip" || !bytes.Equal(r.JSON, report) {
		t.Errorf("report: %+v", r)
	}
	// GET is refused
	out, _ = s.Client().Command("curl", "-sS", "--max-time", "10", "--cacert", s.CAFile(), "-o", "/dev/null",
		"-w", "%{http_code}", s.ReportURL).CombinedOutput()
	if string(out) != "405" {
		t.Errorf("GET %s: %s", s.ReportURL, out)
	}
	// mailto: reports arrive at the report MX
	if out, err := swaks(t, "--server", s.ReportMX.Addr, "--to", strings.TrimPrefix(s.ReportMailto, "mailto:"), "--tls",
		"--header", "Subject: Report Domain: sts-badcert.test"); err != nil {
		t.Fatalf("swaks to %s: %v\n%s", s.ReportMX.Name, err, out)
	}
	if m := s.ReportMX.WaitMessages(t, 1, 20*time.Second)[0]; m.DeliveredTo != "tlsrpt@report.test" || m.TLSVersion == "" {
		t.Errorf("report mail: %q %q", m.DeliveredTo, m.Received)
	}
}

func testIsolation(t *testing.T, s *Scenario) {
	for _, h := range s.Hosts() {
		out, err := exec.Command("ip", "-n", h.NS, "route", "show", "default").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("%s: default route %q (%v)", h.NS, out, err)
		}
	}
	// a namespace reaches another through this host, and nothing outside
	out, err := s.Client().Command("bash", "-c", "exec 3<>/dev/tcp/"+s.DANE.MX.Addr+"/25 && head -c 4 <&3").CombinedOutput()
	if err != nil || string(out) != "220 " {
		t.Errorf("client -> %s: %v %q", s.DANE.MX.Addr, err, out)
	}
	// (a route lookup only: no packet is sent)
	out, err = exec.Command("ip", "-n", s.Client().NS, "route", "get", "192.0.2.1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unreachable") {
		t.Errorf("client has a route outside: %v %q", err, out)
	}
}
