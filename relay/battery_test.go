package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"golang.org/x/net/idna"

	"mailfwd/deploy"
	"mailfwd/queue"
	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
	"mailfwd/routing"
	"mailfwd/routing/directory"
	"mailfwd/routing/srs"
)

// ---------------------------------------------------------------------------
// Test harness shared by the battery, the raw-dialog suite and the fuzzer:
// an in-process relay (like startRelayWith) whose config, expander, spool and
// TLS can be chosen, which records every envelope it queues and the raw bytes
// it sends to its next hop; and a raw client that writes exact bytes.

var relayDomains = []string{"domain.com", "domain.ro", "company.com"}

type relayOpts struct {
	src        routing.Source // default: the seed directory
	exp        Expander       // default: &routing.Expander{Source: src, Limits: routing.PostfixLimits}
	srs        *srs.Rewriter
	cfg        func(*Config)
	spool      Committer // default: the real spool
	tls        *tls.Config
	noDelivery bool // queue only: no scheduler, messages stay in the spool
	quiet      bool // discard the relay's log
}

type testRelay struct {
	addr       string
	spool      *queue.Spool
	local, ext *sinkMTA
	wire       *wireLog // what the relay sent to its local next hop

	mu   sync.Mutex
	envs []queuedEnv
}

// queuedEnv is an envelope as submitted, copied at submission.
type queuedEnv struct {
	id     string
	from   string
	rcpts  []string // final recipients
	origTo []string
}

func (r *testRelay) queued() []queuedEnv {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]queuedEnv(nil), r.envs...)
}

func startTestRelay(t testing.TB, o relayOpts) *testRelay {
	t.Helper()
	var log *slog.Logger
	if o.quiet {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.src == nil {
		s, err := directory.NewLDIFBytes(deploy.SeedLDIF, directory.MailRecipientSchema)
		if err != nil {
			t.Fatal(err)
		}
		o.src = s
	}
	if o.exp == nil {
		o.exp = &routing.Expander{Source: o.src, Limits: routing.PostfixLimits}
	}
	r := &testRelay{local: &sinkMTA{}, ext: &sinkMTA{}, wire: &wireLog{}}
	spool, err := queue.OpenSpool(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	r.spool = spool
	var committer Committer = spool
	if o.spool != nil {
		committer = o.spool
	}
	var sched *queue.Scheduler
	var cleanups []func()
	if !o.noDelivery {
		sl := listenTB(t)
		sinkSrv := smtp.NewServer(r.local)
		sinkSrv.Domain = "sink.test"
		sinkSrv.MaxLineLength = 0     // take what the relay passes on (BDAT has no line limit)
		sinkSrv.EnableSMTPUTF8 = true // as Postfix: non-ASCII tricks are accepted with SMTPUTF8
		sinkSrv.ErrorLog = slogLogger{slog.New(slog.NewTextHandler(io.Discard, nil))}
		go sinkSrv.Serve(recListener{sl, r.wire})
		el := listenTB(t)
		extSrv := smtp.NewServer(r.ext)
		extSrv.ErrorLog = sinkSrv.ErrorLog
		extSrv.EnableSMTPUTF8 = true
		go extSrv.Serve(el)
		hop := &nexthop.SMTPHop{Addr: sl.Addr().String(), LocalName: "relay.test", Timeout: 2 * time.Second}
		extHop := &nexthop.SMTPHop{Addr: el.Addr().String(), LocalName: "relay.test", Timeout: 2 * time.Second}
		sched = delivering(&queue.Scheduler{Spool: spool, Hop: hop, ExternalHop: extHop, Workers: 4,
			Retry: queue.Retry{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond}})
		cleanups = append(cleanups, func() { hop.Close(); extHop.Close(); sinkSrv.Close(); extSrv.Close() })
	}
	cfg := Config{Hostname: "relay.test", RelayDomains: relayDomains, LookupTimeout: time.Second, SRS: o.srs, SRSFailureLimit: 3, TLS: o.tls}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	submit := func(env *envelope.Envelope) {
		q := queuedEnv{id: env.ID, from: env.From}
		for _, rc := range env.Recipients {
			q.rcpts = append(q.rcpts, rc.Addr)
			q.origTo = append(q.origTo, rc.OrigTo)
		}
		r.mu.Lock()
		r.envs = append(r.envs, q)
		r.mu.Unlock()
		if sched != nil {
			sched.Submit(env)
		}
	}
	be, err := NewBackend(limited(cfg), o.exp, committer, submit, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	schedDone := make(chan struct{})
	if sched != nil {
		sched.Local = be.Local
		go func() { sched.Run(ctx); close(schedDone) }()
	} else {
		close(schedDone)
	}
	l := listenTB(t)
	srv := be.NewServer()
	go srv.Serve(Listen(l, ListenLimits{Hostname: cfg.Hostname}))
	r.addr = l.Addr().String()
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-schedDone
		for _, f := range cleanups {
			f()
		}
		spool.Close()
	})
	return r
}

func listenTB(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// wireLog keeps, per connection, the bytes a server read from its client.
type wireLog struct {
	mu    sync.Mutex
	conns []*bytes.Buffer
}

func (w *wireLog) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, b := range w.conns {
		out = append(out, b.String())
	}
	return out
}

type recListener struct {
	net.Listener
	w *wireLog
}

func (l recListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	b := &bytes.Buffer{}
	l.w.mu.Lock()
	l.w.conns = append(l.w.conns, b)
	l.w.mu.Unlock()
	return &recConn{Conn: c, w: l.w, b: b}, nil
}

type recConn struct {
	net.Conn
	w *wireLog
	b *bytes.Buffer
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.mu.Lock()
	c.b.Write(p[:n])
	c.w.mu.Unlock()
	return n, err
}

// delivered returns every recipient both sinks received, one entry per
// delivery, in arrival order.
func (r *testRelay) delivered() []string {
	var out []string
	for _, m := range []*sinkMTA{r.local, r.ext} {
		m.mu.Lock()
		for _, msg := range m.msgs {
			out = append(out, msg.rcpts...)
		}
		m.mu.Unlock()
	}
	return out
}

// waitDeliveredExactly waits until the sinks together received exactly
// want (case-insensitive, as a multiset), then checks that nothing else
// arrives shortly after.
func (r *testRelay) waitDeliveredExactly(t testing.TB, want []string) {
	t.Helper()
	// go-smtp (the sink) hands recipients over unquoted.
	norm := func(l []string) []string {
		out := make([]string, len(l))
		for i, a := range l {
			out[i] = strings.ToLower(strings.ReplaceAll(a, `"`, ""))
		}
		slices.Sort(out)
		return out
	}
	w := norm(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := norm(r.delivered())
		if slices.Equal(got, w) {
			break
		}
		if len(got) > len(w) || time.Now().After(deadline) {
			t.Fatalf("sinks received %q, want exactly %q", got, w)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if got := norm(r.delivered()); !slices.Equal(got, w) {
		t.Fatalf("sinks received %q after the expected %q", got, w)
	}
}

// foreignRecipient reports why a final recipient is not one of ours: its
// domain is not a relay domain, or its local part carries a route
// (@ % !) that a next hop could follow. extra lists the recipients a case
// legitimately sends outside (directory forwards, verified SRS bounces).
func foreignRecipient(addr string, extra []string) string {
	for _, e := range extra {
		if strings.EqualFold(addr, e) {
			return ""
		}
	}
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return "no domain"
	}
	local, domain := addr[:i], addr[i+1:]
	if d, err := routing.NormalizeDomain(domain); err == nil {
		domain = d // as the relay itself compares domains
	}
	if !slices.Contains(relayDomains, domain) {
		return "domain " + domain + " is not ours"
	}
	if l := strings.Trim(local, `"`); strings.ContainsAny(l, "@%!") {
		return "local part " + local + " carries a route"
	}
	return ""
}

// rawClient speaks SMTP byte for byte over a real socket.
type rawClient struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc := &rawClient{t: t, c: c, r: bufio.NewReader(c)}
	rc.expect("220 ")
	return rc
}

func (c *rawClient) send(s string) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.c, s); err != nil {
		c.t.Fatalf("write %q: %v", trunc(s), err)
	}
}

// read returns the lines of one (possibly multi-line) reply.
func (c *rawClient) read() ([]string, error) {
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		if !strings.HasSuffix(l, "\r\n") {
			return lines, fmt.Errorf("reply line %q does not end in CRLF", l)
		}
		l = strings.TrimSuffix(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] == ' ' {
			return lines, nil
		}
		if l[3] != '-' {
			return lines, fmt.Errorf("malformed reply line %q", l)
		}
	}
}

// expect reads one reply and checks that its last line starts with prefix
// ("554 5.7.1"); it returns that line.
func (c *rawClient) expect(prefix string) string {
	c.t.Helper()
	lines, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for %q: %v (got %q)", prefix, err, lines)
	}
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, prefix) {
		c.t.Fatalf("reply %q, want %q", last, prefix)
	}
	return last
}

// cmd sends line (CRLF added) and expects a reply starting with prefix.
func (c *rawClient) cmd(line, prefix string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(prefix)
}

// expectClosed checks that the server closed the connection.
func (c *rawClient) expectClosed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.ReadString('\n')
		c.t.Fatalf("connection still open, got %q", string(b)+rest)
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		c.t.Fatalf("waiting for close: %v", err)
	}
}

// queuedID extracts the queue ID from "250 2.0.0 Ok: queued as ID".
func queuedID(t testing.TB, reply string) string {
	t.Helper()
	id, ok := strings.CutPrefix(reply, "250 2.0.0 Ok: queued as ")
	if !ok || id == "" {
		t.Fatalf("DATA reply %q is not a queued reply", reply)
	}
	return id
}

func trunc(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// ---------------------------------------------------------------------------
// The open-relay battery.

// outcome is what one RCPT line must produce: the reply prefix of each
// reply it provokes (one, unless the line smuggles a second command), and,
// when accepted, the final recipients the message goes to (both sinks).
type outcome struct {
	replies []string
	to      []string
}

func refused(code string) *outcome { return &outcome{replies: []string{code}} }
func accepted(to ...string) *outcome {
	return &outcome{replies: []string{"250 2.0.0"}, to: to}
}

type relayTrick struct {
	name string
	from string // MAIL FROM argument; default <alice@example.org>
	rcpt string // the bytes after "RCPT TO:", up to the final CRLF
	seed *outcome
	// dflt is the outcome with the routing defaults of `mailfwd serve`
	// (recipient_delimiter "+", propagated extensions) and a domain
	// rewrite domain.com → domain.ro; nil: same as seed.
	dflt *outcome
	// pass is the outcome with the migration shim (PassUnknown: addresses
	// of relay domains the directory does not know go unchanged to the
	// next hop); nil: same as seed.
	pass *outcome
}

const (
	relayDenied = "554 5.7.1"
	badRcpt     = "501 5.1.3"
	unknownUser = "550 5.1.1"
	badSRS      = "550 5.7.1"
	smtpSyntax  = "501 5.5.2" // go-smtp: "Was expecting RCPT arg syntax of TO:<address>"
	smtpBadArg  = "500 5.5.4" // go-smtp: "Unknown RCPT TO argument"
)

func relayTricks(t testing.TB, rw *srs.Rewriter) []relayTrick {
	fwd := func(s *srs.Rewriter, a string) string {
		v, err := s.Forward(context.Background(), a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	valid := fwd(rw, "alice@example.com") // SRS0=gIVm=KH=example.com=alice@srs.relay.test
	atDay := func(days int) *srs.Rewriter {
		s := testSRS()
		now := s.Now()
		s.Now = func() time.Time { return now.AddDate(0, 0, days) }
		return s
	}
	expired := fwd(atDay(-30), "alice@example.com")
	future := fwd(atDay(+3), "alice@example.com")
	srs1 := fwd(rw, "SRS0=xxxx=AB=other.example=bob@fwd.example")
	// Any client can claim these senders, and a forward through us signs
	// them: whoever sees one forwarded copy holds a valid bounce address.
	routedOurs := fwd(rw, "x%evil.test@company.com")
	routedBang := fwd(rw, "evil.test!x@domain.com")
	routedForeign := fwd(rw, "a%b@example.com")
	unknownOurs := fwd(rw, "nobody@company.com")
	omicron := "c\u03bfmpany.com" // Greek small omicron for the first o
	puny, err := idna.Lookup.ToASCII(omicron)
	if err != nil || !strings.HasPrefix(puny, "xn--") {
		t.Fatalf("punycode of %q: %q %v", omicron, puny, err)
	}
	long65 := strings.Repeat("x", 65)
	long300 := strings.Repeat("x", 300)
	return []relayTrick{
		// Sender-specified routing in the local part (Postfix: allow_untrusted_routing = no).
		{name: "percent hack to foreign", rcpt: "<user%evil.test@company.com>", seed: refused(relayDenied)},
		{name: "percent hack to foreign, rewritten domain", rcpt: "<user%evil.test@domain.com>", seed: refused(relayDenied)},
		{name: "percent hack behind an extension", rcpt: "<sales+x%evil.test@company.com>", seed: refused(relayDenied)},
		{name: "percent hack to own domain", rcpt: "<sales%company.com@company.com>", seed: refused(relayDenied)},
		{name: "percent-encoded @", rcpt: "<user%40evil.test@company.com>", seed: refused(relayDenied)},
		{name: "bang path", rcpt: "<evil.test!user@company.com>", seed: refused(relayDenied)},
		{name: "bang path, rewritten domain", rcpt: "<evil.test!user@domain.com>", seed: refused(relayDenied)},
		{name: "bang path behind an extension", rcpt: "<sales+evil.test!user@company.com>", seed: refused(relayDenied)},
		{name: "double @", rcpt: "<user@evil.test@company.com>", seed: refused(relayDenied)},
		{name: "double @, rewritten domain", rcpt: "<user@evil.test@domain.com>", seed: refused(relayDenied)},
		{name: "double @, foreign last", rcpt: "<sales@company.com@evil.test>", seed: refused(relayDenied)},
		{name: "quoted @", rcpt: `<"user@evil.test"@company.com>`, seed: refused(relayDenied)},
		{name: "quoted @, rewritten domain", rcpt: `<"user@evil.test"@domain.com>`, seed: refused(relayDenied)},
		{name: "quoted @ behind an extension", rcpt: `<"sales+x@evil.test"@company.com>`, seed: refused(relayDenied)},
		{name: "quoted %", rcpt: `<"user%evil.test"@company.com>`, seed: refused(relayDenied)},
		{name: "quoted source route", rcpt: `<"@evil.test:user"@domain.com>`, seed: refused(relayDenied)},
		{name: "quoted backslash-escaped @", rcpt: `<"user\@evil.test"@company.com>`, seed: refused(relayDenied)},
		{name: "backslash-escaped @ unquoted", rcpt: `<user\@evil.test@company.com>`, seed: refused(smtpSyntax)},
		{name: "colon route in domain", rcpt: "<user@company.com:victim@evil.test>", seed: refused(relayDenied)},
		{name: "fullwidth @ in local part", rcpt: "<victim\uff20evil.test@domain.com>", seed: refused(unknownUser),
			dflt: accepted("victim\uff20evil.test@domain.ro"), pass: accepted("victim\uff20evil.test@domain.com")},

		// Source routes: RFC 5321 says to ignore them; what is left decides.
		{name: "source route to foreign", rcpt: "<@company.com:user@evil.test>", seed: refused(relayDenied)},
		{name: "source route, two hops", rcpt: "<@a,@b:user@c>", seed: refused(relayDenied)},
		{name: "source route to own user", rcpt: "<@evil.test:sales@company.com>", seed: accepted("central@company.com")},

		// Domains.
		{name: "trailing dot", rcpt: "<sales@company.com.>", seed: refused(badRcpt)},
		{name: "leading dot", rcpt: "<sales@.company.com>", seed: refused(badRcpt)},
		{name: "empty label", rcpt: "<sales@company..com>", seed: refused(badRcpt)},
		{name: "mixed case", rcpt: "<Sales@COMPANY.COM>", seed: accepted("central@company.com")},
		{name: "relay domain as suffix", rcpt: "<sales@company.com.evil.test>", seed: refused(relayDenied)},
		{name: "relay domain as prefix", rcpt: "<sales@evilcompany.com>", seed: refused(relayDenied)},
		{name: "relay domain subdomain", rcpt: "<user@mx.company.com>", seed: refused(relayDenied)},
		{name: "percent in domain", rcpt: "<victim@evil.test%company.com>", seed: refused(badRcpt)},
		{name: "IPv4 literal", rcpt: "<user@[127.0.0.1]>", seed: refused(badRcpt)},
		{name: "IPv6 literal", rcpt: "<user@[IPv6:::1]>", seed: refused(badRcpt)},
		{name: "IDN look-alike (Greek omicron)", rcpt: "<sales@" + omicron + ">", seed: refused(relayDenied)},
		{name: "IDN look-alike, punycode", rcpt: "<sales@" + puny + ">", seed: refused(relayDenied)},
		// UTS 46 maps the fullwidth spelling to company.com: ours, but
		// the directory is asked with the client's spelling, which it
		// does not hold.
		// IDNA maps full-width letters to company.com: it is ours, looked up
		// and passed on in that normalised form, never as spelled.
		{name: "fullwidth relay domain", rcpt: "<sales@\uff43\uff4f\uff4d\uff50\uff41\uff4e\uff59.\uff43\uff4f\uff4d>", seed: accepted("central@company.com")},

		// postmaster. The bare form is the postmaster of the first relay
		// domain (domain.com) (RFC 5321 4.5.1); the seed has no entry for it.
		{name: "postmaster without domain", rcpt: "<postmaster>", seed: accepted("postmaster@domain.com"),
			dflt: accepted("postmaster@domain.ro")},
		{name: "Postmaster without domain", rcpt: "<Postmaster>", seed: accepted("postmaster@domain.com"),
			dflt: accepted("postmaster@domain.ro")},
		{name: "other local part without domain", rcpt: "<root>", seed: refused(smtpSyntax)},
		{name: "postmaster at relay domain", rcpt: "<postmaster@company.com>", seed: accepted("postmaster@company.com")},
		{name: "postmaster at rewritten domain", rcpt: "<POSTMASTER@domain.com>", seed: accepted("POSTMASTER@domain.com"),
			dflt: accepted("POSTMASTER@domain.ro")},
		{name: "postmaster at the SRS domain", from: "<>", rcpt: "<postmaster@srs.relay.test>", seed: accepted("postmaster@domain.com"),
			dflt: accepted("postmaster@domain.ro")},
		{name: "postmaster foreign", rcpt: "<postmaster@evil.test>", seed: refused(relayDenied)},
		{name: "postmaster at IP literal", rcpt: "<postmaster@[127.0.0.1]>", seed: refused(badRcpt)},

		// SRS: only a valid, unexpired address of our SRS domain passes,
		// to the address it decodes to.
		{name: "SRS valid bounce", from: "<>", rcpt: "<" + valid + ">", seed: accepted("alice@example.com")},
		{name: "SRS lower-case tag, stamp and hash", from: "<>", rcpt: "<" + strings.ToLower(valid) + ">", seed: accepted("alice@example.com")},
		{name: "SRS upper-case", from: "<>", rcpt: "<" + strings.ToUpper(valid) + ">", seed: accepted("ALICE@EXAMPLE.COM")},
		{name: "SRS1 valid", from: "<>", rcpt: "<" + srs1 + ">", seed: accepted("SRS0=xxxx=AB=other.example=bob@fwd.example")},
		{name: "SRS bounce to a routed sender of ours (%)", from: "<>", rcpt: "<" + routedOurs + ">", seed: refused(relayDenied)},
		{name: "SRS bounce to a routed sender of ours (!)", from: "<>", rcpt: "<" + routedBang + ">", seed: refused(relayDenied)},
		// The decoded address goes to the sender's own domain, which reads
		// its local part as it likes: not a route through us.
		{name: "SRS bounce to a routed foreign sender", from: "<>", rcpt: "<" + routedForeign + ">", seed: accepted("a%b@example.com")},
		{name: "SRS bounce to an unknown sender of ours", from: "<>", rcpt: "<" + unknownOurs + ">", seed: accepted("nobody@company.com")},
		{name: "SRS forged hash", from: "<>", rcpt: "<" + strings.Replace(valid, "=gIVm=", "=AAAA=", 1) + ">", seed: refused(badSRS)},
		{name: "SRS hash re-used for another user", from: "<>", rcpt: "<SRS0=gIVm=KH=example.com=bob@srs.relay.test>", seed: refused(badSRS)},
		{name: "SRS short hash", from: "<>", rcpt: "<" + strings.Replace(valid, "=gIVm=", "=gfk=", 1) + ">", seed: refused(badSRS)},
		{name: "SRS expired stamp", from: "<>", rcpt: "<" + expired + ">", seed: refused(badSRS)},
		{name: "SRS stamp in the future", from: "<>", rcpt: "<" + future + ">", seed: refused(badSRS)},
		{name: "SRS foreign domain", from: "<>", rcpt: "<SRS0=gIVm=KH=example.com=alice@other.test>", seed: refused(relayDenied)},
		{name: "SRS subdomain of the SRS domain", from: "<>", rcpt: "<SRS0=gIVm=KH=example.com=alice@x.srs.relay.test>", seed: refused(relayDenied)},
		{name: "SRS missing fields", from: "<>", rcpt: "<SRS0=gIVm=KH@srs.relay.test>", seed: refused(badSRS)},
		{name: "SRS empty user", from: "<>", rcpt: "<SRS0=gIVm=KH=example.com=@srs.relay.test>", seed: refused(badSRS)},
		{name: "SRS bad stamp", from: "<>", rcpt: "<SRS0=gIVm=K1=example.com=alice@srs.relay.test>", seed: refused(badSRS)},
		{name: "SRS with @ inside", from: "<>", rcpt: `<"SRS0=gIVm=KH=example.com=alice@evil.test"@srs.relay.test>`, seed: refused(badSRS)},
		{name: "no SRS tag in SRS domain", from: "<>", rcpt: "<alice@srs.relay.test>", seed: refused(badSRS)},
		{name: "percent hack in SRS domain", from: "<>", rcpt: "<user%evil.test@srs.relay.test>", seed: refused(badSRS)},

		// Command-line injection: CR, LF and NUL reach the server as written.
		{name: "bare CR before a second RCPT", rcpt: "<sales@company.com>\rRCPT TO:<victim@evil.test>", seed: refused(smtpBadArg)},
		{name: "bare LF before a second RCPT", rcpt: "<sales@company.com>\nRCPT TO:<victim@evil.test>",
			seed: &outcome{replies: []string{"250 2.0.0", relayDenied}, to: []string{"central@company.com"}}},
		{name: "CRLF inside the brackets", rcpt: "<victim@evil.test\r\n>", seed: &outcome{replies: []string{smtpSyntax, "501 5.5.2 Bad command"}}},
		{name: "bare CR inside the brackets", rcpt: "<sales@company.com\rRCPT TO:<victim@evil.test>>", seed: refused(smtpSyntax)},
		{name: "NUL in local part", rcpt: "<sales\x00@company.com>", seed: refused(badRcpt)},
		{name: "NUL in domain", rcpt: "<sales@company.com\x00.evil.test>", seed: refused(badRcpt)},
		{name: "NUL before our domain", rcpt: "<victim@evil.test\x00@company.com>", seed: refused(badRcpt)},
		{name: "NUL after the address", rcpt: "<sales@company.com>\x00", seed: refused(smtpBadArg)},

		// Odd syntax.
		{name: "local part of 65 octets", rcpt: "<" + long65 + "@company.com>", seed: refused(unknownUser), pass: accepted(long65 + "@company.com")},
		{name: "local part of 300 octets", rcpt: "<" + long300 + "@company.com>", seed: refused(badRcpt)},
		{name: "empty local part", rcpt: "<@company.com>", seed: refused(smtpSyntax)},
		{name: "empty quoted local part", rcpt: `<""@company.com>`, seed: refused(smtpSyntax)},
		{name: "null recipient", rcpt: "<>", seed: refused(smtpSyntax)},
		{name: "missing >", rcpt: "<sales@company.com", seed: refused(smtpSyntax)},
		{name: "missing <", rcpt: "sales@company.com>", seed: refused(smtpBadArg)},
		{name: "double brackets", rcpt: "<<sales@company.com>>", seed: refused(smtpSyntax)},
		{name: "no brackets", rcpt: "sales@company.com", seed: accepted("central@company.com")},
		{name: "space in local part", rcpt: "<sales @company.com>", seed: refused(smtpSyntax)},
		{name: "space in domain", rcpt: "<sales@company .com>", seed: refused(smtpSyntax)},
		{name: "quoted space", rcpt: `<"sales "@company.com>`, seed: refused(unknownUser), pass: accepted(`"sales "@company.com`)},
		{name: "quoted own user", rcpt: `<"sales"@company.com>`, seed: accepted("central@company.com")},
		{name: "comment before local part", rcpt: "<(comment)sales@company.com>", seed: refused(smtpSyntax)},
		{name: "comment after local part", rcpt: "<sales(comment)@company.com>", seed: refused(smtpSyntax)},
		{name: "comment in domain", rcpt: "<sales@(comment)company.com>", seed: refused(badRcpt)},
		{name: "ORCPT naming a foreign address", rcpt: "<sales@company.com> NOTIFY=FAILURE ORCPT=rfc822;victim@evil.test", seed: accepted("central@company.com")},

		// Relaying is decided by RCPT, whatever MAIL FROM says.
		{name: "MAIL FROM a relay domain", from: "<sales@company.com>", rcpt: "<victim@evil.test>", seed: refused(relayDenied)},
		{name: "MAIL FROM the SRS domain", from: "<" + valid + ">", rcpt: "<victim@evil.test>", seed: refused(relayDenied)},
		{name: "null sender to foreign", from: "<>", rcpt: "<victim@evil.test>", seed: refused(relayDenied)},
		{name: "external forward from the directory", from: "<victim@evil.test>", rcpt: "<internal.user@company.com>", seed: accepted("external.user@gmail.com")},
		{name: "unknown user", rcpt: "<nobody@company.com>", seed: refused(unknownUser), pass: accepted("nobody@company.com")},
		{name: "unknown user, rewritten domain", rcpt: "<nobody@domain.com>", seed: refused(unknownUser), dflt: accepted("nobody@domain.ro"),
			pass: accepted("nobody@domain.com")},
		{name: "extension of own user", rcpt: "<sales+tag@company.com>", seed: refused(unknownUser), dflt: accepted("central+tag@company.com"),
			pass: accepted("sales+tag@company.com")},
	}
}

// directoryExternal are the recipients outside our domains that the seed
// directory forwards to.
var directoryExternal = []string{"external.user@gmail.com"}

// batteryVariant is one routing set-up the battery runs against; want
// picks a trick's expected outcome under it (nil: skip the trick).
type batteryVariant struct {
	name string
	opts func(src routing.Source) relayOpts
	want func(relayTrick) *outcome
}

func batteryVariants(rw *srs.Rewriter) []batteryVariant {
	return []batteryVariant{
		{"seed", func(src routing.Source) relayOpts { return relayOpts{src: src, srs: rw, quiet: true} },
			func(tc relayTrick) *outcome { return tc.seed }},
		{"serve-defaults", func(src routing.Source) relayOpts {
			return relayOpts{src: src, srs: rw, quiet: true, exp: &routing.Expander{Source: src, Delimiter: "+", KeepExtension: true,
				Rewrites: routing.DomainRewrites{"domain.com": "domain.ro"}, Limits: routing.PostfixLimits}}
		}, func(tc relayTrick) *outcome {
			if tc.dflt != nil {
				return tc.dflt
			}
			return tc.seed
		}},
		{"pass-unknown", func(src routing.Source) relayOpts {
			return relayOpts{src: src, srs: rw, quiet: true, cfg: func(c *Config) { c.PassUnknown = true }}
		}, func(tc relayTrick) *outcome {
			if tc.pass != nil {
				return tc.pass
			}
			return tc.seed
		}},
		// Dry run queues every relay-domain address unchanged, known or
		// not: only the refusals that come before routing are compared.
		{"dry-run", func(src routing.Source) relayOpts {
			return relayOpts{src: src, srs: rw, quiet: true, cfg: func(c *Config) { c.DryRun = true }}
		}, func(tc relayTrick) *outcome {
			if tc.seed.to != nil || tc.seed.replies[0] == unknownUser {
				return nil
			}
			return tc.seed
		}},
	}
}

// TestOpenRelayBattery tries each relay trick as a raw RCPT against a
// running relay (seed directory, SRS on), once with the seed's plain
// routing and once with the routing defaults of `mailfwd serve` plus a
// domain rewrite, so that every routing rule that could carry a crafted
// address to the next hop is in play. Each is refused with the stated
// code, or accepted and then delivered to exactly the stated final
// recipients, none of them foreign but the directory's own forward and
// verified SRS bounces.
func TestOpenRelayBattery(t *testing.T) {
	rw := testSRS()
	tricks := relayTricks(t, rw)
	if len(tricks) < 30 {
		t.Fatalf("only %d tricks", len(tricks))
	}
	for _, v := range batteryVariants(rw) {
		t.Run(v.name, func(t *testing.T) {
			for _, tc := range tricks {
				want := v.want(tc)
				if want == nil {
					continue
				}
				t.Run(tc.name, func(t *testing.T) {
					r := startTestRelay(t, v.opts(seedSource(t)))
					runTrick(t, r, tc, want)
				})
			}
		})
	}
}

func runTrick(t *testing.T, r *testRelay, tc relayTrick, want *outcome) {
	t.Helper()
	c := dialRaw(t, r.addr)
	c.cmd("EHLO battery.test", "250 ")
	from := tc.from
	if from == "" {
		from = "<alice@example.org>"
	}
	if !isASCII(from + tc.rcpt) {
		from += " SMTPUTF8" // without it, any non-ASCII address gets 553 5.6.7 (dialog test)
	}
	c.cmd("MAIL FROM:"+from, "250 2.0.0")
	c.send("RCPT TO:" + tc.rcpt + "\r\n")
	ok := false
	for _, w := range want.replies {
		if strings.HasPrefix(c.expect(w), "250") {
			ok = true
		}
	}
	if !ok {
		// Nothing of the refused RCPT may be left in the transaction.
		c.cmd("DATA", "502 5.5.1")
		c.cmd("QUIT", "221")
		if q := r.queued(); len(q) != 0 {
			t.Fatalf("refused, yet queued %+v", q)
		}
		time.Sleep(10 * time.Millisecond)
		if d := r.delivered(); len(d) != 0 {
			t.Fatalf("refused, yet delivered to %q", d)
		}
		return
	}
	c.cmd("DATA", "354")
	id := queuedID(t, c.cmd("Subject: battery\r\n\r\nhello\r\n.", "250 2.0.0"))
	c.cmd("QUIT", "221")
	q := r.queued()
	if len(q) != 1 || q[0].id != id {
		t.Fatalf("queued %+v, want one message %s", q, id)
	}
	got := append([]string(nil), q[0].rcpts...)
	if !slices.EqualFunc(sorted(got), sorted(want.to), strings.EqualFold) {
		t.Fatalf("queued for %q, want %q", got, want.to)
	}
	r.waitDeliveredExactly(t, want.to)
	for _, a := range r.delivered() {
		if why := foreignRecipient(a, append(want.to[:len(want.to):len(want.to)], directoryExternal...)); why != "" {
			t.Errorf("delivered to %q: %s", a, why)
		}
	}
}

func sorted(l []string) []string {
	out := make([]string, len(l))
	for i, a := range l {
		out[i] = strings.ToLower(a)
	}
	slices.Sort(out)
	return out
}

// One session: every refused trick in a row, then valid recipients still
// work and the message goes to them only (no state leaks from refusals).
func TestOpenRelayBatteryOneSession(t *testing.T) {
	rw := testSRS()
	for _, v := range batteryVariants(rw) {
		t.Run(v.name, func(t *testing.T) {
			o := v.opts(seedSource(t))
			variantCfg := o.cfg
			o.cfg = func(c *Config) {
				if variantCfg != nil {
					variantCfg(c)
				}
				c.MaxErrors = 1000 // the error limit has its own test
			}
			r := startTestRelay(t, o)
			c := dialRaw(t, r.addr)
			c.cmd("EHLO battery.test", "250 ")
			c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
			n := 0
			for _, tc := range relayTricks(t, rw) {
				want := v.want(tc)
				if want == nil || tc.from != "" || len(want.replies) != 1 || want.to != nil {
					continue
				}
				// After 3 bad SRS addresses the SRS limiter defers them
				// (450 4.7.1), which is a refusal too.
				rep := c.cmd("RCPT TO:"+tc.rcpt, "")
				if !isASCII(tc.rcpt) {
					// no SMTPUTF8 in this session: refused before routing
					want = refused("553 5.6.7")
				}
				if !strings.HasPrefix(rep, want.replies[0]) && !(want.replies[0] == badSRS && strings.HasPrefix(rep, "450 4.7.1")) {
					t.Errorf("%s: %q, want %q", tc.name, rep, want.replies[0])
				}
				n++
			}
			if n < 30 {
				t.Fatalf("only %d refusals sent", n)
			}
			c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
			c.cmd("RCPT TO:<internal.user@company.com>", "250 2.0.0")
			c.cmd("DATA", "354")
			c.cmd("Subject: after refusals\r\n\r\nhello\r\n.", "250 2.0.0 Ok: queued as ")
			c.cmd("QUIT", "221")
			finals := []string{"central@company.com", "external.user@gmail.com"}
			if v.name == "dry-run" { // delivered unchanged
				finals = []string{"sales@company.com", "internal.user@company.com"}
			}
			r.waitDeliveredExactly(t, finals)
		})
	}
}
