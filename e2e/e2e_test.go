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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The e2e relay's SRS setup.
const (
	srsDomain = "srs.e2e.test"
	srsSecret = "e2e-srs-secret"
)

var (
	servers = map[string]string{} // variables printed by the start scripts
	binary  string                // the mailfwd binary under test
	relay   *mailfwdProc          // the shared relay most tests use
	// serverRoot holds every server's tree (389-DS, slapd, the sink, each
	// Postfix): this run's own, so nothing an earlier run left in /tmp is
	// reused; with E2E_KEEP=1 a fixed one, so the next run reuses them.
	serverRoot string
)

// keptServerRoot is serverRoot under E2E_KEEP=1.
const keptServerRoot = "/tmp/mailfwd-e2e-kept"

func scriptPath(name string) string { return filepath.Join("scripts", name) }

// serverDir is where the suite keeps the named server's tree.
func serverDir(name string) string { return filepath.Join(serverRoot, name) }

// scriptEnv is the environment of every start/stop script: the trees under
// serverRoot, then extra (later entries win).
func scriptEnv(extra ...string) []string {
	return append(append(os.Environ(),
		"DS_DIR="+serverDir("389ds"), "SLAPD_DIR="+serverDir("slapd"),
		"SINK_ROOT="+serverDir("sink"), "PF_DIR="+serverDir("postfix")), extra...)
}

// runScript runs one of our start/stop scripts and merges the KEY='value'
// lines it prints into servers.
func runScript(name string, env ...string) error {
	vars, err := runScriptVars(name, env...)
	for k, v := range vars {
		servers[k] = v
	}
	return err
}

// runScriptVars runs a start/stop script for a server of a test's own
// (another port and tree) and returns the KEY='value' lines it prints,
// leaving the suite's servers as they are.
func runScriptVars(name string, env ...string) (map[string]string, error) {
	cmd := exec.Command(scriptPath(name))
	cmd.Env = scriptEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %v\n%s%s", name, err, out.String(), errb.String())
	}
	vars := map[string]string{}
	re := regexp.MustCompile(`^([A-Z_]+)='(.*)'$`)
	for _, l := range strings.Split(out.String(), "\n") {
		if m := re.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			vars[m[1]] = m[2]
		}
	}
	return vars, nil
}

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
	serverRoot = filepath.Join(tmp, "servers")
	if os.Getenv("E2E_KEEP") == "1" {
		serverRoot = keptServerRoot
	}
	// Postfix's and 389-DS's unprivileged processes must reach their trees.
	for _, d := range []string{tmp, serverRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 1, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return 1, err
		}
	}
	binary = filepath.Join(tmp, "mailfwd")
	// The image's build command (Dockerfile), so CI tests what ships.
	if out, err := exec.Command("../deploy/build-static.sh", binary).CombinedOutput(); err != nil {
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
	for _, s := range []string{"start-389ds.sh", "start-slapd.sh", "start-sink.sh", "start-postfix.sh"} {
		t0 := time.Now()
		if err := runScript(s, env[s]...); err != nil {
			stopServers()
			return 1, err
		}
		fmt.Printf("e2e: %s up in %v\n", s, time.Since(t0).Round(time.Millisecond))
	}
	defer stopServers()
	for _, k := range []string{"DS_URL", "SLAPD_URL", "PF_SMTP", "PF_CONF", "SINK_DIR", "SINK_ADDR"} {
		if servers[k] == "" {
			return 1, fmt.Errorf("start scripts did not print %s (got %v)", k, servers)
		}
	}
	fmt.Printf("e2e: servers up in %v: %v\n", time.Since(start).Round(time.Millisecond), servers)
	relay, err = startMailfwd(filepath.Join(tmp, "shared"))
	if err != nil {
		return 1, err
	}
	defer relay.stop()
	code := m.Run()
	if deadServers() && code == 0 {
		code = 1
	}
	return code, nil
}

// deadServers reports (with the tail of its log) each of the suite's servers
// that is not running at the end of the run: tests stop and start them, but
// always leave them up, so a dead one crashed under a test (389-DS's sync
// plugin has crashed in CI) and every later failure is its consequence.
func deadServers() bool {
	logs := map[string]string{
		"DS_PID": filepath.Join(servers["DS_LOG"], "errors"), "SLAPD_PID": servers["SLAPD_LOG"],
		"PF_PID": servers["PF_LOG"], "SINK_PID": servers["SINK_LOG"],
	}
	dead := false
	for _, k := range []string{"DS_PID", "SLAPD_PID", "PF_PID", "SINK_PID"} {
		pid, err := strconv.Atoi(servers[k])
		if err != nil || running(pid) {
			continue
		}
		dead = true
		fmt.Printf("e2e: FAIL: the suite's server %s=%d is not running at the end of the run; the end of %s:\n", k, pid, logs[k])
		if b, err := os.ReadFile(logs[k]); err == nil {
			lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
			fmt.Println(strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	}
	return dead
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

func stopServers() {
	if os.Getenv("E2E_KEEP") == "1" {
		return
	}
	stopDifferentialPostfixes()
	for _, s := range []string{"stop-postfix.sh", "stop-sink.sh", "stop-slapd.sh", "stop-389ds.sh"} {
		if err := runScript(s); err != nil {
			fmt.Fprintln(os.Stderr, "e2e teardown:", err)
		}
	}
}

// mailfwdProc is one running mailfwd binary.
type mailfwdProc struct {
	dir, addr, spool string
	admin            string // http://host:port of its admin listener (metrics_test.go)
	cmd              *exec.Cmd
	log              *os.File
	done             chan error
	stopped          sync.Once
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// relayConfig is the config the e2e relays share: the real 389-DS (bound
// as the read-only user), SRS, nextHop for local mail and the sink standing
// in for the outside world's MXes; extra is appended (more top-level keys).
// It writes the secret files the config names into dir.
func relayConfig(dir, hostname, addr, admin, nextHop, extra string) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, "ldap.secret"), []byte("postfix-ldap-secret\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "srs.secrets"), []byte(srsSecret+"\n"), 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf(`hostname: %s
listen: [%q]
admin_listen: %q
relay_domains: [domain.com, domain.ro, company.com]
spool_dir: spool
lookup_timeout: 5s
limits: {max_connections_per_ip: 1000, connection_rate_per_ip: 1000000}   # load tests from one loopback address
directory:
  ldap:
    servers: [%q]
    bind_dn: uid=postfix-ldap,ou=system,dc=example,dc=net
    bind_password_file: ldap.secret
    search_base: dc=example,dc=net
    query_filter: "(|(mail=%%s)(mailAlternateAddress=%%s))"
    result_attributes: [mailForwardingAddress]
    timeout: 2s
srs:
  domain: %s
  secrets_file: srs.secrets
delivery:
  next_hop: %q
  external_next_hop: %q   # smtp-sink stands in for the outside world's MXes
  retry_min: 300ms
  retry_max: 1s
  connect_timeout: 2s
%s`, hostname, addr, admin, servers["DS_URL"], srsDomain, nextHop, servers["SINK_ADDR"], extra), nil
}

// startMailfwd writes a config for the real directory and Postfix into dir
// and starts the binary on a free port. The same dir (spool) can be started
// again after a kill.
func startMailfwd(dir string) (*mailfwdProc, error) { return startMailfwdExtra(dir, "") }

// unsafeSpool is the config of relays whose spool a test puts on a small
// tmpfs (to fill it, or make it read-only): serve refuses tmpfs otherwise,
// and the default free-space reserve is bigger than the whole tmpfs.
const unsafeSpool = "spool: {unsafe_filesystem: true, min_free: 0}\n"

// startMailfwdExtra is startMailfwd with extra top-level config.
func startMailfwdExtra(dir, extra string) (*mailfwdProc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg, err := relayConfig(dir, "mailfwd.e2e.test", addr, adminAddr, servers["PF_SMTP"], "log:\n  level: debug\n"+extra)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "mailfwd.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := startRelayConfig(dir, cfgPath, addr, adminAddr)
	if err != nil {
		return nil, err
	}
	p.spool = filepath.Join(dir, "spool", "msg")
	return p, nil
}

func (p *mailfwdProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.log.Close()
}

func (p *mailfwdProc) stop() {
	p.stopped.Do(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(40 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		p.log.Close()
	})
}

// spooled counts committed messages in the relay's spool.
func (p *mailfwdProc) spooled(t *testing.T) int {
	t.Helper()
	return len(spoolGlob(p.spool, "*.msg"))
}

// spoolGlob matches pattern against the names of the files of a spool's
// msg directory (in its hashed subdirectories, and at the top, where
// nothing of ours should be), and returns their paths.
func spoolGlob(msgDir, pattern string) []string {
	top, _ := filepath.Glob(filepath.Join(msgDir, pattern))
	sub, _ := filepath.Glob(filepath.Join(msgDir, "*", pattern))
	return append(top, sub...)
}

// listSpool lists a spool's msg directory: each file's path relative to
// it ("3F/ID.msg"), subdirectories descended into.
func listSpool(msgDir string) ([]string, error) {
	ents, err := os.ReadDir(msgDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			out = append(out, e.Name())
			continue
		}
		sub, err := os.ReadDir(filepath.Join(msgDir, e.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range sub {
			out = append(out, e.Name()+"/"+f.Name())
		}
	}
	return out, nil
}

func (p *mailfwdProc) logTail(t *testing.T) string {
	b, _ := os.ReadFile(p.log.Name())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
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

var tokenSeq int
var tokenMu sync.Mutex

// token is a unique marker put in a message's Subject to find it at the sink.
func token(t *testing.T) string {
	tokenMu.Lock()
	defer tokenMu.Unlock()
	tokenSeq++
	return fmt.Sprintf("e2e-%d-%d-%s", os.Getpid(), tokenSeq, strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()))
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

// arrived waits until the sink has messages carrying tok whose envelope
// recipients, counted, equal want, and returns them.
func arrived(t *testing.T, tok string, want map[string]int, timeout time.Duration) []Dumped {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got map[string]int
	for {
		dumps, err := ReadSinkDumps(servers["SINK_DIR"])
		if err != nil {
			t.Fatal(err)
		}
		var mine []Dumped
		for _, d := range dumps {
			if bytes.Contains(d.Raw, []byte(tok)) {
				mine = append(mine, d)
			}
		}
		got = CountRcpts(mine)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return mine
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: sink has recipients %v, want %v\nmailfwd log:\n%s", tok, got, want, relay.logTail(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// 1. Domain migration: the old address arrives at Postfix (and past it) as
// the new one.
func TestScenarioMigration(t *testing.T) {
	tok := token(t)
	sendSwaks(t, relay.addr, tok, "old.address@domain.com")
	d := arrived(t, tok, map[string]int{"new.address@domain.ro": 1}, 30*time.Second)
	if !bytes.Contains(d[0].Raw, []byte("by mailfwd.e2e.test (mailfwd)")) {
		t.Errorf("no mailfwd Received header in what Postfix passed on:\n%s", d[0].Raw)
	}
}

// 2. External forward: the internal address is queued for the outside one.
func TestScenarioExternalForward(t *testing.T) {
	tok := token(t)
	sendSwaks(t, relay.addr, tok, "internal.user@company.com")
	arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)
}

// 3. Aliases: each alias arrives as central@, and one message to all three
// arrives once.
func TestScenarioAliases(t *testing.T) {
	for _, a := range []string{"sales@company.com", "info@company.com", "support@company.com"} {
		tok := token(t)
		sendSwaks(t, relay.addr, tok, a)
		arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)
	}
	tok := token(t)
	sendSwaks(t, relay.addr, tok, "sales@company.com", "info@company.com", "support@company.com")
	arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)
	time.Sleep(time.Second) // a duplicate would show up by now
	if d := arrived(t, tok, map[string]int{"central@company.com": 1}, time.Second); len(d) != 1 {
		t.Fatalf("%d messages at the sink, want 1", len(d))
	}
}

// 4. Refusals: unknown user, directory down, non-relay domain.
func TestRcptRefusals(t *testing.T) {
	check := func(t *testing.T, to, want string) {
		t.Helper()
		out, _ := swaks(t, relay.addr, "--to", to, "--quit-after", "RCPT")
		if got := replyTo(out, "RCPT TO:"); !strings.HasPrefix(got, want) {
			t.Fatalf("RCPT TO:<%s>: reply %q, want %q\n%s", to, got, want, out)
		}
	}
	t.Run("unknown recipient", func(t *testing.T) { check(t, "nobody@company.com", "550 5.1.1") })
	t.Run("non-relay domain", func(t *testing.T) { check(t, "someone@example.org", "554 5.7.1") })
	t.Run("directory stopped", func(t *testing.T) {
		check(t, "sales@company.com", "250") // now in the relay's cache
		if err := runScript("stop-389ds.sh", "DS_KEEP=1"); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := runScript("start-389ds.sh"); err != nil {
				t.Fatal(err)
			}
		}()
		// Never asked before, so not in the relay's cache: 451, never 5xx.
		check(t, "Never.Asked@domain.ro", "451 4.3.0")
		check(t, "nobody-else@company.com", "451 4.3.0") // unknown is not "unknown" while we cannot look
		// Asked a moment ago: the cache answers while the directory is down.
		check(t, "sales@company.com", "250")
		// mailfwd lookup, with the relay's own config: 75 (EX_TEMPFAIL).
		cmd := exec.Command(binary, "lookup", "-config", filepath.Join(relay.dir, "mailfwd.yaml"), "never.asked@company.com")
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
	if err := runScript("stop-postfix.sh", "PF_KEEP=1"); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			runScript("start-postfix.sh")
		}
	}()
	toks := []string{token(t), token(t), token(t)}
	before := relay.spooled(t)
	for _, tok := range toks {
		sendSwaks(t, relay.addr, tok, "old.address@domain.com")
	}
	time.Sleep(2 * time.Second) // several retries against the stopped Postfix
	if n := relay.spooled(t); n < before+len(toks) {
		t.Fatalf("%d messages in the spool while Postfix is down, want at least %d", n, before+len(toks))
	}
	if err := runScript("start-postfix.sh"); err != nil {
		t.Fatal(err)
	}
	restarted = true
	for _, tok := range toks {
		arrived(t, tok, map[string]int{"new.address@domain.ro": 1}, 60*time.Second)
	}
}

// 6. SIGKILL right after a batch got its 250s: after a restart on the same
// spool every accepted message arrives.
func TestKillAfterAccept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "killed")
	p, err := startMailfwd(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	toks := make([]string, n)
	for i := range toks {
		toks[i] = token(t)
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
	p2, err := startMailfwd(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.stop()
	deadline := time.Now().Add(60 * time.Second)
	for _, tok := range toks {
		for {
			dumps, err := ReadSinkDumps(servers["SINK_DIR"])
			if err != nil {
				t.Fatal(err)
			}
			var mine []Dumped
			for _, d := range dumps {
				if bytes.Contains(d.Raw, []byte(tok)) {
					mine = append(mine, d)
				}
			}
			got := CountRcpts(mine)
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

// startFreshPostfix builds and starts a Postfix instance of its own in dir
// (start-postfix.sh) on port, with mainExtra applied to main.cf, after
// removing whatever an earlier or interrupted run left there (a kept tree
// keeps its old port and main.cf). It stops at the end of the test unless
// E2E_KEEP=1, and returns the script's variables (PF_SMTP, PF_LOG, ...).
func startFreshPostfix(t *testing.T, dir, port, hostname, mainExtra string, more ...string) map[string]string {
	t.Helper()
	if !strings.HasPrefix(dir, serverRoot+"/") {
		t.Fatalf("Postfix tree %s outside the run's server root %s", dir, serverRoot)
	}
	if _, err := runScriptEnv("stop-postfix.sh", "PF_DIR="+dir); err != nil {
		t.Fatal(err)
	}
	env := append([]string{"PF_DIR=" + dir, "PF_PORT=" + port, "PF_HOSTNAME=" + hostname, "PF_MAIN_EXTRA=" + mainExtra}, more...)
	pf, err := runScriptEnv("start-postfix.sh", env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("E2E_KEEP") == "1" {
			return
		}
		if _, err := runScriptEnv("stop-postfix.sh", "PF_DIR="+dir); err != nil {
			t.Error(err)
		}
	})
	return pf
}
