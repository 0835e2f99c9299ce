//go:build e2e

package e2e

// The example configs in deploy/examples/ are kept realistic (port 25,
// /etc/mailfwd secrets, LDAPS to named servers); these tests run a copy of
// each with only the machine-specific values replaced: every file it names
// is generated in a temp dir (secrets, a certificate and key, a CA, a
// Postfix ldap_table file), and for the tests that run it, the addresses
// point at the suite's 389-DS, Postfix and smtp-sink.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// exampleFile is a runnable copy of one deploy/examples file.
type exampleFile struct {
	name string // e.g. migration-shim.yaml
	dir  string // temp root: dir/etc/..., dir/spool
	path string // the copy
	text string
}

var examplePathRe = regexp.MustCompile(`/etc/[A-Za-z0-9._/-]+`)

// exampleCopy copies deploy/examples/name into a temp dir: absolute paths
// under /etc/ move under the temp dir and each file the config (not its
// comments) names is generated there; /var/spool/mailfwd becomes dir/spool.
// Then each (old, new) pair in repl is applied; an old string missing from
// the example fails the test, so the example and the test cannot drift
// apart silently.
func exampleCopy(t *testing.T, name string, repl ...string) *exampleFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	dir := t.TempDir()
	var paths []string
	seen := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		for _, p := range examplePathRe.FindAllString(l, -1) {
			if !seen[p] {
				seen[p] = true
				paths = append(paths, p)
			}
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		dst := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, exampleContent(t, p), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	text = strings.NewReplacer("/etc/", dir+"/etc/", "/var/spool/mailfwd", filepath.Join(dir, "spool")).Replace(text)
	if len(repl)%2 != 0 {
		t.Fatal("exampleCopy: odd replacement list")
	}
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(text, repl[i]) {
			t.Fatalf("%s no longer contains %q: update the test with the example", name, repl[i])
		}
		text = strings.ReplaceAll(text, repl[i], repl[i+1])
	}
	e := &exampleFile{name: name, dir: dir, path: filepath.Join(dir, name), text: text}
	e.write(t)
	t.Logf("%s: generated %v", name, paths)
	return e
}

func (e *exampleFile) write(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(e.path, []byte(e.text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// set replaces old by new in the copy (old must be there) and rewrites it.
func (e *exampleFile) set(t *testing.T, old, new string) {
	t.Helper()
	if !strings.Contains(e.text, old) {
		t.Fatalf("%s: %q not in the config", e.name, old)
	}
	e.text = strings.ReplaceAll(e.text, old, new)
	e.write(t)
}

// exampleContent is a plausible file for a path an example names.
func exampleContent(t *testing.T, p string) []byte {
	base := filepath.Base(p)
	switch {
	case strings.HasSuffix(base, ".key"):
		_, key := suite.exampleCerts(t)
		return key
	case strings.HasSuffix(base, ".crt"), strings.HasSuffix(base, ".pem"):
		cert, _ := suite.exampleCerts(t)
		return cert
	case base == "ldap.secret":
		return []byte("postfix-ldap-secret\n")
	case strings.HasSuffix(base, ".secrets"):
		return []byte(srsSecret + "\n")
	case strings.HasSuffix(base, ".cf"):
		// What /etc/postfix/ldap-virtual.cf holds on a seed-style setup,
		// pointing at the suite's 389-DS.
		return []byte(fmt.Sprintf(`server_host = %s
search_base = dc=example,dc=net
scope = sub
query_filter = (|(mail=%%s)(mailAlternateAddress=%%s))
result_attribute = mailForwardingAddress
bind = yes
bind_dn = uid=postfix-ldap,ou=system,dc=example,dc=net
bind_pw = postfix-ldap-secret
version = 3
timeout = 5
`, suite.servers["DS_URL"]))
	}
	t.Fatalf("an example names %s: no idea what to generate for it", p)
	return nil
}

// exampleCerts is a self-signed certificate (usable as its own CA) and key,
// the same for every example of the run.
func (s *harness) exampleCerts(t *testing.T) (cert, key []byte) {
	if s.exampleCert == nil {
		s.exampleCert, s.exampleKey = selfSignedCA(t, "mx1.example.net", []string{"mx1.example.net", "localhost"}, nil)
	}
	return s.exampleCert, s.exampleKey
}

// logHas waits until the relay's log has a line containing every one of
// parts, and returns it.
func logHas(t *testing.T, p *mailfwdProc, timeout time.Duration, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(p.log.Name())
		for _, l := range strings.Split(string(b), "\n") {
			ok := true
			for _, s := range parts {
				if !strings.Contains(l, s) {
					ok = false
					break
				}
			}
			if ok {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q in %s; tail:\n%s", parts, p.log.Name(), p.logTail(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Every example passes check-config (with its secrets, certificate and
// Postfix map generated), and says what the issue asks of it.
func TestExamplesCheckConfig(t *testing.T) {
	files, err := filepath.Glob("../deploy/examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"mx-relay.yaml": {"ldaps://", "ca_file:", "srs:", "tls:", "cert_file:", "limits:", "admin_listen:", "xclient: true",
			"bind_password_file:", "next_hop:"},
		"migration-shim.yaml": {"domain_rewrites:", "old.example: new.example", "unknown_recipients: pass", "dry_run: true", "next_hop:"},
		"postfix-map.yaml":    {"postfix_map: /etc/postfix/ldap-virtual.cf"},
	}
	if len(files) < len(want) {
		t.Fatalf("deploy/examples has %v, want at least %d examples", files, len(want))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			raw, _ := os.ReadFile(f)
			for _, w := range want[name] {
				if !strings.Contains(string(raw), w) {
					t.Errorf("%s lacks %q", name, w)
				}
			}
			e := exampleCopy(t, name)
			out, err := exec.Command(suite.binary, "check-config", "-config", e.path).CombinedOutput()
			if err != nil || !strings.Contains(string(out), ": ok (") {
				t.Fatalf("check-config: %v\n%s\nconfig:\n%s", err, out, e.text)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
		})
	}
}

// The migration shim, run as written except for addresses: the directory is
// the suite's 389-DS over LDAPS (its CA), the old MTA (next_hop) and the
// new domain's server (transports) are the suite's Postfix, which relays
// everything to smtp-sink.
//
//	(a) dry_run: true: x@old.example arrives unchanged, the log says what
//	    would have happened; an alias is delivered unchanged too.
//	(b) dry_run: false (switched by editing the file and SIGHUP, as the
//	    example says): x@old.example arrives as x@new.example, an address of
//	    a relay domain the directory does not know passes unchanged, and
//	    directory aliases are rewritten.
func TestExamplesMigrationShim(t *testing.T) {
	addr, _ := freePort()
	admin, _ := freePort()
	pf := suite.servers["PF_SMTP"]
	_, pfPort, _ := net.SplitHostPort(pf)
	e := exampleCopy(t, "migration-shim.yaml",
		`listen: ["0.0.0.0:25"]`, fmt.Sprintf("listen: [%q]", addr),
		"admin_listen: 127.0.0.1:9925", "admin_listen: "+admin,
		"ldaps://ldap.old.example:636", suite.servers["DS_LDAPS_URL"],
		"next_hop: old-mta.old.example:25", "next_hop: "+pf,
		`"smtp:[mx.new.example]:25"`, fmt.Sprintf(`"smtp:[127.0.0.1]:%s"`, pfPort),
	)
	// The suite's 389-DS has its own CA: the example's ca_file gets it.
	ca, err := os.ReadFile(suite.servers["DS_CA_CERT"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "etc/mailfwd/ldap-ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	// Fast retries in case Postfix is slow; nothing else changes.
	e.set(t, "  tls_policy: opportunistic\n", "  tls_policy: opportunistic\n  retry_min: 500ms\n  retry_max: 2s\n")

	p, err := suite.startRelayConfig(e.dir, e.path, addr, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()

	// (a) dry run.
	tok := suite.token(t)
	user := "dry." + strings.ToLower(strings.ReplaceAll(tok, "_", "-"))
	sendSwaks(t, addr, tok, user+"@old.example")
	suite.arrived(t, tok, map[string]int{user + "@old.example": 1}, 30*time.Second)
	l := logHas(t, p, 5*time.Second, "dry-run: would rewrite", "to="+user+"@old.example")
	if !strings.Contains(l, user+"@new.example") {
		t.Errorf("dry-run line does not name the rewrite to %s@new.example: %s", user, l)
	}
	t.Logf("dry run: %s", l)
	tok = suite.token(t)
	sendSwaks(t, addr, tok, "sales@company.com")
	suite.arrived(t, tok, map[string]int{"sales@company.com": 1}, 30*time.Second)
	l = logHas(t, p, 5*time.Second, "dry-run: would rewrite", "to=sales@company.com", "central@company.com")
	t.Logf("dry run: %s", l)
	// An address the directory does not know: with unknown_recipients: pass
	// it is delivered unchanged either way; see what the dry run says.
	tok = suite.token(t)
	unknown := "nobody." + strings.ToLower(strings.ReplaceAll(tok, "_", "-")) + "@company.com"
	sendSwaks(t, addr, tok, unknown)
	suite.arrived(t, tok, map[string]int{unknown: 1}, 30*time.Second)
	t.Logf("dry run, unknown address: %s", logHas(t, p, 5*time.Second, "dry-run", "to="+unknown))

	// (b) the switch: dry_run: false and a reload, no restart.
	e.set(t, "dry_run: true", "dry_run: false")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	logHas(t, p, 10*time.Second, "reloaded")

	tok = suite.token(t)
	user = "live." + strings.ToLower(strings.ReplaceAll(tok, "_", "-"))
	sendSwaks(t, addr, tok, user+"@old.example")
	d := suite.arrived(t, tok, map[string]int{user + "@new.example": 1}, 30*time.Second)
	if !strings.Contains(string(d[0].Raw), "by mx-shim.old.example (mailfwd)") {
		t.Errorf("no Received header from the shim in the delivered message:\n%s", d[0].Raw)
	}

	tok = suite.token(t)
	unknown = "nobody." + strings.ToLower(strings.ReplaceAll(tok, "_", "-")) + "@company.com"
	sendSwaks(t, addr, tok, unknown)
	suite.arrived(t, tok, map[string]int{unknown: 1}, 30*time.Second)
	logHas(t, p, 5*time.Second, "pass-through: not in the directory, delivered unchanged", "to="+unknown)

	tok = suite.token(t)
	sendSwaks(t, addr, tok, "sales@company.com", "old.address@domain.com")
	suite.arrived(t, tok, map[string]int{"central@company.com": 1, "new.address@domain.ro": 1}, 30*time.Second)

	// Not a relay domain: still refused, the shim is no open relay.
	out, _ := swaks(t, addr, "--to", "someone@example.org", "--quit-after", "RCPT")
	if got := replyTo(out, "RCPT TO:"); !strings.HasPrefix(got, "554 5.7.1") {
		t.Errorf("RCPT for a domain that is not a relay domain: %q, want 554 5.7.1", got)
	}
	// mailfwd lookup with the same file answers what the relay does.
	lk := exec.Command(suite.binary, "lookup", "-config", e.path, "x@old.example")
	lo, err := lk.CombinedOutput()
	if err != nil || strings.TrimSpace(string(lo)) != "x@new.example" {
		t.Errorf("mailfwd lookup x@old.example: %v %q, want x@new.example", err, lo)
	}
}

// The MX relay example, run with its own TLS, LDAPS, SRS, limits, XCLIENT
// and admin listener (addresses and files replaced): STARTTLS is offered,
// the seed's migration and external forward arrive (the forward with an SRS
// sender in the example's SRS domain), /healthz is 200.
func TestExamplesMXRelay(t *testing.T) {
	addr, _ := freePort()
	admin, _ := freePort()
	e := exampleCopy(t, "mx-relay.yaml",
		`listen: [":25"]`, fmt.Sprintf("listen: [%q]", addr),
		"admin_listen: 127.0.0.1:9925", "admin_listen: "+admin,
		"servers: [ldaps://ldap1.example.net:636, ldaps://ldap2.example.net:636]",
		// A first server that refuses connections: the failover the example describes.
		fmt.Sprintf("servers: [ldaps://127.0.0.1:1, %s]", suite.servers["DS_LDAPS_URL"]),
		"next_hop: 127.0.0.1:10025", "next_hop: "+suite.servers["PF_SMTP"],
		"external_next_hop: 127.0.0.1:10027", "external_next_hop: "+suite.servers["SINK_ADDR"],
	)
	ca, err := os.ReadFile(suite.servers["DS_CA_CERT"])
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(e.dir, "etc/mailfwd/ldap-ca.pem"), ca, 0o600)
	p, err := suite.startRelayConfig(e.dir, e.path, addr, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()

	// STARTTLS with the example's certificate, verified as mx1.example.net
	// (swaks needs Net::SSLeay for TLS, which the suite does not install).
	tok := suite.token(t)
	roots := x509.NewCertPool()
	cert, _ := suite.exampleCerts(t)
	roots.AppendCertsFromPEM(cert)
	c, err := smtp.DialStartTLS(addr, &tls.Config{ServerName: "mx1.example.net", RootCAs: roots})
	if err != nil {
		t.Fatalf("STARTTLS to the MX relay example: %v", err)
	}
	msg := fmt.Sprintf("From: alice@example.org\r\nSubject: %s\r\n\r\nmx relay example over TLS\r\n", tok)
	if err := c.SendMail("alice@example.org", []string{"old.address@domain.com", "internal.user@company.com"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("sending over STARTTLS: %v", err)
	}
	if st, ok := c.TLSConnectionState(); !ok || len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName != "mx1.example.net" {
		t.Fatalf("no TLS, or not the example's certificate: %v %v", ok, st.PeerCertificates)
	}
	c.Quit()
	ds := suite.arrived(t, tok, map[string]int{"new.address@domain.ro": 1, "external.user@gmail.com": 1}, 30*time.Second)
	for _, d := range ds {
		if d.Rcpts[0] == "external.user@gmail.com" && (!strings.HasPrefix(d.MailFrom, "SRS0=") || !strings.HasSuffix(d.MailFrom, "@srs.example.net")) {
			t.Errorf("external forward sent from <%s>, want an SRS0 address in srs.example.net", d.MailFrom)
		}
		if !strings.Contains(string(d.Raw), "by mx1.example.net (mailfwd) with ESMTPS") {
			t.Errorf("no TLS Received header from mx1.example.net:\n%s", d.Raw)
		}
	}
	resp, err := http.Get(p.admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %s", resp.Status)
	}
	// JSON log lines, as the example configures.
	logHas(t, p, 5*time.Second, `"msg":"mailfwd started"`)
}

// The Postfix-map example with a ldap-virtual.cf as the seed's Postfix has
// it: mailfwd lookup with the example config expands the seed's scenarios.
func TestExamplesPostfixMap(t *testing.T) {
	e := exampleCopy(t, "postfix-map.yaml")
	for addr, want := range map[string]string{
		"sales@company.com":         "central@company.com",
		"old.address@domain.com":    "new.address@domain.ro",
		"internal.user@company.com": "external.user@gmail.com",
	} {
		out, err := exec.Command(suite.binary, "lookup", "-config", e.path, addr).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("lookup %s: %v %q, want %s", addr, err, out, want)
		}
	}
	cmd := exec.Command(suite.binary, "lookup", "-config", e.path, "nobody@company.com")
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("lookup nobody@company.com: exit %d, want 1 (not found)\n%s", code, out)
	}
}
