//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestMain builds the harness (suite): the servers, the binary and the
// shared relay; runs the tests; and takes it all down again.
func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	isolate()
	tmp, err := runDir()
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(tmp)
	s := &harness{servers: map[string]string{}, binary: filepath.Join(tmp, "mailfwd"), root: filepath.Join(tmp, "servers")}
	if os.Getenv("E2E_KEEP") == "1" {
		s.root = keptServerRoot
	}
	suite = s
	// Postfix's and 389-DS's unprivileged processes must reach their trees.
	for _, d := range []string{tmp, s.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 1, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return 1, err
		}
	}
	// The image's build command (Dockerfile), so CI tests what ships.
	if out, err := exec.Command("../deploy/build-static.sh", s.binary).CombinedOutput(); err != nil {
		return 1, fmt.Errorf("building mailfwd: %v\n%s", err, out)
	}
	start := time.Now()
	corpus, err := filepath.Abs(filepath.Join("testdata", "differential.ldif"))
	if err != nil {
		return 1, err
	}
	env := map[string][]string{ // differential_test.go's entries, after the seed
		"start-389ds.sh": {"DS_EXTRA_LDIF=" + corpus},
		"start-slapd.sh": {"SLAPD_EXTRA_LDIF=" + corpus},
	}
	for _, script := range []string{"start-389ds.sh", "start-slapd.sh", "start-sink.sh", "start-postfix.sh"} {
		t0 := time.Now()
		if err := s.runScript(script, env[script]...); err != nil {
			s.stopServers()
			return 1, err
		}
		fmt.Printf("e2e: %s up in %v\n", script, time.Since(t0).Round(time.Millisecond))
	}
	defer s.stopServers()
	for _, k := range []string{"DS_URL", "SLAPD_URL", "PF_SMTP", "PF_CONF", "SINK_DIR", "SINK_ADDR"} {
		if s.servers[k] == "" {
			return 1, fmt.Errorf("start scripts did not print %s (got %v)", k, s.servers)
		}
	}
	fmt.Printf("e2e: servers up in %v: %v\n", time.Since(start).Round(time.Millisecond), s.servers)
	s.relay, err = s.startMailfwd(filepath.Join(tmp, "shared"))
	if err != nil {
		return 1, err
	}
	defer s.relay.stop()
	code := m.Run()
	if s.deadServers() && code == 0 {
		code = 1
	}
	return code, nil
}

// running: pid exists and is not a zombie (the reaper may not have
// collected a dead daemon yet).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// runDir makes this run's directory: E2E_ROOT when set (it must not hold
// anything yet: a check script names it to find what the run left), else a
// fresh one under $TMPDIR.
func runDir() (string, error) {
	d := os.Getenv("E2E_ROOT")
	if d == "" {
		return os.MkdirTemp("", "mailfwd-e2e-")
	}
	if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
		return "", fmt.Errorf("E2E_ROOT=%s is not empty", d)
	}
	return d, os.MkdirAll(d, 0o755)
}

// isolate keeps the tools the suite runs from reading the invoking user's
// or the system's configuration: OpenLDAP's clients skip ldap.conf and
// .ldaprc (LDAPNOINIT), Postfix commands get -c with the suite's own
// config directory (so MAIL_CONFIG must not point elsewhere), swaks runs
// with --config (no .swaksrc); and no variable of the caller's steers
// swaks, docker-compose, faketime, Python (dkimpy) or Perl (Mail::SRS).
func isolate() {
	os.Setenv("LDAPNOINIT", "1")
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "MAIL_CONFIG" || (strings.HasPrefix(k, "LDAP") && k != "LDAPNOINIT") || slices.ContainsFunc(
			[]string{"SWAKS_", "COMPOSE_", "DOCKER_", "FAKETIME", "PYTHONPATH", "PYTHONHOME", "PERL5"},
			func(p string) bool { return strings.HasPrefix(k, p) }) {
			os.Unsetenv(k)
		}
	}
}

// swaks runs the swaks client against addr and returns its transcript.
func swaks(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	all := append([]string{"--config", "--server", host, "--port", port, "--from", "alice@example.org", "--helo", "client.e2e.test", "--timeout", "30"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "swaks", all...).CombinedOutput()
	return string(out), err
}

// replyTo returns the server's reply to the first client command starting
// with cmd in a swaks transcript ("" if there is none).
func replyTo(transcript, cmd string) string {
	sc := bufio.NewScanner(strings.NewReader(transcript))
	sent := false
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "-> "+cmd):
			sent = true
		case sent && (strings.HasPrefix(l, "<-  ") || strings.HasPrefix(l, "<** ")):
			return strings.TrimSpace(l[4:])
		}
	}
	return ""
}

// sendSwaks sends one message with subject tok and fails the test unless it
// is accepted with a queue ID.
func sendSwaks(t *testing.T, addr, tok string, rcpts ...string) {
	t.Helper()
	out, err := swaks(t, addr, "--to", strings.Join(rcpts, ","), "--header", "Subject: "+tok)
	if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("swaks to %v: %v\n%s", rcpts, err, out)
	}
}

// 1. Domain migration: the old address arrives at Postfix (and past it) as
// the new one.
func TestScenarioMigration(t *testing.T) {
	tok := suite.token(t)
	sendSwaks(t, suite.relay.addr, tok, "old.address@domain.com")
	d := suite.arrived(t, tok, map[string]int{"new.address@domain.ro": 1}, 30*time.Second)
	if !bytes.Contains(d[0].Raw, []byte("by mailfwd.e2e.test (mailfwd)")) {
		t.Errorf("no mailfwd Received header in what Postfix passed on:\n%s", d[0].Raw)
	}
}

// 2. External forward: the internal address is queued for the outside one.
func TestScenarioExternalForward(t *testing.T) {
	tok := suite.token(t)
	sendSwaks(t, suite.relay.addr, tok, "internal.user@company.com")
	suite.arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)
}

// 3. Aliases: each alias arrives as central@, and one message to all three
// arrives once.
func TestScenarioAliases(t *testing.T) {
	for _, a := range []string{"sales@company.com", "info@company.com", "support@company.com"} {
		tok := suite.token(t)
		sendSwaks(t, suite.relay.addr, tok, a)
		suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)
	}
	tok := suite.token(t)
	sendSwaks(t, suite.relay.addr, tok, "sales@company.com", "info@company.com", "support@company.com")
	suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)
	time.Sleep(time.Second) // a duplicate would show up by now
	if d := suite.arrived(t, tok, map[string]int{"central@company.com": 1}, time.Second); len(d) != 1 {
		t.Fatalf("%d messages at the sink, want 1", len(d))
	}
}

// 4. Refusals: unknown user, directory down, non-relay domain.
func TestRcptRefusals(t *testing.T) {
	check := func(t *testing.T, to, want string) {
		t.Helper()
		out, _ := swaks(t, suite.relay.addr, "--to", to, "--quit-after", "RCPT")
		if got := replyTo(out, "RCPT TO:"); !strings.HasPrefix(got, want) {
			t.Fatalf("RCPT TO:<%s>: reply %q, want %q\n%s", to, got, want, out)
		}
	}
	t.Run("unknown recipient", func(t *testing.T) { check(t, "nobody@company.com", "550 5.1.1") })
	t.Run("non-relay domain", func(t *testing.T) { check(t, "someone@example.org", "554 5.7.1") })
	t.Run("directory stopped", func(t *testing.T) {
		check(t, "sales@company.com", "250") // now in the relay's cache
		if err := suite.runScript("stop-389ds.sh", "DS_KEEP=1"); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := suite.runScript("start-389ds.sh"); err != nil {
				t.Fatal(err)
			}
		}()
		// Never asked before, so not in the relay's cache: 451, never 5xx.
		check(t, "Never.Asked@domain.ro", "451 4.3.0")
		check(t, "nobody-else@company.com", "451 4.3.0") // unknown is not "unknown" while we cannot look
		// Asked a moment ago: the cache answers while the directory is down.
		check(t, "sales@company.com", "250")
		// mailfwd lookup, with the relay's own config: 75 (EX_TEMPFAIL).
		cmd := exec.Command(suite.binary, "lookup", "-config", filepath.Join(suite.relay.dir, "mailfwd.yaml"), "never.asked@company.com")
		out, err := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != 75 {
			t.Errorf("mailfwd lookup with the directory down: exit %d (%v), want 75\n%s", code, err, out)
		}
	})
	t.Run("directory back", func(t *testing.T) { check(t, "sales@company.com", "250") })
}

// 5. Postfix stopped: messages are accepted, stay in the spool, and arrive
// once Postfix is back.
func TestNextHopDown(t *testing.T) {
	if err := suite.runScript("stop-postfix.sh", "PF_KEEP=1"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			suite.runScript("start-postfix.sh")
		}
	}()
	toks := []string{suite.token(t), suite.token(t), suite.token(t)}
	before := suite.relay.spooled(t)
	for _, tok := range toks {
		sendSwaks(t, suite.relay.addr, tok, "old.address@domain.com")
	}
	time.Sleep(2 * time.Second) // several retries against the stopped Postfix
	if n := suite.relay.spooled(t); n < before+len(toks) {
		t.Fatalf("%d messages in the spool while Postfix is down, want at least %d", n, before+len(toks))
	}
	if err := suite.runScript("start-postfix.sh"); err != nil {
		t.Fatal(err)
	}
	restarted = true
	for _, tok := range toks {
		suite.arrived(t, tok, map[string]int{"new.address@domain.ro": 1}, 60*time.Second)
	}
}

// 6. SIGKILL right after a batch got its 250s: after a restart on the same
// spool every accepted message arrives.
func TestKillAfterAccept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "killed")
	p, err := suite.startMailfwd(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	toks := make([]string, n)
	for i := range toks {
		toks[i] = suite.token(t)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- sendGo(p.addr, toks[i], []string{"sales@company.com", "internal.user@company.com"})
		}()
	}
	wg.Wait()
	p.kill() // at once: deliveries are in flight
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a message was not accepted: %v", err)
		}
	}
	p2, err := suite.startMailfwd(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.stop()
	deadline := time.Now().Add(60 * time.Second)
	for _, tok := range toks {
		for {
			got := CountRcpts(suite.carrying(t, tok))
			if got["central@company.com"] >= 1 && got["external.user@gmail.com"] >= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("message %s accepted before the kill never fully arrived (got %v)\nlog:\n%s", tok, got, p2.logTail(t))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// sendGo sends one message with the Go client (swaks is one process per
// message, too slow to put a batch in flight).
func sendGo(addr, tok string, rcpts []string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.e2e.test"); err != nil {
		return err
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: alice@example.org\r\nSubject: %s\r\n\r\nbatch message\r\n", tok)
	if _, err := w.CloseWithResponse(); err != nil {
		return err
	}
	return c.Quit()
}

// selfSignedCA makes an ECDSA key and a certificate for it that is its own
// CA: a server certificate a client can be told to trust (PEM, PEM).
func selfSignedCA(t *testing.T, cn string, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		DNSNames: dnsNames, IPAddresses: ips, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
