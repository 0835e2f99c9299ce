// Command reaper runs the end-to-end suite (or any command) so that nothing it
// starts outlives it: a failed, timed-out or interrupted `go test` otherwise
// leaves its daemons running (389-DS, slapd, Postfix, smtp-sink, a `mailfwd
// serve`), holding the ports the next run needs.
//
// The servers daemonize (double fork, setsid), so neither a process group nor
// Pdeathsig reaches them. reaper makes itself a child subreaper
// (PR_SET_CHILD_SUBREAPER): every orphan in its tree is re-parented to it
// instead of to PID 1, so when the command exits reaper still sees them all,
// stops them (SIGTERM, then SIGKILL after -grace) and reaps them.
//
//	reaper [-grace 10s] [-strict] -- go test -tags e2e ./e2e/
//
// Exit status is the command's. With -strict, a command that succeeded but
// left processes behind fails (exit 3): a passing suite must clean up after
// itself, and the leak would otherwise go unnoticed until a run fails.
// SIGINT and SIGTERM are passed on to the command, and the cleanup still
// runs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	grace := flag.Duration("grace", 10*time.Second, "how long stragglers get between SIGTERM and SIGKILL")
	strict := flag.Bool("strict", false, "fail (exit 3) when a successful command left processes behind")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: reaper [-grace D] [-strict] -- command [args...]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	os.Exit(run(flag.Args(), *grace, *strict))
}

func run(argv []string, grace time.Duration, strict bool) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "reaper: PR_SET_CHILD_SUBREAPER: %v\n", err)
		return 2
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	// After a Ctrl-C in `make e2e`, the tee we write to is gone: a write
	// must fail with EPIPE, not kill us before the cleanup. (Notify, not
	// Ignore: an ignored SIGPIPE would be inherited by the command.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "reaper: %v\n", err)
		return 127
	}
	code := waitFor(cmd.Process.Pid, sigs)
	signal.Stop(sigs)

	left := stopTree(os.Getpid(), grace)
	if len(left) > 0 {
		what := "the command left"
		if code != 0 {
			what = "the failed command left"
		}
		fmt.Fprintf(os.Stderr, "reaper: %s %d process(es) running; stopped them:\n", what, len(left))
		for _, p := range left {
			fmt.Fprintf(os.Stderr, "reaper:   %s\n", p)
		}
		if code == 0 && strict {
			fmt.Fprintln(os.Stderr, "reaper: a passing run must stop what it starts (-strict)")
			return 3
		}
	}
	return code
}

// waitFor reaps children until pid exits and returns its exit code. It reaps
// with wait4(-1) rather than cmd.Wait, because orphans re-parented to us
// become our children too and must not stay zombies.
func waitFor(pid int, sigs <-chan os.Signal) int {
	type exited struct {
		pid int
		ws  unix.WaitStatus
	}
	reaped := make(chan exited, 16)
	go func() {
		for {
			var ws unix.WaitStatus
			p, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil { // ECHILD: nothing left to wait for
				close(reaped)
				return
			}
			reaped <- exited{p, ws}
		}
	}()
	for {
		select {
		case s := <-sigs:
			// Terminal signals reach the whole foreground group anyway; a
			// SIGTERM sent to reaper alone must reach the command.
			syscall.Kill(pid, s.(syscall.Signal))
		case e, ok := <-reaped:
			if !ok {
				return 1
			}
			if e.pid != pid {
				continue
			}
			go func() { // keep reaping orphans while stopTree runs
				for range reaped {
				}
			}()
			switch {
			case e.ws.Exited():
				return e.ws.ExitStatus()
			case e.ws.Signaled():
				return 128 + int(e.ws.Signal())
			}
			return 1
		}
	}
}

// proc is one process of the tree, for the report.
type proc struct {
	pid  int
	ppid int
	cmd  string
}

func (p proc) String() string { return fmt.Sprintf("pid %d: %s", p.pid, p.cmd) }

// stopTree stops every live descendant of root: SIGTERM, up to grace for
// them to exit, then SIGKILL. It returns what it found at first.
func stopTree(root int, grace time.Duration) []proc {
	first := descendants(root)
	if len(first) == 0 {
		return nil
	}
	for _, p := range first {
		syscall.Kill(p.pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && len(descendants(root)) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
	for range 3 { // SIGKILL stragglers, and anything they forked meanwhile
		rest := descendants(root)
		if len(rest) == 0 {
			break
		}
		for _, p := range rest {
			syscall.Kill(p.pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return first
}

// descendants lists the live (non-zombie) processes below root, from /proc.
func descendants(root int) []proc {
	all := map[int]proc{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		st, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cmdline, _ := os.ReadFile(d + "/cmdline")
		c := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if c == "" {
			c = "[" + s[strings.IndexByte(s, '(')+1:i] + "]"
		}
		all[pid] = proc{pid: pid, ppid: ppid, cmd: c}
	}
	var out []proc
	for _, p := range all {
		for a, n := p.ppid, 0; a > 1 && n < 64; n++ {
			if a == root {
				out = append(out, p)
				break
			}
			a = all[a].ppid
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pid < out[j].pid })
	return out
}
