package main

// The backlog scenario: the next hop is down while N messages arrive (a
// long outage), then each relay is restarted and the next hop comes back.
// Measured per relay: accept rate into a dead next hop, CPU while it
// waits, peak memory, the time to list the queue (mailfwd queue list vs
// postqueue -p), restart to listening, and the drain once the next hop is
// up (after a flush: mailfwd queue flush, postqueue -f, as an
// administrator would). The figures replace the part of docs/benchmarks.md
// between the backlog markers.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

type backlogResult struct {
	relay                   string
	accept                  float64 // msgs/s into a dead next hop
	idleCPU                 float64 // share of a core, 30 s with no traffic
	peakKB                  int64   // through arrival, restart and drain
	list                    float64 // seconds, queue listing to /dev/null
	listLines               int
	restart                 float64 // seconds from start to the SMTP banner
	drain                   float64 // msgs/s after the flush
	drainPeakKB, idleHeapKB int64
	err                     string
}

// queueCmd is relay r's queue tool: mailfwd queue OP, or Postfix's
// postqueue with pfFlag.
func (e *env) queueCmd(r relay, op, pfFlag string) *exec.Cmd {
	if _, ok := r.(*mailfwdRelay); ok {
		return exec.Command(e.mf.bin, "queue", "-config", e.mf.config, op)
	}
	return exec.Command("postqueue", "-c", filepath.Join(e.pf.dir, "etc"), pfFlag)
}

// flush asks relay r to try its deferred mail now.
func (e *env) flush(r relay) error {
	cmd := e.queueCmd(r, "flush", "-f")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

// listQueue times the relay's queue listing and counts its lines.
func (e *env) listQueue(r relay) (float64, int, error) {
	cmd := e.queueCmd(r, "list", "-p")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	lines := 0
	buf := make([]byte, 1<<16)
	for {
		n, err := out.Read(buf)
		for _, b := range buf[:n] {
			if b == '\n' {
				lines++
			}
		}
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	return time.Since(t0).Seconds(), lines, err
}

// measureBacklog runs the scenario once through r.
func (e *env) measureBacklog(r relay, n int) (res backlogResult) {
	res.relay = r.name()
	fail := func(f string, a ...any) backlogResult { res.err = fmt.Sprintf(f, a...); return res }
	// Fresh queue, next hop down (no sink on its port).
	switch r.(type) {
	case *mailfwdRelay:
		os.RemoveAll(filepath.Join(e.o.work, "spool"))
	default:
		if err := e.pf.destroy(); err != nil {
			return fail("%v", err)
		}
	}
	if err := r.start(); err != nil {
		return fail("%v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			r.stop()
		}
	}()
	sampler := sampleRSS(r.rssPids, 200*time.Millisecond)
	t0 := time.Now()
	sessions := e.o.conc
	if _, err := runSources(r.addr(), 1024, []load{{rcptRewrite, n, sessions}}); err != nil {
		sampler.finish()
		return fail("arrival: %v", err)
	}
	res.accept = float64(n) / time.Since(t0).Seconds()
	logf("  %-8s %d messages in at %.0f/s with the next hop down", r.name(), n, res.accept)

	time.Sleep(10 * time.Second) // settle: what arrived last has been tried
	c0, w0 := r.cpu().seconds(), time.Now()
	time.Sleep(30 * time.Second)
	res.idleCPU = (r.cpu().seconds() - c0) / time.Since(w0).Seconds()
	var err error
	if res.list, res.listLines, err = e.listQueue(r); err != nil {
		sampler.finish()
		return fail("list: %v", err)
	}
	_, pss := sampler.finish()
	res.peakKB = r.peakRSS(pss)
	logf("  %-8s idle CPU %.1f%% of a core; queue listed in %.2f s (%d lines); peak %.0f MiB",
		r.name(), res.idleCPU*100, res.list, res.listLines, float64(res.peakKB)/1024)

	// Restart with the backlog: time to the SMTP banner.
	if err := r.stop(); err != nil {
		return fail("stop: %v", err)
	}
	t1 := time.Now()
	if err := r.start(); err != nil {
		stopped = true
		return fail("restart: %v", err)
	}
	res.restart = time.Since(t1).Seconds()
	logf("  %-8s restart to banner %.2f s", r.name(), res.restart)

	// The next hop comes back; the administrator flushes.
	sk, err := startSink(e.sinkAddr)
	if err != nil {
		return fail("%v", err)
	}
	defer sk.stop()
	sampler = sampleRSS(r.rssPids, 200*time.Millisecond)
	t2 := time.Now()
	if err := e.flush(r); err != nil {
		sampler.finish()
		return fail("%v", err)
	}
	at, ok := sk.counter.waitFor(n, 30*time.Minute)
	_, pss = sampler.finish()
	if !ok {
		return fail("drain: sink counted %d of %d", sk.counter.count(), n)
	}
	res.drain = float64(n) / at.Sub(t2).Seconds()
	res.drainPeakKB = r.peakRSS(pss)
	res.peakKB = max(res.peakKB, res.drainPeakKB)
	if m, ok := r.(*mailfwdRelay); ok {
		time.Sleep(5 * time.Second)
		res.idleHeapKB = statusKB(m.pid(), "VmRSS")
	}
	logf("  %-8s drained at %.0f/s; peak %.0f MiB", r.name(), res.drain, float64(res.peakKB)/1024)
	return res
}

// backlogSection is the markdown of the scenario.
func (e *env) backlogSection(n int, rs []backlogResult, took time.Duration) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("%s\n## Backlog: %d messages queued while the next hop is down, then drained\n\n", backlogBegin, n)
	w("1 KiB messages for `%s` (rewritten by LDAP to a local user) from smtp-source (C=%d) while the next hop "+
		"(smtp-sink) is down; 30 s with no traffic; the queue listed (`mailfwd queue list`, `postqueue -p`, to a pipe); "+
		"the relay restarted; the sink started and the queue flushed (`mailfwd queue flush`, `postqueue -f`). "+
		"Peak memory: mailfwd's VmHWM, Postfix's summed Pss (all its processes, 200 ms samples). One run each (%v in all); "+
		"`go run ./bench -backlog %d -scenarios none`.\n\n", rcptRewrite, e.o.conc, took.Round(time.Second), n)
	w("| | accept into a dead next hop | CPU while it is down | `queue list` / `postqueue -p` | restart to banner | drain after flush | peak memory |\n")
	w("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		if r.err != "" {
			w("| %s | failed: %s | | | | | |\n", r.relay, r.err)
			continue
		}
		w("| %s | %.0f/s | %.1f%% of a core | %.2f s (%d lines) | %.2f s | %.0f/s | %.0f MiB |\n",
			r.relay, r.accept, 100*r.idleCPU, r.list, r.listLines, r.restart, r.drain, float64(r.peakKB)/1024)
	}
	if len(rs) == 2 && rs[0].err == "" && rs[1].err == "" {
		pf, mf := rs[0], rs[1]
		w("| mailfwd / Postfix | %s | | %s (time) | %s (time) | %s | %s |\n",
			ratioStr(mf.accept/pf.accept), ratioStr(mf.list/pf.list), ratioStr(mf.restart/pf.restart),
			ratioStr(mf.drain/pf.drain), ratioStr(float64(mf.peakKB)/float64(pf.peakKB)))
		if mf.idleHeapKB > 0 {
			w("\nmailfwd's RSS 5 s after the drain: %.0f MiB.\n", float64(mf.idleHeapKB)/1024)
		}
	}
	w("\n%s\n", backlogEnd)
	return b.String()
}

const (
	backlogBegin = "<!-- backlog: written by go run ./bench -backlog N -->"
	backlogEnd   = "<!-- /backlog -->"
)
