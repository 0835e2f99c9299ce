package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as reaper (REAPER_AS_MAIN=1), so the
// cases below run it as a real process with real daemonizing children.
func TestMain(m *testing.M) {
	if os.Getenv("REAPER_AS_MAIN") == "1" {
		os.Args = append([]string{"reaper"}, strings.Fields(os.Getenv("REAPER_FLAGS"))...)
		os.Args = append(os.Args, "--", "sh", "-c", os.Getenv("REAPER_SCRIPT"))
		main()
	}
	os.Exit(m.Run())
}

// alive reports whether pid is a live, non-zombie process.
func alive(pid int) bool {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(st)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func readPids(t *testing.T, file string) []int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the script wrote no pid file: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid file %q: %v", b, err)
		}
		pids = append(pids, p)
	}
	return pids
}

func TestReaperStopsWhatTheCommandLeft(t *testing.T) {
	// A daemon as the servers make one: setsid, fork, the parent exits,
	// so the daemon is nobody's child but its subreaper's.
	const daemon = `setsid sh -c 'sleep 300 & echo $! >>"$PIDS"' </dev/null >/dev/null 2>&1; `
	const stubborn = `setsid sh -c '(trap "" TERM; exec sleep 300) & echo $! >>"$PIDS"' </dev/null >/dev/null 2>&1; `
	for _, tc := range []struct {
		name     string
		flags    string
		script   string
		wantCode int
		wantLeft int    // processes reported
		wantMsg  string // in stderr
	}{
		{"clean success", "", "exit 0", 0, 0, ""},
		{"failure leaves a daemon", "", daemon + "exit 1", 1, 1, "the failed command left 1 process(es)"},
		{"success leaves two daemons", "", daemon + daemon + "exit 0", 0, 2, "the command left 2 process(es)"},
		{"strict: success that leaks fails", "-strict", daemon + "exit 0", 3, 1, "must stop what it starts"},
		{"strict: clean success passes", "-strict", "exit 0", 0, 0, ""},
		{"killed by a signal", "", daemon + "kill -KILL $$", 128 + 9, 1, "the failed command left"},
		{"SIGTERM ignored: SIGKILL after grace", "-grace 300ms", stubborn + "exit 1", 1, 1, "the failed command left"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pids := filepath.Join(t.TempDir(), "pids")
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), "REAPER_AS_MAIN=1", "REAPER_FLAGS="+tc.flags,
				"REAPER_SCRIPT="+tc.script, "PIDS="+pids)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			t0 := time.Now()
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantMsg) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantMsg, stderr.String())
			}
			if got := strings.Count(stderr.String(), "reaper:   pid "); got != tc.wantLeft {
				t.Errorf("%d processes reported, want %d:\n%s", got, tc.wantLeft, stderr.String())
			}
			if tc.wantLeft == 0 {
				return
			}
			for _, p := range readPids(t, pids) {
				if alive(p) {
					syscall.Kill(p, syscall.SIGKILL)
					t.Errorf("pid %d outlived the reaper (%v after start)", p, time.Since(t0))
				}
			}
		})
	}
}

// An interrupt reaches the command (go test then exits without its
// cleanup), and what the command left is stopped all the same.
func TestReaperInterrupted(t *testing.T) {
	dir := t.TempDir()
	pids, ready := filepath.Join(dir, "pids"), filepath.Join(dir, "ready")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "REAPER_AS_MAIN=1", "PIDS="+pids, "REAPER_SCRIPT="+
		`setsid sh -c 'sleep 300 & echo $! >>"$PIDS"' </dev/null >/dev/null 2>&1; touch `+ready+`; exec sleep 300`)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if i > 200 {
			cmd.Process.Kill()
			t.Fatal("the command never got going")
		}
		time.Sleep(25 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 128+int(syscall.SIGTERM) {
		t.Errorf("reaper exited with %v, want the command's death by SIGTERM (143); stderr:\n%s", err, stderr.String())
	}
	for _, p := range readPids(t, pids) {
		if alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
			t.Errorf("pid %d outlived an interrupted run", p)
		}
	}
	if !strings.Contains(stderr.String(), "the failed command left 1 process(es)") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}
