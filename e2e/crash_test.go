//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The crash harness: one relay on its own spool, C concurrent clients
// sending without pause, SIGKILL at a random moment, restart on the same
// spool, again and again; at the end every message that got a 250 must have
// arrived, and only messages still in the spool at a kill may have arrived
// twice. E2E_CRASH_SEED=n replays a run's random choices (cycle lengths,
// recipients, sizes; the timing itself is not reproducible).
const (
	crashMinCycles   = 30
	crashMaxCycles   = 80
	crashMinAccepted = 3000
	crashClients     = 12
	crashMinLoad     = 150 * time.Millisecond
	crashMaxLoad     = 700 * time.Millisecond
	crashLoadBudget  = 90 * time.Second // stop adding cycles after this (beyond the minimum)
)

// crashRoutes are the recipient sets the load uses and what each must
// arrive at the sink as: through Postfix (local) and straight to the sink
// (external forward), one or two transactions per message.
var crashRoutes = []struct {
	rcpts, finals []string
}{
	{[]string{"sales@company.com"}, []string{"central@company.com"}},
	{[]string{"internal.user@company.com"}, []string{"external.user@gmail.com"}},
	{[]string{"old.address@domain.com", "internal.user@company.com"}, []string{"new.address@domain.ro", "external.user@gmail.com"}},
}

type crashMsg struct {
	tok   string
	route int
	cycle int
	qid   string // from the 250 reply
}

// crashLoad is the load generator's record of what the relay answered.
type crashLoad struct {
	prefix string
	seq    atomic.Int64
	inData atomic.Int32 // sessions that sent the body and wait for the reply

	mu        sync.Mutex
	accepted  []*crashMsg
	failed    []*crashMsg // got no 250 (refused or cut off by the kill)
	refused   map[string]int
	dialFails int
}

var queuedRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

func (l *crashLoad) worker(addr string, cycle int, stop <-chan struct{}, rng *rand.Rand) {
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for !stopped() {
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			l.mu.Lock()
			l.dialFails++
			l.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			continue
		}
		c := smtp.NewClient(conn)
		c.CommandTimeout, c.SubmissionTimeout = 10*time.Second, 10*time.Second
		if err := c.Hello("load.e2e.test"); err != nil {
			c.Close()
			continue
		}
		ok := true
		for n := 1 + rng.IntN(20); n > 0 && ok && !stopped(); n-- {
			m := &crashMsg{tok: fmt.Sprintf("%s%d", l.prefix, l.seq.Add(1)), route: rng.IntN(len(crashRoutes)), cycle: cycle}
			err := l.send(c, m, rng)
			l.mu.Lock()
			if err == nil {
				l.accepted = append(l.accepted, m)
			} else {
				l.failed = append(l.failed, m)
				var se *smtp.SMTPError
				if errors.As(err, &se) {
					l.refused[strconv.Itoa(se.Code)]++
				}
			}
			l.mu.Unlock()
			ok = err == nil
		}
		if ok {
			c.Quit()
		}
		c.Close()
	}
}

// send sends one message on c; nil means the DATA got a 250.
func (l *crashLoad) send(c *smtp.Client, m *crashMsg, rng *rand.Rand) error {
	if err := c.Mail("loadgen@example.org", nil); err != nil {
		return err
	}
	for _, r := range crashRoutes[m.route].rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	// Mostly small, a few large ones so that kills land inside a body.
	size := 200 + rng.IntN(8<<10)
	if rng.IntN(50) == 0 {
		size = 128<<10 + rng.IntN(256<<10)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: loadgen@example.org\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@load.e2e.test>\r\nDate: %s\r\n\r\n",
		strings.Join(crashRoutes[m.route].rcpts, ", "), m.tok, m.tok, time.Now().Format(time.RFC1123Z))
	const filler = "The quick brown fox jumps over the lazy dog while the relay is killed.....\r\n"
	for b.Len() < size {
		b.WriteString(filler)
	}
	if _, err := w.Write([]byte(b.String())); err != nil {
		return err
	}
	l.inData.Add(1)
	resp, err := w.CloseWithResponse()
	l.inData.Add(-1)
	if err != nil {
		return err
	}
	if mm := queuedRe.FindStringSubmatch(resp.StatusText); mm != nil {
		m.qid = mm[1]
	}
	return nil
}

// spoolSnap is the spool directory as a kill left it.
type spoolSnap struct {
	cycle     int
	committed map[string]bool // queue IDs with a queue file (ID.msg)
	partial   []string        // temp files, an envelope update without its queue file
}

func snapshotSpool(t *testing.T, dir string, cycle int) spoolSnap {
	t.Helper()
	files, err := listSpool(dir)
	if err != nil {
		t.Fatalf("spool after the kill: %v", err)
	}
	s := spoolSnap{cycle: cycle, committed: map[string]bool{}}
	envs := map[string]bool{}
	for _, n := range files { // "3F/ID.msg": partial files keep the subdirectory, committed are IDs
		switch {
		case strings.HasSuffix(n, ".tmp"):
			s.partial = append(s.partial, n)
		case strings.HasSuffix(n, ".msg"):
			s.committed[filepath.Base(strings.TrimSuffix(n, ".msg"))] = true
		case strings.HasSuffix(n, ".env"):
			envs[strings.TrimSuffix(n, ".env")] = true
		}
	}
	for rel := range envs {
		if !s.committed[filepath.Base(rel)] {
			s.partial = append(s.partial, rel+".env")
		}
	}
	sort.Strings(s.partial)
	return s
}

// sinkScanner reads the sink's dump files once each (only files from this
// test on), counting deliveries per token and final recipient.
type sinkScanner struct {
	dir    string
	since  time.Time
	prefix string
	seen   map[string]bool
	got    map[string]map[string]int // token -> recipient -> deliveries
	files  int
}

func newSinkScanner(dir, prefix string, since time.Time) *sinkScanner {
	return &sinkScanner{dir: dir, since: since, prefix: prefix, seen: map[string]bool{}, got: map[string]map[string]int{}}
}

func (s *sinkScanner) scan() error {
	return filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.Type().IsRegular() || s.seen[path] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if info.ModTime().Before(s.since) {
			s.seen[path] = true
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		msgs, err := ParseSinkDump(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(msgs) == 0 {
			return nil // still being written: read it again next time
		}
		s.seen[path] = true
		for _, m := range msgs {
			tok := m.Header.Get("Subject")
			if !strings.HasPrefix(tok, s.prefix) {
				continue
			}
			s.files++
			if s.got[tok] == nil {
				s.got[tok] = map[string]int{}
			}
			for _, r := range m.Rcpts {
				s.got[tok][strings.ToLower(r)]++
			}
		}
		return nil
	})
}

// missing lists the accepted (token, recipient) pairs not at the sink yet.
func (s *sinkScanner) missing(msgs []*crashMsg) []string {
	var out []string
	for _, m := range msgs {
		for _, f := range crashRoutes[m.route].finals {
			if s.got[m.tok][f] == 0 {
				out = append(out, m.tok+" -> "+f+" (queue id "+m.qid+")")
			}
		}
	}
	return out
}

func TestCrashHarness(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("E2E_CRASH_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("E2E_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (E2E_CRASH_SEED=%d replays the random choices)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	// Not t.TempDir: on failure the spool and the relay's log are kept.
	dir, err := os.MkdirTemp("", "mailfwd-crash-")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	load := &crashLoad{prefix: fmt.Sprintf("crash-%d-%d-", os.Getpid(), seed), refused: map[string]int{}}
	sink := newSinkScanner(suite.servers["SINK_DIR"], load.prefix, began.Add(-2*time.Second))

	p, err := suite.startMailfwd(dir)
	if err != nil {
		t.Fatal(err)
	}
	alive := true
	defer func() {
		if alive {
			p.kill()
		}
		if t.Failed() {
			t.Logf("kept for inspection: %s (relay log %s)", dir, filepath.Join(dir, "mailfwd.log"))
		} else {
			os.RemoveAll(dir)
		}
	}()

	var (
		snaps             []spoolSnap
		killedCycle       = map[int]bool{}
		loadTime          time.Duration
		partialAtKill     int
		killsInData       int
		killsWithPartials int
		cycles            int
	)
	for cycle := 1; ; cycle++ {
		cycles = cycle
		l := load.acceptedCount()
		final := cycle >= crashMinCycles && (l >= crashMinAccepted || time.Since(began) > crashLoadBudget) || cycle >= crashMaxCycles
		d := crashMinLoad + time.Duration(rng.Int64N(int64(crashMaxLoad-crashMinLoad)))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range crashClients {
			wg.Add(1)
			wrng := rand.New(rand.NewPCG(seed, uint64(cycle*1000+i)))
			go func() {
				defer wg.Done()
				load.worker(p.addr, cycle, stop, wrng)
			}()
		}
		t0 := time.Now()
		time.Sleep(d)
		if final {
			close(stop) // clients finish their message and QUIT
			wg.Wait()
			loadTime += time.Since(t0)
			break
		}
		inData := load.inData.Load()
		p.kill()
		alive = false
		loadTime += time.Since(t0)
		close(stop)
		wg.Wait()
		killedCycle[cycle] = true
		snap := snapshotSpool(t, p.spool, cycle)
		snaps = append(snaps, snap)
		partialAtKill += len(snap.partial)
		if len(snap.partial) > 0 {
			killsWithPartials++
		}
		if inData > 0 {
			killsInData++
		}
		t.Logf("cycle %2d: killed after %v, %d sessions waiting for the DATA reply, spool: %d committed, %d partial %v; accepted so far %d",
			cycle, d.Round(time.Millisecond), inData, len(snap.committed), len(snap.partial), abbrev(snap.partial, 4), load.acceptedCount())

		if p, err = suite.startMailfwd(dir); err != nil {
			t.Fatalf("restart after cycle %d: %v", cycle, err)
		}
		alive = true
		// The relay listens only after recovery: whatever the crash left
		// half-written must be gone now, before any client connects.
		for _, name := range snap.partial {
			if _, err := os.Stat(filepath.Join(p.spool, name)); err == nil {
				t.Errorf("cycle %d: partial file %s left by the kill still in the spool after the restart", cycle, name)
			}
		}
		files, err := listSpool(p.spool)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range files {
			if !strings.HasSuffix(n, ".tmp") {
				continue
			}
			// No client is connected yet, so a temp file can only be the
			// scheduler rewriting the envelope of a committed message.
			id, isEnv := strings.CutSuffix(n, ".env.tmp")
			if _, err := os.Stat(filepath.Join(p.spool, id+".msg")); !isEnv || err != nil {
				t.Errorf("cycle %d: temp file %s in the spool right after the restart", cycle, n)
			}
		}
	}

	// Drain: the last relay delivers everything, then stops gracefully.
	accepted, failed := load.snapshot()
	drainStart := time.Now()
	left, lastProgress := -1, time.Now()
	for {
		n := spoolGlob(p.spool, "*.msg")
		if len(n) == 0 {
			break
		}
		if left < 0 || len(n) < left {
			left, lastProgress = len(n), time.Now()
		}
		if time.Since(drainStart) > 60*time.Second || time.Since(lastProgress) > 15*time.Second {
			t.Errorf("%d messages still in the spool %v after the load stopped", len(n), time.Since(drainStart).Round(time.Second))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	alive = false
	if names, err := listSpool(p.spool); err != nil {
		t.Fatal(err)
	} else if len(names) > 0 {
		t.Errorf("spool not empty after the drain and a graceful stop: %d files %v", len(names), abbrev(names, 10))
	}

	// Every accepted message arrived (through Postfix for local recipients):
	// wait while the sink still gets mail, at most 2 minutes.
	deadline := time.Now().Add(120 * time.Second)
	var missing []string
	lastFiles, lastProgress := -1, time.Now()
	for {
		if err := sink.scan(); err != nil {
			t.Fatal(err)
		}
		if sink.files != lastFiles {
			lastFiles, lastProgress = sink.files, time.Now()
		}
		if missing = sink.missing(accepted); len(missing) == 0 || time.Now().After(deadline) || time.Since(lastProgress) > 15*time.Second {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // late duplicates
	if err := sink.scan(); err != nil {
		t.Fatal(err)
	}
	missing = sink.missing(accepted)
	if len(missing) > 0 {
		t.Errorf("%d accepted deliveries never arrived (a 250 was given), e.g.:\n%s", len(missing), strings.Join(abbrev(missing, 20), "\n"))
	}

	// Duplicates only for messages the spool still held at a kill: each
	// recipient arrives at most once plus once per kill that found it there.
	inSpoolAtKills := map[string]int{}
	for _, s := range snaps {
		for id := range s.committed {
			inSpoolAtKills[id]++
		}
	}
	dupMsgs, dupDeliveries, noQID := 0, 0, 0
	var badDups []string
	for _, m := range accepted {
		if m.qid == "" {
			noQID++
		}
		dup := false
		for _, f := range crashRoutes[m.route].finals {
			n := sink.got[m.tok][f]
			if n <= 1 {
				continue
			}
			dup = true
			dupDeliveries += n - 1
			if !killedCycle[m.cycle] || n-1 > inSpoolAtKills[m.qid] {
				badDups = append(badDups, fmt.Sprintf("%s -> %s: %d deliveries; accepted in cycle %d (killed: %v) as %s, in the spool at %d kills",
					m.tok, f, n, m.cycle, killedCycle[m.cycle], m.qid, inSpoolAtKills[m.qid]))
			}
		}
		if dup {
			dupMsgs++
		}
	}
	if noQID > 0 {
		t.Errorf("%d 250 replies without a queue ID", noQID)
	}
	if len(badDups) > 0 {
		t.Errorf("%d duplicates of messages that were not in the spool at a kill:\n%s", len(badDups), strings.Join(abbrev(badDups, 20), "\n"))
	}

	// Messages without a 250 may or may not have arrived; just say how many did.
	unackedArrived := 0
	for _, m := range failed {
		if len(sink.got[m.tok]) > 0 {
			unackedArrived++
		}
	}
	logData, _ := os.ReadFile(filepath.Join(dir, "mailfwd.log"))
	recovered := strings.Count(string(logData), "removing partial file") +
		strings.Count(string(logData), "queue file incomplete") + strings.Count(string(logData), "envelope without queue file")
	load.mu.Lock()
	refused, dialFails := fmt.Sprint(load.refused), load.dialFails
	load.mu.Unlock()
	wall := time.Since(began)
	t.Logf("cycles %d (%d killed, %d with a session waiting for its DATA reply, %d with partial files: %d files, %d cleanup log lines on restart)",
		cycles, len(killedCycle), killsInData, killsWithPartials, partialAtKill, recovered)
	t.Logf("accepted %d, failed %d (of which %d arrived anyway; SMTP refusals by code %s; %d failed dials), at the sink %d transactions",
		len(accepted), len(failed), unackedArrived, refused, dialFails, sink.files)
	t.Logf("duplicates: %d messages (%d extra deliveries), all of messages in the spool at a kill: %v", dupMsgs, dupDeliveries, len(badDups) == 0)
	t.Logf("wall %v (load %v, drain+arrival %v); %.0f accepted messages/s under load, %.0f/s overall",
		wall.Round(time.Millisecond), loadTime.Round(time.Millisecond), time.Since(drainStart).Round(time.Millisecond),
		float64(len(accepted))/loadTime.Seconds(), float64(len(accepted))/wall.Seconds())
	if killsWithPartials == 0 {
		t.Errorf("no kill left a partial file in %d cycles: the harness never interrupted a write", cycles)
	}
	if len(accepted) < 2000 {
		t.Errorf("only %d messages accepted in %d cycles, want thousands (>= 2000)", len(accepted), cycles)
	}
}

func (l *crashLoad) acceptedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.accepted)
}

func (l *crashLoad) snapshot() (accepted, failed []*crashMsg) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*crashMsg(nil), l.accepted...), append([]*crashMsg(nil), l.failed...)
}

// abbrev keeps the first n items of a list for a log line.
func abbrev(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	return append(append([]string(nil), s[:n]...), fmt.Sprintf("... (%d more)", len(s)-n))
}
