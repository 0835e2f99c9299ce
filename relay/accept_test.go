package relay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"mailfwd/queue"
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
	be, err := NewBackend(Config{Hostname: "relay.test", RelayDomains: []string{"company.com"}},
		&routing.Expander{Source: seedSource(t)}, spool, func(*queue.Envelope) {}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l := listenTB(t)
	srv := be.NewServer()
	go srv.Serve(Listen(l, lim))
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}
