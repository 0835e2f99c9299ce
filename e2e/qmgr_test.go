//go:build e2e

package e2e

// The queue manager on a bad day, with the real Postfix as the local next
// hop: an outside MX that tarpits (20 s per reply) or drops SYNs must not
// delay local mail, and a dead next hop with a large backlog must cost
// (almost) nothing while it is down.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// tarpit is an MX that answers, but only after delay per reply (banner
// included), as tarpitting receivers and dying MXes do.
type tarpit struct {
	l     net.Listener
	delay time.Duration
	conns atomic.Int64
	mu    sync.Mutex
	open  []net.Conn
}

func startTarpit(t *testing.T, delay time.Duration) *tarpit {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tarpit{l: l, delay: delay}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tp.conns.Add(1)
			tp.mu.Lock()
			tp.open = append(tp.open, c)
			tp.mu.Unlock()
			go tp.serve(c)
		}
	}()
	t.Cleanup(tp.close)
	return tp
}

func (tp *tarpit) serve(c net.Conn) {
	defer c.Close()
	time.Sleep(tp.delay)
	fmt.Fprintf(c, "220 tarpit.test ESMTP\r\n")
	r := bufio.NewReader(c)
	for {
		if _, err := r.ReadString('\n'); err != nil {
			return
		}
		time.Sleep(tp.delay)
		if _, err := fmt.Fprintf(c, "250 tarpit.test\r\n"); err != nil {
			return
		}
	}
}

func (tp *tarpit) close() {
	tp.l.Close()
	tp.mu.Lock()
	for _, c := range tp.open {
		c.Close()
	}
	tp.mu.Unlock()
}

// synBlackhole is a port whose SYNs go unanswered: a listener with a
// backlog of 0 that never accepts, its accept queue filled first (Linux
// then drops further SYNs, as a firewall that drops them would), so a
// connection attempt hangs until the client's connect timeout.
func synBlackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			break // the queue is full: SYNs are dropped now
		}
		t.Cleanup(func() { c.Close() })
		if i > 16 {
			t.Fatal("the blackhole port keeps accepting connections")
		}
	}
	return addr
}

// qmgrRelay starts mailfwd on the embedded directory (internal.user@ is
// forwarded to external.user@gmail.com; sales@ is central@, local), the
// shared Postfix as local next hop and external as the Internet.
func qmgrRelay(t *testing.T, nextHop, external, extra string) *mailfwdProc {
	t.Helper()
	dir := t.TempDir()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, filepath.Join(dir, "mailfwd.yaml"), "qmgr/mailfwd.yaml", vars{"Listen": addr, "NextHop": nextHop, "ExternalNextHop": external, "Delivery": extra})
	p, err := suite.startRelayConfig(dir, cfg, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.stop)
	p.spool = filepath.Join(dir, "spool", "msg")
	return p
}

// localLatencies sends n messages for a local user, one every gap, and
// returns each one's time from the 250 after DATA to its arrival at the
// sink through Postfix.
func localLatencies(t *testing.T, addr string, n int, gap time.Duration) []time.Duration {
	t.Helper()
	sent := map[string]time.Time{}
	for i := 0; i < n; i++ {
		tok := suite.token(t)
		if err := sendGo(addr, tok, []string{"sales@company.com"}); err != nil {
			t.Fatal(err)
		}
		sent[tok] = time.Now()
		time.Sleep(gap)
	}
	var lat []time.Duration
	deadline := time.Now().Add(60 * time.Second)
	for {
		dumps, err := ReadSinkDumps(suite.servers["SINK_DIR"])
		if err != nil {
			t.Fatal(err)
		}
		lat = lat[:0]
		for _, d := range dumps {
			for tok, at := range sent {
				if strings.Contains(string(d.RawHeader), tok) {
					lat = append(lat, d.ModTime.Sub(at))
				}
			}
		}
		if len(lat) >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d local messages arrived within a minute", len(lat), n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return lat
}

func pct(s []time.Duration, p float64) time.Duration { return s[min(len(s)-1, int(float64(len(s))*p))] }

// With hundreds of external forwards stuck on an outside MX that tarpits
// or drops SYNs, local mail keeps its normal latency: its p99 stays within
// 2x of a twin relay's whose outside is quiet, measured in alternating
// blocks so that the machine's noise falls on both. (The first scheduler
// let one slow destination hold all 16 workers: local mail waited ~160 s.)
func TestLocalLatencyBehindStuckInternet(t *testing.T) {
	const externals, rounds, perRound = 300, 4, 50 // 200 messages each
	for _, tc := range []struct {
		name string
		mx   func(t *testing.T) (addr string, conns func() int64)
	}{
		{"tarpit", func(t *testing.T) (string, func() int64) {
			tp := startTarpit(t, 20*time.Second)
			return tp.l.Addr().String(), tp.conns.Load
		}},
		{"SYN blackhole", func(t *testing.T) (string, func() int64) {
			return synBlackhole(t), nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mx, conns := tc.mx(t)
			quiet := qmgrRelay(t, suite.servers["PF_SMTP"], suite.servers["SINK_ADDR"], "")
			stuck := qmgrRelay(t, suite.servers["PF_SMTP"], mx, "")
			for _, p := range []*mailfwdProc{quiet, stuck} {
				localLatencies(t, p.addr, 5, 0) // warm: Postfix's connection open, caches filled
			}

			// Hundreds of forwards for the outside, sent in parallel.
			var wg sync.WaitGroup
			var failed atomic.Int64
			work := make(chan int)
			for w := 0; w < 8; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						if err := sendGo(stuck.addr, suite.token(t), []string{"internal.user@company.com"}); err != nil {
							failed.Add(1)
						}
					}
				}()
			}
			for i := 0; i < externals; i++ {
				work <- i
			}
			close(work)
			wg.Wait()
			if failed.Load() > 0 {
				t.Fatalf("%d external forwards refused", failed.Load())
			}
			time.Sleep(2 * time.Second) // every worker the outside may have is stuck now

			if n := stuck.spooled(t); n < externals {
				t.Fatalf("only %d messages in the spool: the outside was not stuck", n)
			}
			if conns != nil && conns() == 0 {
				t.Fatal("no connection reached the tarpit")
			}
			// A single 20-30 ms hiccup of this shared machine's disk is a
			// p99 of 200; head-of-line blocking is seconds, in every try.
			// So up to three tries, each of which must pass on its own.
			for try := 1; ; try++ {
				base, slow := quietVsStuck(t, quiet, stuck, rounds, perRound)
				t.Logf("try %d: local latency, outside quiet: p50 %v p99 %v; outside stuck (%s): p50 %v p99 %v; slowest %v / %v",
					try, pct(base, .5), pct(base, .99), tc.name, pct(slow, .5), pct(slow, .99), base[len(base)-3:], slow[len(slow)-3:])
				if pct(slow, .99) <= 2*pct(base, .99) {
					break
				}
				if try == 3 {
					t.Fatalf("local p99 %v with the outside stuck, more than 2x its %v with the outside quiet (3 tries)", pct(slow, .99), pct(base, .99))
				}
			}
		})
	}
}

// quietVsStuck measures local latency through both relays in alternating
// blocks (ABBA, with a pause between blocks: a block that follows another
// is slower, Postfix still finishing the last), sorted.
func quietVsStuck(t *testing.T, quiet, stuck *mailfwdProc, rounds, perRound int) (base, slow []time.Duration) {
	for r := 0; r < rounds; r++ {
		order := []*mailfwdProc{quiet, stuck}
		if r%2 == 1 {
			order = []*mailfwdProc{stuck, quiet}
		}
		for _, p := range order {
			time.Sleep(500 * time.Millisecond)
			lat := localLatencies(t, p.addr, perRound, 20*time.Millisecond)
			if p == quiet {
				base = append(base, lat...)
			} else {
				slow = append(slow, lat...)
			}
		}
	}
	sort.Slice(base, func(i, j int) bool { return base[i] < base[j] })
	sort.Slice(slow, func(i, j int) bool { return slow[i] < slow[j] })
	return base, slow
}

// procCPU is a process's user+system CPU time so far.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3 (state)
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func lineCount(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// With the next hop dead and 50,000 messages queued for it: after a few
// failures no connection is tried but the probe, CPU with no traffic stays
// under 5% of a core, and the log does not grow by a line per message.
func TestDeadNextHopBacklogIsIdle(t *testing.T) {
	const backlog = 50000
	if _, err := exec.LookPath("smtp-source"); err != nil {
		t.Fatalf("smtp-source (postfix) not installed: %v", err)
	}
	// The next hop is down: it accepts the connection and drops it at once.
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := down.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	// Dead time 10 s, doubling to 40 s: a probe every 40 s at most.
	p := qmgrRelay(t, down.Addr().String(), suite.servers["SINK_ADDR"], "  retry_min: 10s\n  retry_max: 40s\n")

	start := time.Now()
	out, err := exec.Command("smtp-source", "-c", "-m", strconv.Itoa(backlog), "-s", "10", "-l", "300",
		"-f", "alice@example.org", "-t", "sales@company.com", "-M", "client.e2e.test", p.addr).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	if n := p.spooled(t); n != backlog {
		t.Fatalf("%d messages queued, want %d", n, backlog)
	}
	t.Logf("%d messages queued in %v; %d connections to the dead next hop meanwhile", backlog, time.Since(start).Round(time.Second), conns.Load())
	if c := conns.Load(); c > 20 {
		t.Fatalf("%d connections to the dead next hop for %d messages: it was not marked dead", c, backlog)
	}

	time.Sleep(5 * time.Second) // settle: the last messages parked
	pid := p.cmd.Process.Pid
	cpu0, lines0, conns0, t0 := procCPU(t, pid), lineCount(t, p.log.Name()), conns.Load(), time.Now()
	time.Sleep(60 * time.Second)
	cpu, lines, probes, wall := procCPU(t, pid)-cpu0, lineCount(t, p.log.Name())-lines0, conns.Load()-conns0, time.Since(t0)
	share := float64(cpu) / float64(wall)
	t.Logf("idle %v with %d queued for a dead next hop: CPU %v (%.1f%% of a core), %d log lines, %d connection attempts",
		wall.Round(time.Second), backlog, cpu, 100*share, lines, probes)
	if share >= 0.05 {
		t.Errorf("CPU %.1f%% of a core with no traffic, want < 5%%", 100*share)
	}
	if lines > 50 {
		t.Errorf("the log grew by %d lines in a minute of a dead next hop", lines)
	}
	if probes > 4 {
		t.Errorf("%d connection attempts in a minute to a dead next hop (dead time 10-40 s): not one probe at a time", probes)
	}
	if probes == 0 {
		t.Errorf("no probe in a minute: the dead next hop would never be found alive again")
	}

	// It comes back: the probe finds it, and the whole backlog drains.
	// (Not here: the benchmark measures the drain, against Postfix.)
}
