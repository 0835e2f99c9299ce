package relay

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/routing"
)

// front is a relay front end on a real socket, with the listener wrapping
// of production, and its spool (no delivery: we look at what was queued).
type front struct {
	addr  string
	be    *Backend
	spool *queue.Spool
}

func startFront(t *testing.T, cfg Config, lim ListenLimits) *front {
	t.Helper()
	spool, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { spool.Close() })
	if cfg.Hostname == "" {
		cfg.Hostname = "relay.test"
	}
	if cfg.RelayDomains == nil {
		cfg.RelayDomains = []string{"domain.com", "domain.ro", "company.com"}
	}
	be, err := NewBackend(limited(cfg), &routing.Expander{Source: seedSource(t), Limits: routing.PostfixLimits}, spool, func(*envelope.Envelope) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := be.NewServer()
	go srv.Serve(Listen(l, lim))
	t.Cleanup(func() { srv.Close() })
	return &front{addr: l.Addr().String(), be: be, spool: spool}
}

// dialog is a raw client: it writes lines and reads replies.
type dialog struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *dialog {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &dialog{t: t, c: c, r: bufio.NewReader(c)}
}

// reply reads one (possibly multi-line) reply and returns its last line.
func (d *dialog) reply() string {
	d.t.Helper()
	for {
		l, err := d.r.ReadString('\n')
		if err != nil {
			return "EOF: " + err.Error()
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

func (d *dialog) cmd(line string) string {
	d.t.Helper()
	fmt.Fprintf(d.c, "%s\r\n", line)
	return d.reply()
}

func expectPrefix(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.HasPrefix(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func TestConnectionLimits(t *testing.T) {
	f := startFront(t, Config{}, ListenLimits{MaxConnsPerIP: 2, Hostname: "relay.test"})
	a, b := dial(t, f.addr), dial(t, f.addr)
	expectPrefix(t, "1st banner", a.reply(), "220 ")
	expectPrefix(t, "2nd banner", b.reply(), "220 ")
	c := dial(t, f.addr)
	expectPrefix(t, "3rd connection from the same address", c.reply(), "421 4.7.0 relay.test too many connections from your address")
	a.cmd("QUIT")
	time.Sleep(50 * time.Millisecond)
	expectPrefix(t, "after one left", dial(t, f.addr).reply(), "220 ")

	g := startFront(t, Config{}, ListenLimits{RatePerIP: 3})
	for i := range 3 {
		d := dial(t, g.addr)
		expectPrefix(t, fmt.Sprintf("connection %d", i+1), d.reply(), "220 ")
		d.cmd("QUIT")
	}
	expectPrefix(t, "4th in a minute", dial(t, g.addr).reply(), "421 4.7.0")
}

func proxyHeader(t *testing.T, version byte, src string) []byte {
	t.Helper()
	h := &proxyproto.Header{Version: version, Command: proxyproto.PROXY, TransportProtocol: proxyproto.TCPv4,
		SourceAddr: &net.TCPAddr{IP: net.ParseIP(src), Port: 40000}, DestinationAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 25}}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The PROXY header is honoured only from the configured balancers, and the
// client address it gives is the one we record (and limit).
func TestProxyProtocol(t *testing.T) {
	trusted := startFront(t, Config{}, ListenLimits{ProxyFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	for _, v := range []byte{1, 2} {
		d := dial(t, trusted.addr)
		d.c.Write(proxyHeader(t, v, "192.0.2.10"))
		expectPrefix(t, "banner", d.reply(), "220 ")
		d.cmd("EHLO client.test")
		d.cmd("MAIL FROM:<a@example.org>")
		expectPrefix(t, "rcpt", d.cmd("RCPT TO:<sales@company.com>"), "250")
		expectPrefix(t, "data", d.cmd("DATA"), "354")
		expectPrefix(t, "end", d.cmd(fmt.Sprintf("Subject: v%d\r\n\r\nhi\r\n.", v)), "250 2.0.0 Ok: queued as ")
	}
	envs, _ := trusted.spool.List()
	if len(envs) != 2 {
		t.Fatalf("%d messages queued, want 2", len(envs))
	}
	for _, e := range envs {
		if e.ClientAddr != "192.0.2.10" {
			t.Errorf("client recorded as %q, want the PROXY source 192.0.2.10", e.ClientAddr)
		}
	}
	// From a host not listed, a PROXY header is refused: no session.
	untrusted := startFront(t, Config{}, ListenLimits{ProxyFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	d := dial(t, untrusted.addr)
	d.c.Write(proxyHeader(t, 1, "192.0.2.10"))
	if got := d.reply(); strings.HasPrefix(got, "220") {
		// A banner may have been sent before the header was read; what
		// matters is that the forged address is never used.
		d.cmd("EHLO x")
		d.cmd("MAIL FROM:<a@example.org>")
		if r := d.cmd("RCPT TO:<sales@company.com>"); strings.HasPrefix(r, "250") {
			t.Fatalf("session from an untrusted PROXY sender went on: %s", r)
		}
	}
}

// Too many refused commands end the session with 421 and a closed socket.
func TestErrorLimitDisconnects(t *testing.T) {
	f := startFront(t, Config{MaxErrors: 3}, ListenLimits{})
	d := dial(t, f.addr)
	d.reply()
	d.cmd("EHLO probe.test")
	d.cmd("MAIL FROM:<a@example.org>")
	expectPrefix(t, "1st", d.cmd("RCPT TO:<nobody1@company.com>"), "550 5.1.1")
	expectPrefix(t, "2nd", d.cmd("RCPT TO:<nobody2@company.com>"), "550 5.1.1")
	expectPrefix(t, "3rd", d.cmd("RCPT TO:<nobody3@company.com>"), "421 4.7.0")
	if got := d.cmd("RCPT TO:<sales@company.com>"); !strings.HasPrefix(got, "EOF") {
		t.Fatalf("connection still open after 421: %q", got)
	}
}

// A message with more Received headers than the limit is a loop: refused,
// and nothing is queued.
func TestHopLimit(t *testing.T) {
	f := startFront(t, Config{MaxReceived: 5}, ListenLimits{})
	send := func(received int) string {
		d := dial(t, f.addr)
		d.reply()
		d.cmd("EHLO a.test")
		d.cmd("MAIL FROM:<a@example.org>")
		d.cmd("RCPT TO:<sales@company.com>")
		d.cmd("DATA")
		var b strings.Builder
		for i := range received {
			fmt.Fprintf(&b, "Received: from hop%d.test by hop%d.test; Tue, 24 Nov 2026 10:00:00 +0000\r\n", i, i+1)
		}
		b.WriteString("Subject: loop\r\n\r\nReceived: in the body does not count\r\n.")
		return d.cmd(b.String())
	}
	expectPrefix(t, "5 hops", send(5), "250")
	expectPrefix(t, "6 hops", send(6), "554 5.4.6")
	if envs, _ := f.spool.List(); len(envs) != 1 {
		t.Fatalf("%d messages queued, want only the one within the limit", len(envs))
	}
}

// A client that trickles its message is cut off after the DATA timeout.
func TestDataTimeout(t *testing.T) {
	f := startFront(t, Config{DataTimeout: 300 * time.Millisecond}, ListenLimits{})
	d := dial(t, f.addr)
	d.reply()
	d.cmd("EHLO slow.test")
	d.cmd("MAIL FROM:<a@example.org>")
	d.cmd("RCPT TO:<sales@company.com>")
	expectPrefix(t, "data", d.cmd("DATA"), "354")
	start := time.Now()
	go func() {
		for range 10 {
			if _, err := d.c.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	got := d.reply()
	expectPrefix(t, "trickled DATA", got, "421 4.4.2")
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("cut off after %v", el)
	}
	if envs, _ := f.spool.List(); len(envs) != 0 {
		t.Fatal("a timed-out message was queued")
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		DNSNames: []string{"relay.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// STARTTLS is offered with a certificate; the Received header records the
// protocol version and cipher.
func TestSTARTTLS(t *testing.T) {
	cert := selfSigned(t)
	f := startFront(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}, ListenLimits{})
	d := dial(t, f.addr)
	d.reply()
	fmt.Fprintf(d.c, "EHLO tls.test\r\n")
	var ext []string
	for {
		l, _ := d.r.ReadString('\n')
		ext = append(ext, strings.TrimSpace(l[4:]))
		if l[3] != '-' {
			break
		}
	}
	if !strings.Contains(strings.Join(ext, " "), "STARTTLS") {
		t.Fatalf("EHLO without STARTTLS: %v", ext)
	}
	expectPrefix(t, "starttls", d.cmd("STARTTLS"), "220")
	tc := tls.Client(d.c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	d.c, d.r = tc, bufio.NewReader(tc)
	d.cmd("EHLO tls.test")
	d.cmd("MAIL FROM:<a@example.org>")
	d.cmd("RCPT TO:<sales@company.com>")
	d.cmd("DATA")
	reply := d.cmd("Subject: tls\r\n\r\nhi\r\n.")
	expectPrefix(t, "data over TLS", reply, "250 2.0.0 Ok: queued as ")
	id := strings.TrimPrefix(reply, "250 2.0.0 Ok: queued as ")
	env, err := f.spool.Load(id)
	if err != nil {
		t.Fatalf("message %s not in spool after 250: %v", id, err)
	}
	body, _ := f.spool.OpenBody(env)
	buf := make([]byte, 512)
	n, _ := body.Read(buf)
	body.Close()
	if !strings.Contains(string(buf[:n]), "with ESMTPS (TLS 1.3 with cipher TLS_") {
		t.Fatalf("Received header without TLS details:\n%s", buf[:n])
	}
}

// Reload changes the policy for new sessions; a session already open keeps
// the one it started with.
func TestReload(t *testing.T) {
	f := startFront(t, Config{}, ListenLimits{})
	old := dial(t, f.addr)
	old.reply()
	old.cmd("EHLO a.test")
	old.cmd("MAIL FROM:<a@example.org>")
	if err := f.be.Reload(limited(Config{Hostname: "relay.test", RelayDomains: []string{"domain.ro"}}), &routing.Expander{Source: seedSource(t), Limits: routing.PostfixLimits}); err != nil {
		t.Fatal(err)
	}
	expectPrefix(t, "old session, old policy", old.cmd("RCPT TO:<sales@company.com>"), "250")
	d := dial(t, f.addr)
	d.reply()
	d.cmd("EHLO a.test")
	d.cmd("MAIL FROM:<a@example.org>")
	expectPrefix(t, "new session, company.com dropped", d.cmd("RCPT TO:<sales@company.com>"), "554 5.7.1")
	expectPrefix(t, "new session, domain.ro kept", d.cmd("RCPT TO:<new.address@domain.ro>"), "250")
	if err := f.be.Reload(limited(Config{RelayDomains: []string{"bad..domain"}}), nil); err == nil {
		t.Fatal("a bad config was accepted by Reload")
	}
}

// queuedRcpts sends one message and returns the recipients queued for it.
func (f *front) queuedRcpts(t *testing.T, rcpts ...string) []string {
	t.Helper()
	d := dial(t, f.addr)
	d.reply()
	d.cmd("EHLO shim.test")
	d.cmd("MAIL FROM:<a@example.org>")
	for _, r := range rcpts {
		expectPrefix(t, "RCPT "+r, d.cmd("RCPT TO:<"+r+">"), "250")
	}
	d.cmd("DATA")
	reply := d.cmd("Subject: shim\r\n\r\nhi\r\n.")
	expectPrefix(t, "DATA", reply, "250 2.0.0 Ok: queued as ")
	env, err := f.spool.Load(strings.TrimPrefix(reply, "250 2.0.0 Ok: queued as "))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range env.Recipients {
		out = append(out, r.Addr)
	}
	return out
}

// The migration shim: known addresses are rewritten, unknown ones in our
// domains pass through unchanged to the old MTA; other domains stay refused.
func TestPassUnknown(t *testing.T) {
	f := startFront(t, Config{PassUnknown: true}, ListenLimits{})
	got := f.queuedRcpts(t, "old.address@domain.com", "someone.else@domain.com")
	if strings.Join(got, " ") != "new.address@domain.ro someone.else@domain.com" {
		t.Fatalf("queued %v", got)
	}
	d := dial(t, f.addr)
	d.reply()
	d.cmd("EHLO shim.test")
	d.cmd("MAIL FROM:<a@example.org>")
	expectPrefix(t, "foreign domain", d.cmd("RCPT TO:<x@example.net>"), "554 5.7.1")
}

// Dry run: routing is evaluated and logged, but recipients are queued as
// the client gave them.
func TestDryRun(t *testing.T) {
	f := startFront(t, Config{DryRun: true}, ListenLimits{})
	got := f.queuedRcpts(t, "old.address@domain.com", "sales@company.com", "nobody@company.com")
	if strings.Join(got, " ") != "old.address@domain.com sales@company.com nobody@company.com" {
		t.Fatalf("queued %v", got)
	}
}

// A BDAT chunk cut short by the client's EOF is never committed (go-smtp
// passes the short chunk on as if it were whole).
func TestBDATTruncatedByEOF(t *testing.T) {
	f := startFront(t, Config{}, ListenLimits{})
	d := dial(t, f.addr)
	d.reply()
	d.cmd("EHLO chunk.test")
	d.cmd("MAIL FROM:<a@example.org>")
	d.cmd("RCPT TO:<sales@company.com>")
	fmt.Fprintf(d.c, "BDAT 1000 LAST\r\nSubject: short\r\n\r\nonly part of it")
	d.c.(*net.TCPConn).CloseWrite()
	d.reply()
	time.Sleep(100 * time.Millisecond)
	if envs, _ := f.spool.List(); len(envs) != 0 {
		t.Fatalf("a truncated BDAT message was queued: %+v", envs[0])
	}
}

// A client that connects through the PROXY-protocol listener and sends
// nothing does not hold up other clients' connections.
func TestProxySilentClientDoesNotBlockAccept(t *testing.T) {
	f := startFront(t, Config{}, ListenLimits{ProxyFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
	silent, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	d := dial(t, f.addr)
	d.c.Write(proxyHeader(t, 2, "192.0.2.20"))
	expectPrefix(t, "banner behind a silent client", d.reply(), "220 ")
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("second client waited %v", el)
	}
}
