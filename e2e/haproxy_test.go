//go:build e2e

package e2e

// Two mailfwd instances, each with its own spool, behind HAProxy (the
// Debian package) in TCP mode with the PROXY protocol v2, as in
// docs/scaling.md. Clients send through HAProxy; one instance is SIGKILLed
// mid-load and started again later on its spool; every message that got a
// 250 must arrive, and the relays must have seen the clients' address from
// the PROXY header, not HAProxy's.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const (
	haMessages   = 600                     // messages the clients send (each retried until accepted)
	haClients    = 10                      // concurrent clients
	haClientIP   = "127.0.0.2"             // the clients' source address: what the relays must see
	haGiveUp     = 60 * time.Second        // a message not accepted after this is a failure
	haPause      = 100 * time.Millisecond  // mean pause between a client's messages: the load lasts seconds
	haPerSession = 8                       // at most this many messages per SMTP session (random)
	haDownTime   = 2500 * time.Millisecond // mx1 stays dead at least this long
)

// haRoutes: through Postfix (local) and straight to the sink (external
// forward, external_next_hop), so both delivery paths drain after the kill.
var haRoutes = []struct{ rcpt, final string }{
	{"sales@company.com", "central@company.com"},
	{"internal.user@company.com", "external.user@gmail.com"},
}

type haInstance struct {
	name, dir, cfg, addr, admin string
	p                           *mailfwdProc
	alive                       bool
}

func (in *haInstance) start(t *testing.T) {
	t.Helper()
	p, err := suite.startRelayConfig(in.dir, in.cfg, in.addr, in.admin)
	if err != nil {
		t.Fatalf("%s: %v", in.name, err)
	}
	p.spool = filepath.Join(in.dir, "spool", "msg")
	in.p, in.alive = p, true
}

func (in *haInstance) spooled() int {
	return len(spoolGlob(filepath.Join(in.dir, "spool", "msg"), "*.msg"))
}

// newHAInstance writes an instance's config (testdata/haproxy/mailfwd.yaml):
// like startMailfwd's, plus proxy_protocol_from for HAProxy on loopback.
func newHAInstance(t *testing.T, root, name, nextHop string) *haInstance {
	t.Helper()
	in := &haInstance{name: name, dir: filepath.Join(root, name)}
	if err := os.MkdirAll(in.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	in.addr, _ = freePort()
	in.admin, _ = freePort()
	var err error
	in.cfg, err = suite.relayConfig(in.dir, "haproxy/mailfwd.yaml", vars{"Hostname": name + ".e2e.test", "Listen": in.addr, "Admin": in.admin, "NextHop": nextHop})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// haMsg is one message of the load and what happened to it.
type haMsg struct {
	tok      string
	route    int
	attempts int
	accepted bool
	qid      string
	at       time.Time // when the 250 came
	errs     []string
}

// haDial opens a session through addr from haClientIP.
func haDial(addr string) (*smtp.Client, error) {
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(haClientIP)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = 15*time.Second, 15*time.Second
	if err := c.Hello("haproxy-client.e2e.test"); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting/EHLO: %w", err)
	}
	return c, nil
}

// haSendOn sends one message on c; nil means the end of DATA got a 250.
func haSendOn(c *smtp.Client, m *haMsg) (string, error) {
	if err := c.Mail("loadgen@example.org", nil); err != nil {
		return "", fmt.Errorf("MAIL: %w", err)
	}
	if err := c.Rcpt(haRoutes[m.route].rcpt, nil); err != nil {
		return "", fmt.Errorf("RCPT: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return "", fmt.Errorf("DATA: %w", err)
	}
	fmt.Fprintf(w, "From: loadgen@example.org\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@haproxy.e2e.test>\r\n\r\n",
		haRoutes[m.route].rcpt, m.tok, m.tok)
	for i := 0; i < 20; i++ {
		fmt.Fprintf(w, "line %d of a message sent through HAProxy while one relay is killed\r\n", i)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", fmt.Errorf("end of DATA: %w", err)
	}
	qid := ""
	if mm := haQueuedRe.FindStringSubmatch(resp.StatusText); mm != nil {
		qid = mm[1]
	}
	return qid, nil
}

// errKind shortens a send error for the summary.
func errKind(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return strconv.Itoa(se.Code)
	}
	s := err.Error()
	if i := strings.IndexByte(s, ':'); i > 0 {
		s = s[:i]
	}
	switch {
	case strings.Contains(err.Error(), "EOF"):
		s += ": EOF"
	case strings.Contains(err.Error(), "reset"):
		s += ": reset"
	case strings.Contains(err.Error(), "refused"):
		s += ": refused"
	}
	return s
}

// haSink reads the sink's dump files once each (only those from this test
// on) and records, per token, the final recipients and the mailfwd
// Received header of each delivery.
type haSink struct {
	dir, prefix string
	since       time.Time
	seen        map[string]bool
	got         map[string][]haArrival
}

type haArrival struct {
	rcpts    []string
	instance string // mx1 / mx2, from our Received header
	client   string // the client address in it
}

var haQueuedRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

var haReceivedRe = regexp.MustCompile(`Received: from haproxy-client\.e2e\.test \(\[([^\]]*)\]\)\s+by (mx[12])\.e2e\.test \(mailfwd\)`)

func (s *haSink) scan() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		path := filepath.Join(s.dir, e.Name())
		if s.seen[path] || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if info.ModTime().Before(s.since) {
			s.seen[path] = true
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		msgs, err := ParseSinkDump(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(msgs) == 0 {
			continue // still being written
		}
		s.seen[path] = true
		for _, m := range msgs {
			tok := m.Header.Get("Subject")
			if !strings.HasPrefix(tok, s.prefix) {
				continue
			}
			a := haArrival{}
			for _, r := range m.Rcpts {
				a.rcpts = append(a.rcpts, strings.ToLower(r))
			}
			if mm := haReceivedRe.FindSubmatch(m.Raw); mm != nil {
				a.client, a.instance = string(mm[1]), string(mm[2])
			}
			s.got[tok] = append(s.got[tok], a)
		}
	}
	return nil
}

func TestHAProxyTwoInstances(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatalf("haproxy is not installed (e2e/scripts/install-deps.sh): %v", err)
	}
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(haClientIP)}}).Dial("tcp", suite.servers["PF_SMTP"]); err != nil {
		t.Fatalf("cannot use %s as a client address: %v", haClientIP, err)
	} else {
		c.Close()
	}
	// Not t.TempDir: on failure the spools and logs are kept.
	root, err := os.MkdirTemp("", "mailfwd-haproxy-")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	// mx1 reaches Postfix through a gate that stays shut until after its
	// restart, so the kill finds messages in its spool (accepted, not yet
	// delivered); mx2 reaches Postfix directly.
	gate := newHAGate(t, suite.servers["PF_SMTP"])
	mx := []*haInstance{newHAInstance(t, root, "mx1", gate.addr), newHAInstance(t, root, "mx2", suite.servers["PF_SMTP"])}
	defer func() {
		for _, in := range mx {
			if in.alive {
				in.p.stop()
				in.alive = false
			}
		}
		if t.Failed() {
			t.Logf("kept for inspection: %s (mx1/mailfwd.log, mx2/mailfwd.log, haproxy.log)", root)
		} else {
			os.RemoveAll(root)
		}
	}()
	for _, in := range mx {
		in.start(t)
	}

	// HAProxy in the foreground (-db), a child of the test, stopped by PID.
	front, _ := freePort()
	haCfg := filepath.Join(root, "haproxy.cfg")
	haSock := filepath.Join(root, "haproxy.sock")
	writeConfig(t, haCfg, "haproxy/haproxy.cfg", vars{"Socket": haSock, "Front": front, "MX1": mx[0].addr, "MX2": mx[1].addr})
	if out, err := exec.Command("haproxy", "-c", "-f", haCfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	haLog, err := os.Create(filepath.Join(root, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer haLog.Close()
	ha := exec.Command("haproxy", "-f", haCfg, "-db")
	ha.Stdout, ha.Stderr = haLog, haLog
	if err := ha.Start(); err != nil {
		t.Fatal(err)
	}
	haDone := make(chan error, 1)
	go func() { haDone <- ha.Wait() }()
	defer func() {
		ha.Process.Signal(syscall.SIGKILL) // by PID: only the haproxy we started
		<-haDone
	}()
	// Through HAProxy, both instances answer (round robin).
	banners := map[string]bool{}
	for i := 0; len(banners) < 2; i++ {
		if i > 100 {
			b, _ := os.ReadFile(haLog.Name())
			t.Fatalf("HAProxy on %s: banners %v after %d tries\n%s", front, banners, i, b)
		}
		if b := haBanner(front, haClientIP, nil); strings.HasPrefix(b, "220 ") {
			banners[strings.Fields(b)[1]] = true
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("HAProxy on %s in front of mx1 %s and mx2 %s: banners from %v", front, mx[0].addr, mx[1].addr, haKeys(banners))

	// Without HAProxy: a connection from the trusted address without a
	// PROXY header gets no session (after the header timeout), and one from
	// another address with a PROXY header gets none either.
	t.Run("direct connections", func(t *testing.T) {
		var wg sync.WaitGroup
		var noHeader, forged string
		var noHeaderTook time.Duration
		wg.Add(2)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			noHeader = haBanner(mx[0].addr, "127.0.0.1", nil)
			noHeaderTook = time.Since(t0)
		}()
		go func() {
			defer wg.Done()
			forged = haForged(mx[1].addr, haClientIP, []byte("PROXY TCP4 192.0.2.66 127.0.0.1 40000 25\r\n"))
		}()
		// Meanwhile a proper PROXY connection to mx1, as HAProxy makes them.
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		proper := haBanner(mx[0].addr, "127.0.0.1", []byte("PROXY TCP4 192.0.2.7 127.0.0.1 40001 25\r\n"))
		properTook := time.Since(t0)
		wg.Wait()
		if strings.HasPrefix(noHeader, "220") {
			t.Errorf("a connection from 127.0.0.1 (proxy_protocol_from) without a PROXY header got a session: %q", noHeader)
		}
		if strings.HasPrefix(forged, "250") {
			t.Errorf("a PROXY header from %s (not in proxy_protocol_from) was accepted: EHLO after it got %q", haClientIP, forged)
		}
		if !strings.HasPrefix(proper, "220 mx1.e2e.test") {
			t.Errorf("a connection with a PROXY header from 127.0.0.1: %q", proper)
		}
		logHas(t, mx[0].p, 5*time.Second, "proxy protocol signature not present")
		t.Logf("no header from 127.0.0.1: %q after %v (closed, no banner); PROXY header from %s, then EHLO: %q", noHeader, noHeaderTook.Round(10*time.Millisecond), haClientIP, forged)
		t.Logf("a PROXY connection opened 300ms after the silent one got its banner after %v", properTook.Round(10*time.Millisecond))
		if properTook > 2*time.Second {
			// Each connection's PROXY header is read in its own goroutine:
			// one silent connection must not hold up the others.
			t.Errorf("a silent direct connection stalled mx1's accept for %v", properTook.Round(10*time.Millisecond))
		}
	})

	// The silent connection above held mx1's accept loop, so HAProxy's
	// checks may have taken it out: start the load with both UP.
	haWaitState(t, haSock, map[string]string{"mx1": "UP", "mx2": "UP"}, 15*time.Second)

	// The load: haClients clients, each message on its own connection through
	// HAProxy, retried until it gets a 250 (as a real MTA would).
	prefix := fmt.Sprintf("ha-%d-%d-", os.Getpid(), time.Now().UnixNano())
	sink := &haSink{dir: suite.servers["SINK_DIR"], prefix: prefix, since: time.Now().Add(-2 * time.Second), seen: map[string]bool{}, got: map[string][]haArrival{}}
	sink.scan() // older files: skipped from now on
	msgs := make([]*haMsg, haMessages)
	for i := range msgs {
		msgs[i] = &haMsg{tok: fmt.Sprintf("%s%d", prefix, i), route: i % len(haRoutes)}
	}
	var next, accepted, attempts atomic.Int64
	var quit atomic.Bool // the test is over (a t.Fatal): clients stop
	defer quit.Store(true)
	var errMu sync.Mutex
	errKinds := map[string]int{}
	loadStart := time.Now()
	var wg sync.WaitGroup
	loadDone := make(chan struct{})
	for w := range haClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *smtp.Client
			var err error
			inSession, sessionLen := 0, 1
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
			defer func() {
				if c != nil {
					c.Quit()
					c.Close()
				}
			}()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(msgs) || quit.Load() {
					return
				}
				m := msgs[i]
				first := time.Now()
				for time.Since(first) < haGiveUp && !quit.Load() {
					if c == nil {
						if c, err = haDial(front); err != nil {
							c = nil
							errMu.Lock()
							errKinds[errKind(err)]++
							errMu.Unlock()
							m.errs = append(m.errs, err.Error())
							time.Sleep(200 * time.Millisecond)
							continue
						}
						inSession, sessionLen = 0, 1+rng.IntN(haPerSession)
					}
					m.attempts++
					attempts.Add(1)
					qid, err := haSendOn(c, m)
					if err == nil {
						m.accepted, m.qid, m.at = true, qid, time.Now()
						accepted.Add(1)
						if inSession++; inSession >= sessionLen {
							c.Quit()
							c.Close()
							c = nil
						}
						break
					}
					// The session is gone or in an unknown state: a new
					// connection, as an MTA would retry.
					c.Close()
					c = nil
					m.errs = append(m.errs, err.Error())
					errMu.Lock()
					errKinds[errKind(err)]++
					errMu.Unlock()
					time.Sleep(200 * time.Millisecond)
				}
				time.Sleep(haPause/2 + time.Duration(rng.Int64N(int64(haPause))))
			}
		}()
	}
	go func() { wg.Wait(); close(loadDone) }()
	// The kill at a quarter of the load, the restart once half is accepted
	// and mx1 has been dead for haDownTime.
	var killedAt, restartedAt int64
	var atKill int
	var killTime, restartTime time.Time
	for phase := 0; phase < 2; {
		n := accepted.Load()
		switch {
		case phase == 0 && n >= haMessages/4:
			mx[0].p.kill()
			mx[0].alive = false
			killTime = time.Now()
			killedAt, atKill = n, mx[0].spooled()
			t.Logf("SIGKILL mx1 after %d accepted messages (%v into the load); %d messages left in its spool", n, time.Since(loadStart).Round(time.Millisecond), atKill)
			phase++
		case phase == 1 && n >= haMessages/2 && time.Since(killTime) >= haDownTime:
			t.Logf("HAProxy's view before the restart: %v", haState(haSock))
			mx[0].start(t)
			restartedAt, restartTime = n, time.Now()
			gate.open.Store(true)
			t.Logf("mx1 started again on its spool after %d accepted messages (%v after the kill)", n, time.Since(killTime).Round(time.Millisecond))
			phase++
		}
		select {
		case <-loadDone:
			if phase == 0 {
				t.Fatalf("the load ended before the kill (%d accepted)", n)
			}
			if phase == 1 {
				mx[0].start(t) // the load gave up early: restart for the drain
				restartTime = time.Now()
				gate.open.Store(true)
				t.Logf("mx1 started again after the load ended with %d accepted", accepted.Load())
				phase++
			}
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	loadTime := time.Since(loadStart)

	// Both spools drain.
	drainStart := time.Now()
	for {
		n1, n2 := mx[0].spooled(), mx[1].spooled()
		if n1+n2 == 0 {
			break
		}
		if time.Since(drainStart) > 90*time.Second {
			t.Fatalf("spools not drained after 90s: mx1 %d, mx2 %d\nmx1 log:\n%s", n1, n2, mx[0].p.logTail(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	drainTime := time.Since(drainStart)

	// Every accepted message arrives (through Postfix for central@, directly
	// for the external forward): wait while the sink still gets mail.
	deadline := time.Now().Add(90 * time.Second)
	var missing []string
	var notAccepted []*haMsg
	for _, m := range msgs {
		if !m.accepted {
			notAccepted = append(notAccepted, m)
		}
	}
	for {
		if err := sink.scan(); err != nil {
			t.Fatal(err)
		}
		missing = missing[:0]
		for _, m := range msgs {
			if m.accepted && len(sink.got[m.tok]) == 0 {
				missing = append(missing, fmt.Sprintf("%s (queue id %s, %d attempts)", m.tok, m.qid, m.attempts))
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // late duplicates
	sink.scan()

	arrivedN, dups, perInstance, badClient, badRcpt := 0, 0, map[string]int{}, []string{}, []string{}
	// Which instance took the messages accepted before the kill, while mx1
	// was dead, and after its restart.
	perPhase := map[string]map[string]int{"before": {}, "down": {}, "after": {}}
	for _, m := range msgs {
		as := sink.got[m.tok]
		if len(as) == 0 {
			continue
		}
		arrivedN++
		dups += len(as) - 1
		phase := "before"
		switch {
		case m.at.After(restartTime):
			phase = "after"
		case m.at.After(killTime):
			phase = "down"
		}
		perPhase[phase][as[0].instance]++
		for _, a := range as {
			perInstance[a.instance]++
			if a.client != haClientIP {
				badClient = append(badClient, fmt.Sprintf("%s: mailfwd Received header names client %q (instance %q)", m.tok, a.client, a.instance))
			}
			if len(a.rcpts) != 1 || a.rcpts[0] != haRoutes[m.route].final {
				badRcpt = append(badRcpt, fmt.Sprintf("%s: arrived for %v, want %s", m.tok, a.rcpts, haRoutes[m.route].final))
			}
		}
	}
	errMu.Lock()
	kinds := fmt.Sprint(errKinds)
	errMu.Unlock()
	t.Logf("messages %d, SMTP attempts %d (failed attempts by kind: %s), accepted %d, never accepted %d, arrived %d (+%d duplicates), delivered via mx1 %d / mx2 %d",
		len(msgs), attempts.Load(), kinds, accepted.Load(), len(notAccepted), arrivedN, dups, perInstance["mx1"], perInstance["mx2"])
	t.Logf("kill after %d accepted (%d in mx1's spool), restart after %d; load %v, drain %v, total %v",
		killedAt, atKill, restartedAt, loadTime.Round(time.Millisecond), drainTime.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))

	if len(missing) > 0 {
		t.Errorf("%d messages got a 250 and never arrived:\n%s", len(missing), strings.Join(abbrev(missing, 20), "\n"))
	}
	if len(notAccepted) > 0 {
		var s []string
		for _, m := range notAccepted {
			s = append(s, fmt.Sprintf("%s: %d attempts, last: %s", m.tok, m.attempts, m.errs[len(m.errs)-1]))
		}
		t.Errorf("%d messages never got a 250 in %v of retries while mx2 was up:\n%s", len(notAccepted), haGiveUp, strings.Join(abbrev(s, 10), "\n"))
	}
	if len(badClient) > 0 {
		t.Errorf("the relays did not see the client address from the PROXY header:\n%s", strings.Join(abbrev(badClient, 10), "\n"))
	}
	if len(badRcpt) > 0 {
		t.Errorf("wrong recipients:\n%s", strings.Join(abbrev(badRcpt, 10), "\n"))
	}
	t.Logf("accepted by instance: before the kill %v, while mx1 was dead %v, after its restart %v", perPhase["before"], perPhase["down"], perPhase["after"])
	if perPhase["before"]["mx1"] == 0 || perPhase["before"]["mx2"] == 0 {
		t.Errorf("HAProxy did not spread the load before the kill: %v", perPhase["before"])
	}
	if perPhase["down"]["mx1"] > 0 || perPhase["down"]["mx2"] == 0 {
		t.Errorf("while mx1 was dead: %v, want everything on mx2", perPhase["down"])
	}
	if perPhase["after"]["mx1"] == 0 {
		t.Errorf("HAProxy did not send anything to mx1 after its restart: %v", perPhase["after"])
	}
	hl, _ := os.ReadFile(haLog.Name())
	for _, l := range strings.Split(string(hl), "\n") {
		if strings.HasPrefix(l, "Server mailfwd/") {
			t.Logf("haproxy: %s", l)
		}
	}
	// Both logs record the client as HAProxy reported it.
	for _, in := range mx {
		logHas(t, in.p, 5*time.Second, "(queue active)", "client="+haClientIP)
	}
	// mx1's spool at the kill was delivered after the restart: the restarted
	// process logged deliveries of its own.
	if atKill == 0 {
		t.Errorf("mx1's spool was empty at the kill: the gate did not hold its deliveries back")
	} else {
		b, _ := os.ReadFile(filepath.Join(mx[0].dir, "mailfwd.log"))
		s := string(b)
		i := strings.LastIndex(s, `msg="mailfwd started"`)
		if i < 0 || !strings.Contains(s[i:], "status=sent") {
			t.Errorf("the restarted mx1 logged no delivery, with %d messages in its spool at the kill", atKill)
		}
	}
}

// haBanner connects to addr from src, writes pre (a PROXY header) if given,
// and returns the first line the server sends ("" if it closes first; the
// error text on a timeout).
func haBanner(addr, src string, pre []byte) string {
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	if pre != nil {
		c.Write(pre)
	}
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "read: " + err.Error()
	}
	if l != "" && pre == nil && strings.HasPrefix(l, "220") {
		c.Write([]byte("QUIT\r\n"))
	}
	return strings.TrimSpace(l)
}

// haForged connects from src, sends pre (a PROXY header) at once, reads
// the banner (a client that is not a balancer gets it without waiting),
// then says EHLO and returns the answer: a session only if it is 250.
func haForged(addr, src string, pre []byte) string {
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	c.Write(pre)
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "220") {
		return strings.TrimSpace(l)
	}
	c.Write([]byte("EHLO forged.test\r\n"))
	l, _ := r.ReadString('\n')
	return strings.TrimSpace(l)
}

func haKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// haState asks HAProxy's stats socket for the backend's server states
// (UP, DOWN, "UP 1/2", ...).
func haState(sock string) map[string]string {
	out := map[string]string{}
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		out["error"] = err.Error()
		return out
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte("show stat\n"))
	b, _ := io.ReadAll(c)
	var status int = -1
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ",")
		if strings.HasPrefix(l, "# ") {
			for i, n := range f {
				if n == "status" {
					status = i
				}
			}
			continue
		}
		if len(f) > status && status >= 0 && f[0] == "mailfwd" && f[1] != "BACKEND" {
			out[f[1]] = f[status]
		}
	}
	return out
}

// haWaitState waits until HAProxy reports the wanted server states.
func haWaitState(t *testing.T, sock string, want map[string]string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := haState(sock)
		ok := true
		for k, v := range want {
			if got[k] != v {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("HAProxy servers %v, want %v", got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// haGate forwards TCP connections to another address while open; shut, it
// closes each connection at once (the relay's delivery is deferred).
type haGate struct {
	addr string
	open atomic.Bool
}

func newHAGate(t *testing.T, to string) *haGate {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	g := &haGate{addr: l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if !g.open.Load() {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				d, err := net.DialTimeout("tcp", to, 2*time.Second)
				if err != nil {
					return
				}
				defer d.Close()
				go func() { io.Copy(d, c); d.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, d)
			}()
		}
	}()
	return g
}
