//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// The e2e relay's SRS setup.
const (
	srsDomain = "srs.e2e.test"
	srsSecret = "e2e-srs-secret"
)

// keptServerRoot is the harness's root under E2E_KEEP=1.
const keptServerRoot = "/tmp/mailfwd-e2e-kept"

// suite is the harness TestMain builds before any test runs (and tears
// down after the last): the one place the tests' shared state lives.
var suite *harness

// harness is what every e2e test shares. TestMain starts, once per run,
// with the scripts in scripts/ (all on loopback, fixed ports):
//
//   - 389 Directory Server and OpenLDAP's slapd, each seeded with
//     deploy/seed.ldif and testdata/differential.ldif;
//   - smtp-sink, standing in for the outside world's MXes: every message it
//     receives is dumped under SINK_DIR (ReadSinkDumps reads them);
//   - Postfix, the next hop for local mail, which relays to the sink;
//   - the mailfwd binary, built as the image builds it
//     (deploy/build-static.sh), and one relay on the suite's config
//     (testdata/relay/mailfwd.yaml) that most tests send through.
//
// Tests needing a relay of their own start one from a scenario directory,
// testdata/NAME/, named for its test: NAME/mailfwd.yaml is a text/template
// config whose placeholders ({{.Listen}}, {{.NextHop}}, ...) the test
// fills (renderConfig; testdata/README.md lists them), and which may build
// on the suite's relay ({{template "relay" .}}, relayConfig); other files
// of the scenario (haproxy/haproxy.cfg) are rendered the same way.
type harness struct {
	// servers holds the KEY='value' lines the start scripts printed:
	// DS_URL, DS_LDAPS_URL, DS_CA_CERT, DS_ROOT_DN, SLAPD_URL, PF_SMTP,
	// PF_CONF, PF_LOG, SINK_ADDR, SINK_DIR, the servers' PIDs and logs.
	servers map[string]string
	binary  string       // the mailfwd binary under test
	relay   *mailfwdProc // the shared relay
	// root holds every server's tree (389-DS, slapd, the sink, each
	// Postfix) as root/NAME (serverDir): this run's own, so nothing an
	// earlier run left in /tmp is reused; with E2E_KEEP=1 keptServerRoot,
	// so the next run reuses them.
	root string

	tokens                  atomic.Int64 // token's sequence
	exampleCert, exampleKey []byte       // examples_test.go's certificate, made on first use
}

func scriptPath(name string) string { return filepath.Join("scripts", name) }

// serverDir is where the suite keeps the named server's tree.
func (s *harness) serverDir(name string) string { return filepath.Join(s.root, name) }

// scriptEnv is the environment of every start/stop script: the trees under
// the harness's root, then extra (later entries win).
func (s *harness) scriptEnv(extra ...string) []string {
	return append(append(os.Environ(),
		"DS_DIR="+s.serverDir("389ds"), "SLAPD_DIR="+s.serverDir("slapd"),
		"SINK_ROOT="+s.serverDir("sink"), "PF_DIR="+s.serverDir("postfix")), extra...)
}

// runScript runs one of our start/stop scripts for the suite's servers and
// merges the KEY='value' lines it prints into s.servers.
func (s *harness) runScript(name string, env ...string) error {
	kv, err := s.runScriptVars(name, env...)
	maps.Copy(s.servers, kv)
	return err
}

// runScriptVars runs a start/stop script for a server of a test's own
// (another port and tree) and returns the KEY='value' lines it prints,
// leaving the suite's servers as they are.
func (s *harness) runScriptVars(name string, env ...string) (map[string]string, error) {
	cmd := exec.Command(scriptPath(name))
	cmd.Env = s.scriptEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %v: %v\n%s%s", name, env, err, out.String(), errb.String())
	}
	kv := map[string]string{}
	re := regexp.MustCompile(`^([A-Z_]+)='(.*)'$`)
	for _, l := range strings.Split(out.String(), "\n") {
		if m := re.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			kv[m[1]] = m[2]
		}
	}
	return kv, nil
}

// stopServers stops the suite's servers (and the differential test's
// Postfixes), unless E2E_KEEP=1 keeps them for the next run.
func (s *harness) stopServers() {
	if os.Getenv("E2E_KEEP") == "1" {
		return
	}
	s.stopDifferentialPostfixes()
	for _, name := range []string{"stop-postfix.sh", "stop-sink.sh", "stop-slapd.sh", "stop-389ds.sh"} {
		if err := s.runScript(name); err != nil {
			fmt.Fprintln(os.Stderr, "e2e teardown:", err)
		}
	}
}

// deadServers reports (with the tail of its log) each of the suite's servers
// that is not running at the end of the run: tests stop and start them, but
// always leave them up, so a dead one crashed under a test (389-DS's sync
// plugin has crashed in CI) and every later failure is its consequence.
func (s *harness) deadServers() bool {
	logs := map[string]string{
		"DS_PID": filepath.Join(s.servers["DS_LOG"], "errors"), "SLAPD_PID": s.servers["SLAPD_LOG"],
		"PF_PID": s.servers["PF_LOG"], "SINK_PID": s.servers["SINK_LOG"],
	}
	dead := false
	for _, k := range []string{"DS_PID", "SLAPD_PID", "PF_PID", "SINK_PID"} {
		pid, err := strconv.Atoi(s.servers[k])
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

// startFreshPostfix builds and starts a Postfix instance of its own in dir
// (start-postfix.sh) on port, with mainExtra applied to main.cf, after
// removing whatever an earlier or interrupted run left there (a kept tree
// keeps its old port and main.cf). It stops at the end of the test unless
// E2E_KEEP=1, and returns the script's variables (PF_SMTP, PF_LOG, ...).
func (s *harness) startFreshPostfix(t *testing.T, dir, port, hostname, mainExtra string, more ...string) map[string]string {
	t.Helper()
	if !strings.HasPrefix(dir, s.root+"/") {
		t.Fatalf("Postfix tree %s outside the run's server root %s", dir, s.root)
	}
	if _, err := s.runScriptVars("stop-postfix.sh", "PF_DIR="+dir); err != nil {
		t.Fatal(err)
	}
	env := append([]string{"PF_DIR=" + dir, "PF_PORT=" + port, "PF_HOSTNAME=" + hostname, "PF_MAIN_EXTRA=" + mainExtra}, more...)
	pf, err := s.runScriptVars("start-postfix.sh", env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("E2E_KEEP") == "1" {
			return
		}
		if _, err := s.runScriptVars("stop-postfix.sh", "PF_DIR="+dir); err != nil {
			t.Error(err)
		}
	})
	return pf
}

// vars are the values of a config template's placeholders: {{.Name}} in
// the file is vars{"Name": ...}. A placeholder without a value is an error.
type vars map[string]any

// renderConfig fills file, a template under testdata/ ("haproxy/haproxy.cfg",
// "hostile/mailfwd.yaml"), with v. The suite's relay config,
// testdata/relay/mailfwd.yaml, is always there as the template "relay",
// for a scenario to include ({{template "relay" .}}) and to customise by
// redefining its blocks ({{define "limits"}}...{{end}}). One function,
// json, writes a value as JSON (a YAML flow list: {{json .Directory}}).
func renderConfig(file string, v vars) (string, error) {
	const relay = "relay/mailfwd.yaml"
	tpl := template.New("").Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(x any) (string, error) { b, err := json.Marshal(x); return string(b), err },
	})
	parse := func(name, path string) error {
		b, err := os.ReadFile(filepath.Join("testdata", path))
		if err == nil {
			_, err = tpl.New(name).Parse(string(b))
		}
		return err
	}
	name := "relay"
	if err := parse(name, relay); err != nil {
		return "", err
	}
	if file != relay {
		name = file
		if err := parse(name, file); err != nil {
			return "", err
		}
	}
	var out strings.Builder
	if err := tpl.ExecuteTemplate(&out, name, v); err != nil {
		return "", err
	}
	return out.String(), nil
}

// writeConfig renders the template file (renderConfig) into dst, failing
// the test if it cannot, and returns dst.
func writeConfig(t *testing.T, dst, file string, v vars) string {
	t.Helper()
	text, err := renderConfig(file, v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return dst
}

// relayConfig writes dir/mailfwd.yaml, rendered from file: the suite's
// relay ("relay/mailfwd.yaml", the config the e2e relays share: the real
// 389-DS bound as the read-only user, SRS, Postfix as the next hop for
// local mail and the sink standing in for the outside world's MXes) or a
// scenario built on it. v must give Listen; everything else defaults to
// the suite's (Hostname mailfwd.e2e.test, Admin "" for none, Directory
// [DS_URL], NextHop PF_SMTP, ExternalNextHop SINK_ADDR, SRSDomain, Extra
// "": more top-level keys, appended). It writes the secret files the
// config names into dir too, and returns the config's path.
func (s *harness) relayConfig(dir, file string, v vars) (string, error) {
	if err := os.WriteFile(filepath.Join(dir, "ldap.secret"), []byte("postfix-ldap-secret\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "srs.secrets"), []byte(srsSecret+"\n"), 0o600); err != nil {
		return "", err
	}
	all := vars{
		"Hostname": "mailfwd.e2e.test", "Admin": "", "Directory": []string{s.servers["DS_URL"]},
		"NextHop": s.servers["PF_SMTP"], "ExternalNextHop": s.servers["SINK_ADDR"], "SRSDomain": srsDomain, "Extra": "",
	}
	maps.Copy(all, v)
	text, err := renderConfig(file, all)
	if err != nil {
		return "", err
	}
	cfgPath := filepath.Join(dir, "mailfwd.yaml")
	return cfgPath, os.WriteFile(cfgPath, []byte(text), 0o600)
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

// startMailfwd writes the suite's relay config (for the real directory and
// Postfix) into dir and starts the binary on a free port. The same dir
// (spool) can be started again after a kill.
func (s *harness) startMailfwd(dir string) (*mailfwdProc, error) { return s.startMailfwdExtra(dir, "") }

// unsafeSpool is the config of relays whose spool a test puts on a small
// tmpfs (to fill it, or make it read-only): serve refuses tmpfs otherwise,
// and the default free-space reserve is bigger than the whole tmpfs.
const unsafeSpool = "spool: {unsafe_filesystem: true, min_free: 0}\n"

// startMailfwdExtra is startMailfwd with extra top-level config.
func (s *harness) startMailfwdExtra(dir, extra string) (*mailfwdProc, error) {
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
	cfgPath, err := s.relayConfig(dir, "relay/mailfwd.yaml", vars{"Listen": addr, "Admin": adminAddr, "Extra": "log:\n  level: debug\n" + extra})
	if err != nil {
		return nil, err
	}
	p, err := s.startRelayConfig(dir, cfgPath, addr, adminAddr)
	if err != nil {
		return nil, err
	}
	p.spool = filepath.Join(dir, "spool", "msg")
	return p, nil
}

// startRelayConfig starts the binary on an existing config file whose
// SMTP listener is addr and waits until it listens. The log goes to
// dir/mailfwd.log (appended: a restart on the same dir keeps the history).
func (s *harness) startRelayConfig(dir, cfgPath, addr, admin string) (*mailfwdProc, error) {
	return s.startRelayConfigWith(dir, cfgPath, addr, admin, nil)
}

// startRelayConfigWith runs the relay under wrap (e.g. prlimit ... --).
func (s *harness) startRelayConfigWith(dir, cfgPath, addr, admin string, wrap []string) (*mailfwdProc, error) {
	if out, err := exec.Command(s.binary, "check-config", "-config", cfgPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("check-config %s: %v: %s", cfgPath, err, out)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "mailfwd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	p := &mailfwdProc{dir: dir, addr: addr, log: logf, done: make(chan error, 1)}
	if admin != "" {
		p.admin = "http://" + admin
	}
	argv := append(append([]string{}, wrap...), s.binary, "serve", "-config", cfgPath)
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { p.done <- p.cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p, nil
		}
		select {
		case err := <-p.done:
			logf.Close()
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("mailfwd exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			return nil, fmt.Errorf("mailfwd not listening on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// token is a unique marker put in a message's Subject to find it at the sink.
func (s *harness) token(t *testing.T) string {
	return fmt.Sprintf("e2e-%d-%d-%s", os.Getpid(), s.tokens.Add(1), strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()))
}

// carrying is what the sink has received so far of the messages carrying
// tok.
func (s *harness) carrying(t *testing.T, tok string) []Dumped {
	t.Helper()
	dumps, err := ReadSinkDumps(s.servers["SINK_DIR"])
	if err != nil {
		t.Fatal(err)
	}
	var mine []Dumped
	for _, d := range dumps {
		if bytes.Contains(d.Raw, []byte(tok)) {
			mine = append(mine, d)
		}
	}
	return mine
}

// arrived waits until the sink has messages carrying tok whose envelope
// recipients, counted, equal want, and returns them.
func (s *harness) arrived(t *testing.T, tok string, want map[string]int, timeout time.Duration) []Dumped {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var got map[string]int
	for {
		mine := s.carrying(t, tok)
		got = CountRcpts(mine)
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return mine
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: sink has recipients %v, want %v\nmailfwd log:\n%s", tok, got, want, s.relay.logTail(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
