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
		senders: newWindowCounter(senderMemory, maxClients), live: map[*trackedConn]struct{}{}, ready: make(chan acceptResult)}
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
	perIP map[string]int // open connections per client key (bounded by MaxConns)
	rates *windowCounter // new connections per client key, per minute
	// senders: clients that had a message queued in the last day; when
	// every slot is taken they may displace an idle stranger at once.
	senders *windowCounter
	live    map[*trackedConn]struct{}

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
	why, victim := l.admit(key)
	if victim != nil { // its slot is ours now
		victim.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(victim.Conn, "421 4.7.0 %s too many connections, closing an idle one\r\n", l.lim.Hostname)
		victim.ended.Store(true)
		victim.Close()
	}
	if why != "" {
		c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "421 4.7.0 %s %s, try again later\r\n", l.lim.Hostname, why)
		c.Close()
		return
	}
	tc := &trackedConn{Conn: c, key: key}
	tc.slotHeld.Store(true)
	tc.idleSince.Store(time.Now().UnixNano())
	tc.known.Store(l.senders.count(key) > 0)
	tc.delivered = func() {
		tc.known.Store(true)
		l.senders.add(key)
	}
	tc.release = func() {
		l.mu.Lock()
		delete(l.live, tc)
		l.mu.Unlock()
		l.leave(key)
	}
	l.mu.Lock()
	l.live[tc] = struct{}{}
	l.mu.Unlock()
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

// errFull is admit's answer when every connection slot is taken.
const errFull = "too many connections"

// senderMemory is how long a client that had mail queued is known.
const senderMemory = 24 * time.Hour

// strangerIdle is how long a connection must idle before a stranger may
// take its slot; a known sender may displace an idle stranger at once.
const strangerIdle = time.Second

// idleVictim picks, when every slot is taken, a connection whose slot the
// newcomer (known: it had mail queued here lately) may take: one outside a
// transaction (no MAIL yet, or its message done), idle the longest, and
// for at least strangerIdle unless the newcomer is known and it is not. A
// flood of idle connections from many addresses would otherwise hold every
// slot and lock honest clients out (postscreen's answer is the same: a
// client that passed before is let in), while one that moves mail keeps
// its slot. Called with l.mu held; the victim's slot is taken from it at
// once (its later release is a no-op), so that no concurrent newcomer can
// take it first. The slot changes hands through slotHeld, not a lock or a
// sync.Once: a connection closing by itself meanwhile may be waiting for
// l.mu in its release (with a Once, that was a deadlock).
func (l *limitListener) idleVictim(known bool) *trackedConn {
	var oldest *trackedConn
	var since int64
	now := time.Now()
	for c := range l.live {
		if c.inTxn.Load() {
			continue
		}
		s := c.idleSince.Load()
		if (!known || c.known.Load()) && now.Sub(time.Unix(0, s)) < strangerIdle {
			continue // nobody idle long enough: a real rush, not a flood
		}
		if oldest == nil || s < since {
			oldest, since = c, s
		}
	}
	if oldest == nil || !oldest.slotHeld.CompareAndSwap(true, false) {
		// none, or it is closing right now: its release, waiting for
		// l.mu, gives its slot back
		return nil
	}
	delete(l.live, oldest) // its release will not run
	l.total--
	if l.perIP[oldest.key]--; l.perIP[oldest.key] <= 0 {
		delete(l.perIP, oldest.key)
	}
	return oldest
}

// admit counts a new connection of client key in, or says why it may not
// come in; when the slots are full it may take one from an idle
// connection, which it returns for the caller to close. Constant time but
// for that (the rate table expires in generations).
func (l *limitListener) admit(key string) (string, *trackedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var victim *trackedConn
	if l.lim.MaxConns > 0 && l.total >= l.lim.MaxConns {
		if l.lim.MaxConnsPerIP > 0 && l.perIP[key] >= l.lim.MaxConnsPerIP {
			return "too many connections from your address", nil
		}
		if victim = l.idleVictim(l.senders.count(key) > 0); victim == nil {
			return errFull, nil
		}
	}
	if l.lim.MaxConnsPerIP > 0 && l.perIP[key] >= l.lim.MaxConnsPerIP {
		return "too many connections from your address", victim
	}
	if l.lim.RatePerIP > 0 {
		if l.rates.count(key) >= l.lim.RatePerIP {
			return "connection rate limit exceeded for your address", victim
		}
		l.rates.add(key)
	}
	l.total++
	l.perIP[key]++
	return "", victim
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
	// slotHeld: its connection slot is still counted; whoever clears it
	// (Close, or a newcomer displacing it) gives the slot back, once.
	slotHeld   atomic.Bool
	release    func()
	closeAfter atomic.Bool
	// ended: the client's side of the stream ended (EOF or a read error).
	// go-smtp passes a BDAT chunk cut short by EOF on as if it were whole;
	// a message must never be committed from such a stream.
	ended atomic.Bool
	// refuseProxy: the first bytes may not be a PROXY header (v1 or v2).
	refuseProxy, readSome bool
	// inTxn: the session has a transaction open (MAIL given, message not
	// done); idleSince: when it last ended one, or connected. When every
	// slot is taken the one idle longest outside a transaction makes room.
	inTxn     atomic.Bool
	idleSince atomic.Int64
	key       string // its client key in the limits
	// known: the client had mail queued lately (this connection or an
	// earlier one); delivered records that it did.
	known     atomic.Bool
	delivered func()
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

// testHookRelease, if set, runs as a closing connection is about to give
// its slot back (tests: widen the window of a concurrent displacement).
var testHookRelease func()

func (c *trackedConn) Close() error {
	if c.slotHeld.CompareAndSwap(true, false) {
		if testHookRelease != nil {
			testHookRelease()
		}
		c.release()
	}
	return c.Conn.Close()
}
