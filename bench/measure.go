package main

// Measurement helpers: CPU accounting (cgroup or /proc process tree), RSS
// sampling, 389-DS access-log SRCH counting, smtp-sink's running counter.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

const clockTicks = 100 // USER_HZ on Linux

// procStat is the part of /proc/PID/stat we use.
type procStat struct {
	ppid           int
	utime, stime   uint64 // ticks
	cutime, cstime uint64 // ticks, reaped children
	ok             bool
}

func readStat(pid int) procStat {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}
	}
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return procStat{}
	}
	f := strings.Fields(string(b[j+2:])) // f[0] is field 3 (state)
	if len(f) < 20 {
		return procStat{}
	}
	n := func(k int) uint64 { v, _ := strconv.ParseUint(f[k-3], 10, 64); return v }
	s := procStat{ok: true}
	s.ppid = int(n(4))
	s.utime, s.stime, s.cutime, s.cstime = n(14), n(15), n(16), n(17)
	return s
}

// allPids lists the numeric entries of /proc.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// treePids returns roots and all their live (or zombie) descendants.
func treePids(roots []int) []int {
	children := map[int][]int{}
	for _, p := range allPids() {
		if s := readStat(p); s.ok {
			children[s.ppid] = append(children[s.ppid], p)
		}
	}
	seen := map[int]bool{}
	var out []int
	var walk func(int)
	walk = func(p int) {
		if seen[p] {
			return
		}
		seen[p] = true
		out = append(out, p)
		for _, c := range children[p] {
			walk(c)
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// cpuGroup accounts the CPU time of a set of processes. With a writable
// cgroup (v1 cpuacct or v2) every process started inside it is counted,
// also those that exit before the run ends. Without one, it falls back to
// the process tree under the roots: the roots' utime+stime+cutime+cstime
// (reaped children included) plus every live descendant's utime+stime.
type cpuGroup struct {
	name  string
	dir   string // cgroup directory, "" when not available
	v2    bool
	roots func() []int
}

// newCPUGroup tries cgroup v1 cpuacct, then v2 (unified or pure).
func newCPUGroup(name string, roots func() []int) *cpuGroup {
	g := &cpuGroup{name: name, roots: roots}
	cands := []struct {
		base string
		v2   bool
	}{
		{"/sys/fs/cgroup/cpuacct", false},
		{"/sys/fs/cgroup/unified", true},
		{"/sys/fs/cgroup", true},
	}
	for _, c := range cands {
		probe := "cpuacct.usage"
		if c.v2 {
			probe = "cgroup.procs"
			if _, err := os.Stat(filepath.Join(c.base, "cgroup.controllers")); err != nil {
				continue
			}
		}
		if _, err := os.Stat(filepath.Join(c.base, probe)); err != nil {
			continue
		}
		d := filepath.Join(c.base, name)
		if err := os.Mkdir(d, 0o755); err != nil && !os.IsExist(err) {
			continue
		}
		stat := "cpuacct.usage"
		if c.v2 {
			stat = "cpu.stat"
		}
		if _, err := os.Stat(filepath.Join(d, stat)); err != nil {
			os.Remove(d)
			continue
		}
		g.dir, g.v2 = d, c.v2
		break
	}
	return g
}

func (g *cpuGroup) method() string {
	if g.dir == "" {
		return "process tree in /proc (roots' utime+stime+cutime+cstime + live descendants' utime+stime)"
	}
	if g.v2 {
		return "cgroup v2 cpu.stat usage_usec (" + g.dir + ")"
	}
	return "cgroup v1 cpuacct.usage (" + g.dir + ")"
}

// shellPrefix is prepended to a sh -c script so that the shell, and all
// it starts, run inside the group.
func (g *cpuGroup) shellPrefix() string {
	if g.dir == "" {
		return ""
	}
	return fmt.Sprintf("echo $$ > %s/cgroup.procs && ", g.dir)
}

// add moves a running process (all its threads) into the group.
func (g *cpuGroup) add(pid int) error {
	if g.dir == "" {
		return nil
	}
	return os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// seconds is the cumulative CPU time of the group.
func (g *cpuGroup) seconds() float64 {
	if g.dir != "" {
		if g.v2 {
			b, _ := os.ReadFile(filepath.Join(g.dir, "cpu.stat"))
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
					n, _ := strconv.ParseFloat(v, 64)
					return n / 1e6
				}
			}
			return 0
		}
		b, _ := os.ReadFile(filepath.Join(g.dir, "cpuacct.usage"))
		n, _ := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
		return n / 1e9
	}
	roots := g.roots()
	isRoot := map[int]bool{}
	for _, r := range roots {
		isRoot[r] = true
	}
	var t uint64
	for _, p := range treePids(roots) {
		s := readStat(p)
		t += s.utime + s.stime
		if isRoot[p] {
			t += s.cutime + s.cstime
		}
	}
	return float64(t) / clockTicks
}

// pids lists the group's processes (or the tree under the roots).
func (g *cpuGroup) pids() []int {
	if g.dir != "" {
		b, _ := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		var out []int
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				out = append(out, p)
			}
		}
		return out
	}
	return treePids(g.roots())
}

// remove deletes the cgroup (fails harmlessly while zombies remain in it).
func (g *cpuGroup) remove() {
	if g.dir != "" {
		os.Remove(g.dir)
	}
}

// statusKB reads a "Key:   123 kB" line of /proc/PID/status.
func statusKB(pid int, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// rollupKB reads Rss and Pss (kB) of /proc/PID/smaps_rollup.
func rollupKB(pid int) (rss, pss int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Rss:":
			rss = n
		case "Pss:":
			pss = n
		}
	}
	return rss, pss
}

// rssSampler records the peaks of the summed Rss and Pss of pids() every
// interval.
type rssSampler struct {
	stop          chan struct{}
	done          chan struct{}
	peak, peakPss int64 // kB
}

func sampleRSS(pids func() []int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			var sum, sumPss int64
			for _, p := range pids() {
				r, ps := rollupKB(p)
				sum += r
				sumPss += ps
			}
			s.peak = max(s.peak, sum)
			s.peakPss = max(s.peakPss, sumPss)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) finish() (rss, pss int64) {
	close(s.stop)
	<-s.done
	return s.peak, s.peakPss
}

// fileSize is the size of a file, 0 when missing.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// countSearches counts 389-DS access log SRCH operations written after offset.
func countSearches(path string, offset int64) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	if fileSize(path) < offset { // rotated: count what there is
		offset = 0
	}
	f.Seek(offset, io.SeekStart)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(" SRCH base=")) {
			n++
		}
	}
	return n
}

// sinkCounter follows smtp-sink -c output ("sess=N quit=N mesg=N\r").
type sinkCounter struct {
	mu      sync.Mutex
	cond    *sync.Cond
	msgs    int
	at      []time.Time // at[i]: when the counter reached i+1
	closed  bool
	history []string
}

func newSinkCounter(r io.Reader) *sinkCounter {
	c := &sinkCounter{}
	c.cond = sync.NewCond(&c.mu)
	go func() {
		br := bufio.NewReader(r)
		for {
			tok, err := br.ReadString('\r')
			if i := strings.LastIndex(tok, "mesg="); i >= 0 {
				v := strings.TrimSpace(tok[i+5:])
				if n, e := strconv.Atoi(v); e == nil {
					c.mu.Lock()
					now := time.Now()
					for len(c.at) < n {
						c.at = append(c.at, now)
					}
					if n > c.msgs {
						c.msgs = n
					}
					c.cond.Broadcast()
					c.mu.Unlock()
				}
			} else if strings.TrimSpace(tok) != "" {
				c.mu.Lock()
				c.history = append(c.history, strings.TrimSpace(tok))
				c.mu.Unlock()
			}
			if err != nil {
				c.mu.Lock()
				c.closed = true
				c.cond.Broadcast()
				c.mu.Unlock()
				return
			}
		}
	}()
	return c
}

func (c *sinkCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.msgs
}

// waitFor blocks until the counter reaches n; it returns when it did (the
// time of the counter update), or false after timeout or when the sink's
// output ended.
func (c *sinkCounter) waitFor(n int, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	stop := time.AfterFunc(timeout, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.msgs < n {
		if c.closed || time.Now().After(deadline) {
			return time.Now(), false
		}
		c.cond.Wait()
	}
	return c.at[n-1], true
}

// machineCPU is the busy time of the whole machine, in seconds: the "cpu"
// line of /proc/stat without idle and iowait. It counts what no cgroup
// does: kernel threads (the flusher writing back a syncfs, jbd2, softirqs).
func machineCPU() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 7 { // idle, iowait; steal, guest (counted in user)
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return float64(busy) / clockTicks
}
