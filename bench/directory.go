package main

// The directory scenario (-directory N): N mail recipients in 389-DS, each
// with a forwarding address in another of our domains (so both relays look
// up the alias and then its result, as virtual_alias_maps does), and 1 KiB
// messages to one recipient each, drawn uniformly over all N (an MX sees
// many distinct recipients) or by Zipf's law (s=1.1: a few busy
// addresses, a long tail). Postfix asks 389-DS for every lookup; mailfwd
// answers from its replica (docs/directory.md). Reported: end-to-end
// messages/s, LDAP searches per message and binds per 1,000 messages in
// the measured window (389-DS's access log), after the relay's warm-up.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

const (
	directoryBegin = "<!-- directory: written by go run ./bench -directory N -->"
	directoryEnd   = "<!-- /directory -->"
)

type dirResult struct {
	relay, dist     string
	e2e             float64 // msgs/s
	searches, binds float64 // per message, per 1,000 messages
	cpuPerK         float64
	err             string
}

// dirRecipient is the i-th recipient of the scenario and where it goes.
func dirRecipient(i int) string { return fmt.Sprintf("dir%06d@company.com", i) }

// loadDirectory adds n recipients to 389-DS as Directory Manager.
func loadDirectory(url, rootDN, rootPW string, n int) error {
	cmd := exec.Command("ldapmodify", "-a", "-c", "-x", "-H", url, "-D", rootDN, "-w", rootPW)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	w := bufio.NewWriterSize(in, 1<<20)
	fmt.Fprintf(w, "dn: ou=bench,dc=example,dc=net\nobjectClass: top\nobjectClass: organizationalUnit\nou: bench\n\n")
	for i := range n {
		fmt.Fprintf(w, "dn: uid=dir%06d,ou=bench,dc=example,dc=net\nobjectClass: top\nobjectClass: person\nobjectClass: inetOrgPerson\nobjectClass: mailRecipient\nuid: dir%06d\ncn: dir%06d\nsn: bench\nmail: %s\nmailForwardingAddress: dir%06d.box@domain.ro\n\n",
			i, i, i, dirRecipient(i), i)
	}
	w.Flush()
	in.Close()
	if err := cmd.Wait(); err != nil && !strings.Contains(out.String(), "Already exists") {
		return fmt.Errorf("ldapmodify: %v: %s", err, tail(out.String(), 500))
	}
	return nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// dirLoad sends msgs 1 KiB messages over conc sessions (up to 50 messages
// each), one recipient per message chosen by pick.
func dirLoad(addr string, msgs, conc int, pick func(*rand.Rand) int) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	body := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 16)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w) + 1))
			for next.Load() < int64(msgs) {
				if err := dirSession(addr, &next, msgs, rng, pick, body); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func dirSession(addr string, next *atomic.Int64, msgs int, rng *rand.Rand, pick func(*rand.Rand) int, body string) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Hello("client.bench.test"); err != nil {
		return err
	}
	for range 50 {
		if next.Add(1) > int64(msgs) {
			break
		}
		if err := c.Mail("sender@example.org", nil); err != nil {
			return err
		}
		to := dirRecipient(pick(rng))
		if err := c.Rcpt(to, nil); err != nil {
			return fmt.Errorf("RCPT %s: %w", to, err)
		}
		wc, err := c.Data()
		if err != nil {
			return err
		}
		fmt.Fprintf(wc, "From: sender@example.org\r\nTo: %s\r\nSubject: bench\r\n\r\n%s", to, body)
		if err := wc.Close(); err != nil {
			return err
		}
	}
	return c.Quit()
}

// waitReplicaSynced polls the relay's /metrics until its replica is in
// sync (the refresh of N entries takes a few seconds).
func waitReplicaSynced(admin string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "mailfwd_directory_replica_state{") && strings.Contains(l, `state="synced"`) && strings.HasSuffix(l, " 1") {
					return nil
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("replica not in sync after %v", limit)
}

func countBinds(path string, offset int64) int {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	f.Seek(offset, io.SeekStart)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if bytes.Contains(sc.Bytes(), []byte(" BIND dn=")) {
			n++
		}
	}
	return n
}

// measureDirectory is one run of the directory scenario through r.
func (e *env) measureDirectory(r relay, dist string, n, msgs int) (res dirResult) {
	res = dirResult{relay: r.name(), dist: dist}
	pick := func(rng *rand.Rand) int { return rng.Intn(n) }
	if dist == "zipf" {
		var mu sync.Mutex
		z := rand.NewZipf(rand.New(rand.NewSource(7)), 1.1, 1, uint64(n-1))
		pick = func(*rand.Rand) int { mu.Lock(); defer mu.Unlock(); return int(z.Uint64()) }
	}
	sk, err := startSink(e.sinkAddr)
	if err != nil {
		res.err = err.Error()
		return res
	}
	defer sk.stop()
	if err := r.start(); err != nil {
		res.err = err.Error()
		return res
	}
	defer r.stop()
	if m, ok := r.(*mailfwdRelay); ok && m.label == "" {
		if err := waitReplicaSynced(m.admin, 120*time.Second); err != nil {
			res.err = err.Error()
			return res
		}
	}
	warm := e.o.warm
	if err := dirLoad(r.addr(), warm, e.o.conc, pick); err != nil {
		res.err = "warm-up: " + err.Error()
		return res
	}
	if _, ok := sk.counter.waitFor(warm, 120*time.Second); !ok {
		res.err = "warm-up: sink short"
		return res
	}
	time.Sleep(300 * time.Millisecond)
	base := sk.counter.count()
	off := fileSize(e.dsAccess)
	cpu0 := r.cpu().seconds()
	t0 := time.Now()
	if err := dirLoad(r.addr(), msgs, e.o.conc, pick); err != nil {
		res.err = err.Error()
	}
	tEnd, ok := sk.counter.waitFor(base+msgs, 300*time.Second)
	time.Sleep(300 * time.Millisecond)
	if !ok {
		res.err += fmt.Sprintf(" sink counted %d of %d", sk.counter.count()-base, msgs)
		return res
	}
	res.e2e = float64(msgs) / tEnd.Sub(t0).Seconds()
	res.cpuPerK = (r.cpu().seconds() - cpu0) / float64(msgs) * 1000
	res.searches = float64(countSearches(e.dsAccess, off)) / float64(msgs)
	res.binds = float64(countBinds(e.dsAccess, off)) / float64(msgs) * 1000
	return res
}

// runDirectory loads the entries and measures both relays, alternating,
// for each distribution.
func (e *env) runDirectory(dsURL, rootDN, rootPW string) (string, error) {
	n, msgs := e.o.directory, e.o.directoryMsgs
	t0 := time.Now()
	logf("directory scenario: loading %d entries into 389-DS", n)
	if err := loadDirectory(dsURL, rootDN, rootPW, n); err != nil {
		return "", err
	}
	logf("  loaded in %v", time.Since(t0).Round(time.Second))
	// mailfwd with its replica off: the live queries behind the cache,
	// to show the connection pool (binds) and what the replica is worth.
	cfg, err := os.ReadFile(e.mf.config)
	if err != nil {
		return "", err
	}
	liveCfg := strings.TrimSuffix(e.mf.config, ".yaml") + "-live.yaml"
	text := strings.Replace(string(cfg), "    result_attributes: [mailForwardingAddress]\n",
		"    result_attributes: [mailForwardingAddress]\n  replica: {enabled: false}\n", 1)
	if err := os.WriteFile(liveCfg, []byte(text), 0o644); err != nil {
		return "", err
	}
	live := *e.mf
	live.config, live.label = liveCfg, "mailfwd, replica off"
	live.cmd, live.done = nil, nil
	var rs []dirResult
	for _, dist := range []string{"uniform", "zipf"} {
		for i := 0; i < e.o.pairs; i++ {
			for _, r := range []relay{e.pf, e.mf, &live} {
				res := e.measureDirectory(r, dist, n, msgs)
				rs = append(rs, res)
				logf("  %-8s %-7s e2e %7.1f/s  srch/msg %.3f  binds/1k %.1f  cpu %.2f s/1k %s",
					res.relay, dist, res.e2e, res.searches, res.binds, res.cpuPerK, res.err)
			}
		}
	}
	return e.directorySection(n, msgs, rs, time.Since(t0)), nil
}

func (e *env) directorySection(n, msgs int, rs []dirResult, took time.Duration) string {
	var b strings.Builder
	w := func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }
	w("%s\n## Many distinct recipients: %d directory entries\n\n", directoryBegin, n)
	w("%d messages of 1 KiB per run, one recipient each, drawn uniformly over the %d entries or by Zipf's law (s=1.1); "+
		"each entry forwards to an address in another of our domains, so both relays look up the alias and its result. "+
		"C=%d sessions of up to 50 messages (a Go SMTP client, bench/directory.go); %d warm-up messages per run "+
		"(mailfwd: after its replica is in sync). Medians of %d runs per relay, alternating. "+
		"Searches and binds from 389-DS's access log over the measured window; 389-DS's %s backend (DS_DB_LIB). Run %s, %v.\n\n",
		msgs, n, e.o.conc, e.o.warm, e.o.pairs, dsBackend(), time.Now().UTC().Format("2006-01-02"), took.Round(time.Second))
	w("| recipients | relay | end-to-end msgs/s | ratio | LDAP searches / msg | binds / 1,000 msgs | relay CPU s / 1,000 msgs |\n|---|---|---|---|---|---|---|\n")
	for _, dist := range []string{"uniform", "zipf"} {
		med := map[string]dirResult{}
		relays := []string{"Postfix", "mailfwd", "mailfwd, replica off"}
		for _, relay := range relays {
			var e2e, s, bi, cpu []float64
			errs := ""
			for _, r := range rs {
				if r.dist == dist && strings.EqualFold(r.relay, relay) {
					if r.err != "" {
						errs += r.err + "; "
						continue
					}
					e2e, s, bi, cpu = append(e2e, r.e2e), append(s, r.searches), append(bi, r.binds), append(cpu, r.cpuPerK)
				}
			}
			med[relay] = dirResult{e2e: median(e2e), searches: median(s), binds: median(bi), cpuPerK: median(cpu), err: errs}
		}
		for _, relay := range relays {
			m := med[relay]
			ratio := fmt.Sprintf("%.1f×", m.e2e/med["Postfix"].e2e)
			if relay == "mailfwd" {
				ratio = "**" + ratio + "**"
			}
			note := ""
			if m.err != "" {
				note = " (errors: " + m.err + ")"
			}
			w("| %s | %s | %.0f%s | %s | %.3f | %.1f | %.2f |\n", dist, relay, m.e2e, note, ratio, m.searches, m.binds, m.cpuPerK)
		}
	}
	w("\n%s\n", directoryEnd)
	return b.String()
}

// dsBackend is the 389-DS database the bench's instance uses: bdb, as
// start-389ds.sh makes it, unless DS_DB_LIB says otherwise (389-DS 2.3.1
// on mdb crashes under the replica's load: docs/directory.md).
func dsBackend() string {
	if v := os.Getenv("DS_DB_LIB"); v != "" {
		return v
	}
	return "bdb"
}

// writeSection puts a marked section into the report file, replacing an
// earlier one.
func writeSection(path, begin, end, section string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(b)
	if i, j := strings.Index(s, begin), strings.Index(s, end); i >= 0 && j > i {
		s = s[:i] + strings.TrimSuffix(section, "\n") + s[j+len(end):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + section
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
