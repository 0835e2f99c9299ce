package main

// The servers of the benchmark: 389-DS and Postfix through e2e/scripts,
// postsrsd, smtp-sink and mailfwd started directly.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runScript runs an e2e start/stop script and parses its KEY='value' lines.
func runScript(env []string, prefix string, script string) (map[string]string, error) {
	cmd := exec.Command("sh", "-c", prefix+"exec "+shq(script))
	cmd.Env = append(os.Environ(), env...)
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %s", filepath.Base(script), err, strings.TrimSpace(errb.String()))
	}
	kv := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok {
			kv[k] = strings.Trim(v, "'")
		}
	}
	return kv, nil
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// waitBanner waits until addr greets with 220.
func waitBanner(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			l, err2 := bufio.NewReader(c).ReadString('\n')
			fmt.Fprintf(c, "QUIT\r\n")
			c.Close()
			if err2 == nil && strings.HasPrefix(l, "220") {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no SMTP banner on %s after %v", addr, timeout)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

func waitListen(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v", addr, timeout)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// stopProc sends SIGTERM to the process group, then SIGKILL after grace.
func stopProc(cmd *exec.Cmd, done <-chan struct{}, grace time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	pg := cmd.Process.Pid
	syscall.Kill(-pg, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(grace):
		syscall.Kill(-pg, syscall.SIGKILL)
		<-done
	}
}

// sink is one smtp-sink with a running counter (-c), no dumps.
type sink struct {
	cmd     *exec.Cmd
	done    chan struct{}
	counter *sinkCounter
}

func startSink(addr string) (*sink, error) {
	args := []string{"-c", "-4", "-h", "sink.bench.test", "-m", "512"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody")
	}
	args = append(args, addr, "512")
	cmd := exec.Command("smtp-sink", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &sink{cmd: cmd, done: make(chan struct{}), counter: newSinkCounter(out)}
	go func() { cmd.Wait(); close(s.done) }()
	if err := waitBanner(addr, 10*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

func (s *sink) stop() { stopProc(s.cmd, s.done, 3*time.Second) }

// relay is one of the two systems under test.
type relay interface {
	name() string
	addr() string
	start() error
	stop() error
	cpu() *cpuGroup
	// peakRSS is the peak memory in kB reported for the run; sampledPss is
	// the peak of the 100 ms samples of the summed Pss.
	peakRSS(sampledPss int64) int64
	rssPids() []int
}

// ---- mailfwd ---------------------------------------------------------------

type mailfwdRelay struct {
	bin, config, listen, logFile string
	admin                        string // admin_listen: /metrics
	label                        string // name in the tables, "" for mailfwd
	cmd                          *exec.Cmd
	done                         chan struct{}
	group                        *cpuGroup
}

func (m *mailfwdRelay) name() string {
	if m.label != "" {
		return m.label
	}
	return "mailfwd"
}
func (m *mailfwdRelay) addr() string        { return m.listen }
func (m *mailfwdRelay) cpu() *cpuGroup      { return m.group }
func (m *mailfwdRelay) pid() int            { return m.cmd.Process.Pid }
func (m *mailfwdRelay) rssPids() []int      { return []int{m.pid()} }
func (m *mailfwdRelay) peakRSS(int64) int64 { return statusKB(m.pid(), "VmHWM") }

func (m *mailfwdRelay) start() error {
	lf, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd := exec.Command(m.bin, "serve", "-config", m.config)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	m.cmd, m.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(m.done) }()
	if err := m.group.add(cmd.Process.Pid); err != nil {
		return fmt.Errorf("mailfwd into %s: %v", m.group.dir, err)
	}
	if err := waitBanner(m.listen, 20*time.Second); err != nil {
		m.stop()
		return fmt.Errorf("mailfwd: %v (log: %s)", err, m.logFile)
	}
	return nil
}

func (m *mailfwdRelay) stop() error {
	stopProc(m.cmd, m.done, 15*time.Second)
	return nil
}

// ---- Postfix + postsrsd ----------------------------------------------------

type postfixRelay struct {
	repo, dir string
	port      int
	env       []string
	group     *cpuGroup
	srs       *exec.Cmd
	srsDone   chan struct{}
	srsArgs   []string
	srsLog    string
	srsPorts  [2]int
}

func (p *postfixRelay) name() string   { return "Postfix" }
func (p *postfixRelay) addr() string   { return fmt.Sprintf("127.0.0.1:%d", p.port) }
func (p *postfixRelay) cpu() *cpuGroup { return p.group }
func (p *postfixRelay) rssPids() []int { return p.group.pids() }
func (p *postfixRelay) peakRSS(sampledPss int64) int64 {
	return sampledPss
}

func (p *postfixRelay) script(n string) string { return filepath.Join(p.repo, "e2e/scripts", n) }

// masterPid is Postfix's master (from its pid file).
func (p *postfixRelay) masterPid() int {
	b, _ := os.ReadFile(filepath.Join(p.dir, "spool/pid/master.pid"))
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// roots are the processes whose trees make up the Postfix side (fallback accounting).
func (p *postfixRelay) roots() []int {
	var r []int
	if m := p.masterPid(); m > 0 {
		r = append(r, m)
	}
	if p.srs != nil && p.srs.Process != nil {
		r = append(r, p.srs.Process.Pid)
	}
	return r
}

// startSRS starts postsrsd (foreground, own process group, in the group).
func (p *postfixRelay) startSRS() error {
	lf, err := os.OpenFile(p.srsLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	q := make([]string, len(p.srsArgs))
	for i, a := range p.srsArgs {
		q[i] = shq(a)
	}
	cmd := exec.Command("sh", "-c", p.group.shellPrefix()+"exec postsrsd "+strings.Join(q, " "))
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	p.srs, p.srsDone = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(p.srsDone) }()
	for _, port := range p.srsPorts {
		if err := waitListen(fmt.Sprintf("127.0.0.1:%d", port), 10*time.Second); err != nil {
			return fmt.Errorf("postsrsd: %v (log %s)", err, p.srsLog)
		}
	}
	return nil
}

func (p *postfixRelay) stopSRS() {
	if p.srs != nil {
		stopProc(p.srs, p.srsDone, 3*time.Second)
		p.srs = nil
	}
}

func (p *postfixRelay) start() error {
	_, err := runScript(p.env, p.group.shellPrefix(), p.script("start-postfix.sh"))
	return err
}

// stop stops master and its children, keeping the instance (PF_KEEP=1).
func (p *postfixRelay) stop() error {
	_, err := runScript(append(p.env, "PF_KEEP=1"), "", p.script("stop-postfix.sh"))
	return err
}

// destroy removes the instance.
func (p *postfixRelay) destroy() error {
	_, err := runScript(p.env, "", p.script("stop-postfix.sh"))
	return err
}

// ---- smtp-source -----------------------------------------------------------

// load is one smtp-source invocation.
type load struct {
	rcpt     string
	msgs     int
	sessions int
}

// runSources runs the loads concurrently against addr; it returns when all
// finished, with the time the last one did.
func runSources(addr string, size int, loads []load) (time.Time, error) {
	type res struct {
		err error
		at  time.Time
	}
	ch := make(chan res, len(loads))
	for _, l := range loads {
		go func(l load) {
			cmd := exec.Command("smtp-source", "-4", "-s", strconv.Itoa(l.sessions), "-m", strconv.Itoa(l.msgs),
				"-l", strconv.Itoa(size), "-M", "client.bench.test", "-f", "sender@example.org", "-t", l.rcpt, addr)
			var eb strings.Builder
			cmd.Stderr = &eb
			err := cmd.Run()
			if err != nil {
				err = fmt.Errorf("smtp-source -t %s: %v: %s", l.rcpt, err, strings.TrimSpace(eb.String()))
			}
			ch <- res{err, time.Now()}
		}(l)
	}
	var last time.Time
	var errs []error
	for range loads {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	return last, errors.Join(errs...)
}
