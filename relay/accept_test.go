package relay

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
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
