//go:build e2e

package e2e

// The relay under attack, as an MX facing the Internet meets it: a
// connection flood from many addresses past the file-descriptor limit (the
// relay runs under prlimit, so accept() meets EMFILE), slowloris sessions
// trickling commands and message bytes, sessions idling on NOOP, an SRS
// hash guesser, messages whose DKIM key lookup hangs (a DNS server that
// never answers key queries), bare-CR header forgeries and BDAT transfers
// cut off by RSET. Meanwhile an honest client (another address, one that
// has sent here before) sends a message every 200 ms. The relay must keep serving it, hold bounded
// memory and file descriptors, and let nothing forged through.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// procStat reads a process's resident set (KiB) and open descriptors.
func procStat(pid int) (rssKiB int, fds int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rssKiB, len(ents)
}

// dialFrom connects to addr from a loopback source address (127/8 is all
// ours: each is a different client to the per-client limits).
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}

// hangingDKIMDNS answers every query at once with NXDOMAIN, but never
// answers a DKIM key query (a name under _domainkey): the checks that do
// not need a key finish at once, the DKIM check hangs until its timeout.
func hangingDKIMDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(b[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil || strings.Contains(strings.ToLower(q.Name.String()), "_domainkey.") {
				continue // never answered
			}
			h.Response, h.RecursionAvailable, h.RCode = true, true, dnsmessage.RCodeNameError
			bld := dnsmessage.NewBuilder(nil, h)
			bld.StartQuestions()
			bld.Question(q)
			if out, err := bld.Finish(); err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func TestHostileClients(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hostile")
	os.MkdirAll(dir, 0o700)
	addr, admin := mustFreePort(t), mustFreePort(t)
	dns := hangingDKIMDNS(t)
	cfgPath, err := suite.relayConfig(dir, "hostile/mailfwd.yaml", vars{"Hostname": "mx.hostile.test", "Listen": addr, "Admin": admin, "DNS": dns})
	if err != nil {
		t.Fatal(err)
	}
	// 256 descriptors: the flood below runs the relay out of them
	m, err := suite.startRelayConfigWith(dir, cfgPath, addr, admin, []string{"prlimit", "--nofile=256:256", "--"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()
	pid := m.cmd.Process.Pid // prlimit execs the relay: same process

	// The honest client has sent here before (a stranger arriving
	// mid-flood competes with the flood for slots, and retries later).
	if err := sendFromAddr("127.0.9.1", addr, "alice@example.org", "sales@company.com", "Subject: before\r\n\r\nx\r\n"); err != nil {
		t.Fatalf("before the attack: %v", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var peakRSS, peakFDs atomic.Int64
	wg.Add(1)
	go func() { // sample the relay
		defer wg.Done()
		for {
			rss, fds := procStat(pid)
			if int64(rss) > peakRSS.Load() {
				peakRSS.Store(int64(rss))
			}
			if int64(fds) > peakFDs.Load() {
				peakFDs.Store(int64(fds))
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	attack := func(name string, n int, f func(i int)) {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					f(i)
				}
			}()
		}
	}
	var floodConns, floodRefused atomic.Int64
	// 1. flood: 400 clients (127.0.1.x, 127.0.2.x) holding connections open
	attack("flood", 400, func(i int) {
		c, err := dialFrom(fmt.Sprintf("127.0.%d.%d", 1+i/200, 1+i%200), addr)
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			return
		}
		floodConns.Add(1)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		l, _ := bufio.NewReader(c).ReadString('\n')
		if strings.HasPrefix(l, "421") {
			floodRefused.Add(1)
		}
		time.Sleep(2 * time.Second) // hold the descriptor
		c.Close()
	})
	// 2. slowloris: a byte a second, in commands and in a message
	attack("slowloris", 20, func(i int) {
		c, err := dialFrom(fmt.Sprintf("127.0.3.%d", 1+i), addr)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			return
		}
		defer c.Close()
		msg := "EHLO slow.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<sales@company.com>\r\nDATA\r\nSubject: slow\r\n\r\n"
		if i%2 == 0 {
			msg = "EHLO slow.test\r\n"
		}
		for _, b := range []byte(msg + strings.Repeat("x", 100)) {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
		}
	})
	// 3. junk: NOOP until closed
	var junkClosed atomic.Int64
	attack("junk", 5, func(i int) {
		c, err := dialFrom(fmt.Sprintf("127.0.4.%d", 1+i), addr)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "220") {
			time.Sleep(200 * time.Millisecond)
			return // not admitted
		}
		for range 1000 {
			if _, err := io.WriteString(c, "NOOP\r\n"); err != nil {
				break
			}
			l, err := r.ReadString('\n')
			if err != nil || strings.HasPrefix(l, "421") {
				junkClosed.Add(1)
				break
			}
		}
	})
	// 4. an SRS hash guesser
	var guesses, guessesCut atomic.Int64
	attack("srs", 2, func(i int) {
		c, err := dialFrom(fmt.Sprintf("127.0.5.%d", 1+i), addr)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(c)
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "220") {
			time.Sleep(200 * time.Millisecond)
			return // not admitted
		}
		fmt.Fprintf(c, "EHLO guess.test\r\nMAIL FROM:<>\r\n")
		readReply(r)
		readReply(r)
		for g := 0; ; g++ {
			fmt.Fprintf(c, "RCPT TO:<SRS0=%04X=KH=example.com=victim@%s>\r\n", g, srsDomain)
			guesses.Add(1)
			l := readReply(r)
			if l == "" || strings.HasPrefix(l, "421") {
				guessesCut.Add(1)
				return
			}
			fmt.Fprintf(c, "RSET\r\nMAIL FROM:<>\r\n")
			readReply(r)
			readReply(r)
		}
	})
	// 5. DKIM-signed mail whose key lookup hangs, with big bodies
	var hangQueued atomic.Int64
	attack("dkim-hang", 20, func(i int) {
		body := strings.Repeat(strings.Repeat("h", 900)+"\r\n", 1200) // ~1 MiB
		msg := "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=hang; c=relaxed/relaxed; h=from; bh=AAAA; b=AAAA\r\n" +
			"From: a@example.org\r\nSubject: hang\r\n\r\n" + body
		if err := sendFromAddr(fmt.Sprintf("127.0.6.%d", 1+i), addr, "a@example.org", "sales@company.com", msg); err == nil {
			hangQueued.Add(1)
		}
	})
	// 6. bare-CR forgery and 7. BDAT cut off by RSET, checked at the sink
	forged := suite.token(t)
	attack("forgery", 1, func(i int) {
		msg := "X-Pad: x\rAuthentication-Results: mx.hostile.test; spf=pass; dkim=pass; dmarc=pass " + forged + "\r\n" +
			"From: a@example.org\r\nSubject: " + forged + "\r\n\r\nbody\r\n"
		sendFromAddr("127.0.7.1", addr, "a@example.org", "sales@company.com", msg)
		time.Sleep(500 * time.Millisecond)
	})
	var bdatWrong atomic.Int64
	attack("bdat", 1, func(i int) {
		c, err := dialFrom("127.0.7.2", addr)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "220") {
			time.Sleep(200 * time.Millisecond)
			return // not admitted
		}
		fmt.Fprintf(c, "EHLO bdat.test\r\n")
		readReply(r)
		for range 5 {
			fmt.Fprintf(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<sales@company.com>\r\nBDAT 5\r\nhello")
			readReply(r)
			readReply(r)
			readReply(r)
			fmt.Fprintf(c, "RSET\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<sales@company.com>\r\nBDAT 19 LAST\r\nSubject: bdat\r\n\r\nok")
			readReply(r)
			readReply(r)
			readReply(r)
			if l := readReply(r); !strings.HasPrefix(l, "250") {
				bdatWrong.Add(1)
			}
		}
		time.Sleep(time.Second)
	})

	// The honest client, from its own address, every 200 ms.
	var lat []time.Duration
	var honestFail []string
	deadline := time.Now().Add(20 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		tok := fmt.Sprintf("%s-honest-%d", suite.token(t), n)
		t0 := time.Now()
		err := sendFromAddr("127.0.9.1", addr, "alice@example.org", "sales@company.com",
			"From: alice@example.org\r\nSubject: "+tok+"\r\n\r\nhonest\r\n")
		if err != nil {
			honestFail = append(honestFail, err.Error())
		} else {
			lat = append(lat, time.Since(t0))
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	// The relay survived, and serves again once the attack is over.
	if err := sendFromAddr("127.0.9.1", addr, "alice@example.org", "sales@company.com", "Subject: after\r\n\r\nx\r\n"); err != nil {
		t.Errorf("after the attack: %v", err)
		_, fds := procStat(pid)
		t.Logf("relay holds %d descriptors: %s", fds, fdKinds(pid))
		m.cmd.Process.Signal(syscall.SIGQUIT) // goroutine dump into its log
		time.Sleep(time.Second)
		t.Logf("relay log tail:\n%s", tail(m.logTailAll(), 30000))
	}
	select {
	case err := <-m.done:
		t.Fatalf("the relay exited during the attack: %v\n%s", err, m.logTail(t))
	default:
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	log := m.logTailAll()
	emfile := strings.Count(log, "accept failed; retrying")
	if !strings.Contains(log, "more than the file descriptor limit allows") {
		t.Error("max_connections 300 under 256 descriptors was not lowered (no warning)")
	}
	t.Logf("during 20 s of attack: honest client %d sent, %d failed; latency p50 %v, p99 %v, max %v",
		len(lat), len(honestFail), pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), pct(1).Round(time.Millisecond))
	t.Logf("relay peak RSS %d MiB, peak open descriptors %d (limit 256); flood connections %d (%d refused 421); accept errors retried %d",
		peakRSS.Load()>>10, peakFDs.Load(), floodConns.Load(), floodRefused.Load(), emfile)
	t.Logf("junk sessions closed %d; SRS guesses %d, connections cut %d; DKIM-hang messages queued %d; BDAT answered wrongly %d",
		junkClosed.Load(), guesses.Load(), guessesCut.Load(), hangQueued.Load(), bdatWrong.Load())
	if len(lat) < 40 || len(honestFail) > len(lat)/10 {
		t.Errorf("the honest client was not served: %d sent, failures %q", len(lat), honestFail)
	}
	if pct(0.99) > 10*time.Second {
		t.Errorf("honest p99 latency %v during the attack", pct(0.99))
	}
	if peakRSS.Load() > 400<<10 {
		t.Errorf("peak RSS %d MiB: memory not bounded", peakRSS.Load()>>10)
	}
	if peakFDs.Load() > 256 {
		t.Errorf("%d descriptors open", peakFDs.Load())
	}
	if junkClosed.Load() == 0 {
		t.Error("no NOOP session was closed")
	}
	if guesses.Load() > 0 && guessesCut.Load() == 0 {
		t.Error("the SRS guesser was never cut off")
	}
	if bdatWrong.Load() > 0 {
		t.Errorf("%d BDAT messages after an aborted transfer were answered wrongly", bdatWrong.Load())
	}
	// nothing forged reached the next hop
	dumps, _ := ReadSinkDumps(suite.servers["SINK_DIR"])
	for _, d := range dumps {
		if strings.Contains(string(d.Raw), "dmarc=pass "+forged) {
			t.Errorf("a forged Authentication-Results reached the next hop:\n%s", d.Raw)
		}
	}
}

// readReply reads one (possibly multiline) reply and returns its last line.
func readReply(r *bufio.Reader) string {
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return ""
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimSpace(l)
		}
	}
}

// sendFromAddr sends one message from source address src; an error unless
// it was queued.
func sendFromAddr(src, addr, from, to, msg string) error {
	c, err := dialFrom(src, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	if l := readReply(r); !strings.HasPrefix(l, "220") {
		return fmt.Errorf("banner %q", l)
	}
	fmt.Fprintf(c, "EHLO client.test\r\n")
	readReply(r)
	for _, cmd := range []string{"MAIL FROM:<" + from + ">", "RCPT TO:<" + to + ">", "DATA"} {
		fmt.Fprintf(c, "%s\r\n", cmd)
		if l := readReply(r); !strings.HasPrefix(l, "250") && !strings.HasPrefix(l, "354") {
			return fmt.Errorf("%s: %q", cmd, l)
		}
	}
	w := bufio.NewWriter(c)
	for _, l := range strings.SplitAfter(msg, "\n") {
		if strings.HasPrefix(l, ".") {
			w.WriteString(".")
		}
		w.WriteString(l)
	}
	w.WriteString(".\r\n")
	w.Flush()
	if l := readReply(r); !strings.HasPrefix(l, "250") {
		return fmt.Errorf("DATA: %q", l)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	return nil
}

// fdKinds summarises a process's descriptors: sockets by peer port and
// state, files by directory.
func fdKinds(pid int) string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	inodes := map[string]string{} // socket inode -> "tcp to port N st=S"
	for _, f := range []string{"tcp", "tcp6", "udp", "udp6"} {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		for _, l := range strings.Split(string(b), "\n")[1:] {
			if x := strings.Fields(l); len(x) > 9 {
				inodes[x[9]] = f + " to port " + x[2][strings.LastIndex(x[2], ":")+1:] + " st=" + x[3]
			}
		}
	}
	kinds := map[string]int{}
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		if ino, ok := strings.CutPrefix(l, "socket:["); ok {
			kinds["socket "+inodes[strings.TrimSuffix(ino, "]")]]++
			continue
		}
		kinds[filepath.Dir(l)]++
	}
	var out []string
	for k, v := range kinds {
		out = append(out, fmt.Sprintf("%d× %s", v, k))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *mailfwdProc) logTailAll() string {
	b, _ := os.ReadFile(p.log.Name())
	return string(b)
}
