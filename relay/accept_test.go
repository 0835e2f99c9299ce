package relay

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/routing"
)

// flakyListener fails its first n accepts with err.
type flakyListener struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.n > 0 {
		l.n--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

// Out of file descriptors is temporary: the listener waits and accepts
// again (before, one EMFILE closed it for good and serve exited 0).
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED,
		&net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}} {
		t.Run(fmt.Sprint(e), func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var retries int
			var mu sync.Mutex
			l := Listen(&flakyListener{Listener: inner, n: 3, err: e}, ListenLimits{Hostname: "relay.test",
				OnAcceptError: func(error, time.Duration) { mu.Lock(); retries++; mu.Unlock() }})
			defer l.Close()
			go func() {
				if c, err := net.Dial("tcp", inner.Addr().String()); err == nil {
					defer c.Close()
					time.Sleep(2 * time.Second)
				}
			}()
			done := make(chan error, 1)
			go func() {
				c, err := l.Accept()
				if err == nil {
					c.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Accept after %v: %v", e, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no connection accepted after the temporary errors")
			}
			mu.Lock()
			defer mu.Unlock()
			if retries != 3 {
				t.Errorf("%d retries reported, want 3", retries)
			}
		})
	}
	// A closed listener is permanent: Accept returns the error.
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	l := Listen(inner, ListenLimits{})
	inner.Close()
	if _, err := l.Accept(); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("closed listener: %v", err)
	}
}

// With PROXY protocol on for the load balancers, a client that is not one
// gets its banner at once (before, it waited 10 s for a header it would
// never send, uncounted by any limit).
func TestProxyProtocolOthersNotDelayed(t *testing.T) {
	r := quietRelayListen(t, ListenLimits{Hostname: "relay.test", ProxyFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	t0 := time.Now()
	c, err := net.Dial("tcp", r)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	b := make([]byte, 3)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "220" {
		t.Fatalf("banner: %q %v", b, err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("a client that is not a balancer waited %v for the banner", d)
	}
}

// quietRelayListen serves a relay on a listener wrapped with lim.
func quietRelayListen(t *testing.T, lim ListenLimits) string {
	t.Helper()
	spool, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	be, err := NewBackend(limited(Config{Hostname: "relay.test", RelayDomains: []string{"company.com"}}),
		&routing.Expander{Source: seedSource(t), Limits: routing.PostfixLimits}, spool, func(*envelope.Envelope) {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l := listenTB(t)
	srv := be.NewServer()
	go srv.Serve(Listen(l, lim))
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// When every slot is taken, the connection idle longest outside a
// transaction makes room for a newcomer; one moving mail keeps its slot.
func TestFullListenerEvictsIdle(t *testing.T) {
	addr := quietRelayListen(t, ListenLimits{Hostname: "relay.test", MaxConns: 2})
	banner := func(c net.Conn) string {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, _ := bufio.NewReader(c).ReadString('\n')
		return l
	}
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	br := bufio.NewReader(busy)
	busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	br.ReadString('\n')
	io.WriteString(busy, "HELO a.test\r\nMAIL FROM:<a@example.org>\r\n")
	br.ReadString('\n')
	br.ReadString('\n') // in a transaction now
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if l := banner(idle); !strings.HasPrefix(l, "220") {
		t.Fatalf("second connection: %q", l)
	}
	time.Sleep(1200 * time.Millisecond)
	fresh, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if l := banner(fresh); !strings.HasPrefix(l, "220") {
		t.Fatalf("the newcomer was refused (%q): an idle connection should have made room", l)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, _ := bufio.NewReader(idle).ReadString('\n'); !strings.HasPrefix(l, "421 4.7.0") {
		t.Errorf("the idle connection got %q, want 421", l)
	}
	io.WriteString(busy, "RCPT TO:<sales@company.com>\r\n")
	busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "250") {
		t.Errorf("the connection in a transaction lost its slot: %q", l)
	}
}

// A client that has had mail queued here displaces an idle stranger at
// once, even one that has just connected: a flood from many addresses,
// reconnecting faster than strangers may be displaced, cannot lock it out.
func TestFullListenerKnownSenderDisplacesStranger(t *testing.T) {
	addr := quietRelayListen(t, ListenLimits{Hostname: "relay.test", MaxConns: 1})
	dial := func(src string) (net.Conn, *bufio.Reader, string) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(c)
		l, _ := r.ReadString('\n')
		return c, r, l
	}
	send := func(src string) string {
		c, r, l := dial(src)
		defer c.Close()
		if !strings.HasPrefix(l, "220") {
			return l
		}
		io.WriteString(c, "HELO a.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<sales@company.com>\r\nDATA\r\n")
		for range 4 {
			r.ReadString('\n')
		}
		io.WriteString(c, "Subject: x\r\n\r\nx\r\n.\r\n")
		l, _ = r.ReadString('\n')
		return l
	}
	if l := send("127.0.0.4"); !strings.HasPrefix(l, "250 2.0.0 Ok: queued as") {
		t.Fatalf("first message: %q", l)
	}
	time.Sleep(100 * time.Millisecond) // its slot is free again
	stranger, sr, l := dial("127.0.0.2")
	if !strings.HasPrefix(l, "220") {
		t.Fatalf("stranger: %q", l)
	}
	if _, _, l := dial("127.0.0.3"); !strings.HasPrefix(l, "421 4.7.0") {
		t.Fatalf("a stranger displaced a connection idle for less than a second: %q", l)
	}
	if l := send("127.0.0.4"); !strings.HasPrefix(l, "250 2.0.0 Ok: queued as") {
		t.Errorf("the known sender was refused: %q", l)
	}
	stranger.SetReadDeadline(time.Now().Add(5 * time.Second))
	if l, _ := sr.ReadString('\n'); !strings.HasPrefix(l, "421 4.7.0") {
		t.Errorf("the displaced stranger got %q, want 421", l)
	}
}

// A connection closing by itself while a newcomer displaces it: neither
// waits for the other (the displacement once took the slot with a
// sync.Once under the listener's lock, while the closing connection, in
// that Once, waited for the lock: every later client hung unanswered).
func TestFullListenerDisplaceWhileClosing(t *testing.T) {
	addr := quietRelayListen(t, ListenLimits{Hostname: "relay.test", MaxConns: 1})
	closing := make(chan struct{}, 1)
	testHookRelease = func() {
		select {
		case closing <- struct{}{}:
		default:
		}
		time.Sleep(300 * time.Millisecond) // the newcomer arrives meanwhile
	}
	defer func() { testHookRelease = nil }()
	dial := func() (string, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		return bufio.NewReader(c).ReadString('\n')
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	bufio.NewReader(idle).ReadString('\n')
	time.Sleep(1100 * time.Millisecond) // idle long enough to be displaced
	idle.Close()
	<-closing // its session is giving the slot back, slowly
	if l, err := dial(); err != nil {
		t.Fatalf("the newcomer got no answer (%v): the listener is stuck", err)
	} else if !strings.HasPrefix(l, "220") && !strings.HasPrefix(l, "421") {
		t.Fatalf("the newcomer got %q", l)
	}
	time.Sleep(400 * time.Millisecond)
	if l, err := dial(); err != nil || !strings.HasPrefix(l, "220") {
		t.Fatalf("after the slot was given back: %q, %v", l, err)
	}
}
