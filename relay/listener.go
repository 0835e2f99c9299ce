package relay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// ListenLimits bound what clients can take before they send anything.
type ListenLimits struct {
	MaxConns      int // in total (0: no limit)
	MaxConnsPerIP int
	// RatePerIP is new connections per minute per client address.
	RatePerIP int
	// IPv6Prefix: the bits of an IPv6 address that name one client for
	// these limits (default 84, as Postfix).
	IPv6Prefix int
	// ProxyFrom are the load balancers allowed to send a PROXY protocol
	// (v1 or v2) header; the header is required from them and refused from
	// anyone else. Empty: PROXY protocol off.
	ProxyFrom []netip.Prefix
	Hostname  string
	// OnAcceptError hears each temporary accept error (out of file
	// descriptors, say) and the wait before the next try.
	OnAcceptError func(err error, retry time.Duration)
}

// Listen wraps l with the PROXY protocol (when configured) and the
// connection limits. Refused connections get a 421 and are closed before
// any session starts, so they cost no goroutine beyond the accept loop.
// Only connections from the load balancers are read for a PROXY header
// (required from them): anyone else gets the banner at once.
func Listen(l net.Listener, lim ListenLimits) net.Listener {
	return &limitListener{Listener: l, lim: lim, perIP: map[string]int{}, rates: newWindowCounter(time.Minute, maxClients),
		ready: make(chan acceptResult)}
}

// proxyHeaderTimeout bounds a load balancer's PROXY header.
const proxyHeaderTimeout = 10 * time.Second

type acceptResult struct {
	c   net.Conn
	err error
}

func inPrefixes(a net.Addr, ps []netip.Prefix) bool {
	ip := addrIP(a)
	for _, p := range ps {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func addrIP(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

type limitListener struct {
	net.Listener
	lim ListenLimits

	mu    sync.Mutex
	total int
	perIP map[string]int  // open connections per client key (bounded by MaxConns)
	rates *windowCounter // new connections per client key, per minute

	// Connections are admitted in their own goroutine: learning the client
	// address may mean reading a PROXY header, and one silent client must
	// not hold up everyone else's accept.
	once  sync.Once
	ready chan acceptResult
}


func (l *limitListener) Accept() (net.Conn, error) {
	l.once.Do(func() { go l.acceptLoop() })
	r, ok := <-l.ready
	if !ok {
		return nil, net.ErrClosed
	}
	return r.c, r.err
}

// acceptLoop hands accepted connections on. A temporary error (no file
// descriptors left, EMFILE/ENFILE; no buffers; a connection aborted before
// accept) is retried with backoff, as net/http does: one flood must not
// close the listener for good. Any other error ends the loop and reaches
// Serve, whose caller treats it as a failure.
func (l *limitListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if temporaryAccept(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				if l.lim.OnAcceptError != nil {
					l.lim.OnAcceptError(err, delay)
				}
				time.Sleep(delay)
				continue
			}
			l.ready <- acceptResult{err: err}
			close(l.ready)
			return
		}
		delay = 0
		go l.admitConn(c)
	}
}

// temporaryAccept reports whether an accept error passes by itself.
func temporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *limitListener) admitConn(c net.Conn) {
	if len(l.lim.ProxyFrom) > 0 && inPrefixes(c.RemoteAddr(), l.lim.ProxyFrom) {
		c = proxyproto.NewConn(c, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(proxyHeaderTimeout))
	}
	ip := addrIP(c.RemoteAddr()) // a balancer's: reads its PROXY header (bounded by its timeout)
	if !ip.IsValid() {
		c.Close() // a PROXY header refused or not sent in time
		return
	}
	key := clientKey(ip, l.lim.IPv6Prefix)
	if why := l.admit(key); why != "" {
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "421 4.7.0 %s %s, try again later\r\n", l.lim.Hostname, why)
		c.Close()
		return
	}
	tc := &trackedConn{Conn: c, release: func() { l.leave(key) }}
	if _, isProxy := c.(*proxyproto.Conn); len(l.lim.ProxyFrom) > 0 && !isProxy {
		tc.refuseProxy = true // not a balancer: a PROXY header from it ends the connection
	}
	defer func() {
		if recover() != nil { // listener closed meanwhile
			tc.Close()
		}
	}()
	l.ready <- acceptResult{c: tc}
}

// admit counts a new connection of client key in, or says why it may not
// come in. Constant time: the rate table expires in generations.
func (l *limitListener) admit(key string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.MaxConns > 0 && l.total >= l.lim.MaxConns {
		return "too many connections"
	}
	if l.lim.MaxConnsPerIP > 0 && l.perIP[key] >= l.lim.MaxConnsPerIP {
		return "too many connections from your address"
	}
	if l.lim.RatePerIP > 0 {
		if l.rates.count(key) >= l.lim.RatePerIP {
			return "connection rate limit exceeded for your address"
		}
		l.rates.add(key)
	}
	l.total++
	l.perIP[key]++
	return ""
}

func (l *limitListener) leave(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[key]--; l.perIP[key] <= 0 {
		delete(l.perIP, key)
	}
}

// trackedConn gives its slot back on close, and can be told to close once
// the next reply is written (go-smtp keeps a session open after a 421 from
// our handlers; we do not).
type trackedConn struct {
	net.Conn
	once       sync.Once
	release    func()
	closeAfter atomic.Bool
	// ended: the client's side of the stream ended (EOF or a read error).
	// go-smtp passes a BDAT chunk cut short by EOF on as if it were whole;
	// a message must never be committed from such a stream.
	ended atomic.Bool
	// refuseProxy: the first bytes may not be a PROXY header (v1 or v2).
	refuseProxy, readSome bool
}

// errProxyRefused ends a connection whose client sent a PROXY header
// without being a load balancer of ours.
var errProxyRefused = errors.New("PROXY header from a client that is not a configured load balancer")

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.refuseProxy && !c.readSome && n > 0 {
		c.readSome = true
		if bytes.HasPrefix(b[:n], []byte("PROXY ")) || bytes.HasPrefix(b[:n], []byte("\r\n\r\n\x00\r\nQUIT\n")) {
			c.ended.Store(true)
			c.Close()
			return 0, errProxyRefused
		}
	}
	if err != nil {
		var ne net.Error
		if !(errors.As(err, &ne) && ne.Timeout()) {
			c.ended.Store(true)
		}
	}
	return n, err
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.closeAfter.Load() {
		c.Close()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
