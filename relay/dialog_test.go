package relay

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/queue"
	"mailfwd/routing"
)

// Raw-dialog suite: scripted SMTP conversations over a real socket, exact
// bytes out, exact reply code and enhanced code back. Several replies come
// from go-smtp itself, before our code sees the command; they are asserted
// as go-smtp gives them (see the comments where they differ from RFC 5321).

func quietRelay(t testing.TB, o relayOpts) *testRelay {
	t.Helper()
	o.quiet = true
	return startTestRelay(t, o)
}

// ehlo sends EHLO and returns the keywords of the reply (first line, the
// greeting, left out).
func (c *rawClient) ehlo(name string) []string {
	c.t.Helper()
	c.send("EHLO " + name + "\r\n")
	lines, err := c.read()
	if err != nil {
		c.t.Fatalf("EHLO: %v (%q)", err, lines)
	}
	var kw []string
	for i, l := range lines {
		if !strings.HasPrefix(l, "250") {
			c.t.Fatalf("EHLO reply line %q", l)
		}
		if i > 0 {
			kw = append(kw, l[4:])
		}
	}
	return kw
}

// begin opens a transaction: EHLO, MAIL FROM:<alice@example.org>, and
// each RCPT accepted.
func begin(t testing.TB, addr string, rcpts ...string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.ehlo("dialog.test")
	c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
	for _, r := range rcpts {
		c.cmd("RCPT TO:<"+r+">", "250 2.0.0")
	}
	return c
}

// beginBounce opens a transaction from the null sender, as a DSN comes.
func beginBounce(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := dialRaw(t, addr)
	c.ehlo("dialog.test")
	c.cmd("MAIL FROM:<>", "250 2.0.0")
	return c
}

// bounceRcpt is the reply to one RCPT in a bounce transaction.
func bounceRcpt(t *testing.T, o relayOpts, to string) string {
	t.Helper()
	return beginBounce(t, quietRelay(t, o).addr).cmd("RCPT TO:<"+to+">", "")
}

// failingStore is an SRS store that cannot answer.
type failingStore struct{}

func (failingStore) Put(context.Context, string, string, int64) error {
	return errors.New("connection refused")
}
func (failingStore) Get(context.Context, string, int64) (string, error) {
	return "", errors.New("connection refused")
}

func replyLine(e *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		DNSNames: []string{"relay.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// startTLS upgrades c after a 220 to STARTTLS.
func (c *rawClient) startTLS(roots *x509.CertPool) {
	c.t.Helper()
	tc := tls.Client(c.c, &tls.Config{RootCAs: roots, ServerName: "relay.test", MinVersion: tls.VersionTLS12})
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
}

// spoolBody returns the body of a queued message as stored.
func spoolBody(t testing.TB, r *testRelay, id string) string {
	t.Helper()
	env, err := r.spool.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := r.spool.OpenBody(env)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sunkData waits for n messages at the local sink and returns their data.
func sunkData(t testing.TB, r *testRelay, n int) []string {
	t.Helper()
	var out []string
	for _, m := range waitSunk(t.(*testing.T), r.local, n) {
		out = append(out, m.data)
	}
	return out
}

// crlfClean reports the first bare CR or bare LF in s, or -1.
func crlfClean(s string) int {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\r':
			if i+1 >= len(s) || s[i+1] != '\n' {
				return i
			}
			i++
		case '\n':
			return i
		}
	}
	return -1
}

// ---------------------------------------------------------------------------

// The greeting and the EHLO keywords, exactly: every extension the relay
// offers and nothing else (no AUTH, no STARTTLS without a certificate).
func TestDialogEHLOKeywords(t *testing.T) {
	cert, roots := testCert(t)
	for _, tc := range []struct {
		name string
		tls  *tls.Config
		want []string
	}{
		{"plain", nil, []string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "DSN", "SIZE 10240", "LIMITS RCPTMAX=1000"}},
		{"with certificate", &tls.Config{Certificates: []tls.Certificate{cert}},
			[]string{"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "STARTTLS", "SMTPUTF8", "DSN", "SIZE 10240", "LIMITS RCPTMAX=1000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := quietRelay(t, relayOpts{tls: tc.tls, cfg: func(c *Config) { c.MaxSize = 10240 }})
			c, err := net.Dial("tcp", r.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			rc := &rawClient{t: t, c: c, r: bufio.NewReader(c)}
			if g := rc.expect("220 "); g != "220 relay.test ESMTP Service Ready" {
				t.Errorf("greeting %q", g)
			}
			rc.send("EHLO dialog.test\r\n")
			lines, err := rc.read()
			if err != nil {
				t.Fatal(err)
			}
			// go-smtp puts "Hello <client>" where RFC 5321 wants the
			// server's own name.
			if lines[0] != "250-Hello dialog.test" {
				t.Errorf("EHLO first line %q", lines[0])
			}
			var kw []string
			for _, l := range lines[1:] {
				kw = append(kw, l[4:])
			}
			if !slices.Equal(kw, tc.want) {
				t.Errorf("EHLO keywords %q, want %q", kw, tc.want)
			}
			if tc.tls == nil {
				rc.cmd("STARTTLS", "502 5.5.1")
				return
			}
			rc.cmd("STARTTLS", "220 2.0.0")
			rc.startTLS(roots)
			kw = rc.ehlo("dialog.test")
			if slices.Contains(kw, "STARTTLS") {
				t.Errorf("STARTTLS offered again inside TLS: %q", kw)
			}
			rc.cmd("STARTTLS", "502 5.5.1")
		})
	}
}

// The commands besides the transaction, and commands out of order.
func TestDialogCommands(t *testing.T) {
	r := quietRelay(t, relayOpts{})
	c := dialRaw(t, r.addr)
	for _, s := range []struct{ send, want string }{
		{"MAIL FROM:<alice@example.org>", "502 5.5.1"}, // before HELO
		{"RCPT TO:<sales@company.com>", "502 5.5.1"},   // RFC 5321 says 503 (go-smtp)
		{"DATA", "502 5.5.1"},
		{"HELO", "501 5.5.2"},
		{"EHLO", "501 5.5.2"},
		{"HELO dialog.test", "250 2.0.0 Hello dialog.test"},
		{"NOOP", "250 2.0.0"},
		{"noop with an argument", "250 2.0.0"},
		{"VRFY sales@company.com", "252 2.5.0"},
		{"EXPN staff", "502 5.5.1"},
		{"HELP", "502 5.5.1"},
		{"TURN", "502 5.5.1"},
		{"AUTH PLAIN AGFsaWNlAHNlY3JldA==", "523 5.7.10"}, // not offered; go-smtp's code
		{"XYZW", "500 5.5.2"},                             // unknown
		{"XYZZY", "501 5.5.2 Bad command"},                // not even a command
		{"RCPT TO:<sales@company.com>", "502 5.5.1"},      // RCPT before MAIL
		{"MAIL TO:<alice@example.org>", "501 5.5.2"},
		{"MAIL FROM:<alice@example.org> FOO=BAR", "500 5.5.4"},
		{"MAIL FROM:<alice@example.org>", "250 2.0.0"},
		{"DATA", "502 5.5.1"}, // DATA without RCPT
		{"RCPT TO:<sales@company.com>", "250 2.0.0"},
		{"DATA now", "501 5.5.4"},
		{"RSET", "250 2.0.0"},
		{"DATA", "502 5.5.1"}, // RSET dropped the recipients
		{"RCPT TO:<sales@company.com>", "502 5.5.1"},
	} {
		c.cmd(s.send, s.want)
	}
	c.cmd("QUIT", "221 2.0.0")
	c.expectClosed()
	if q := r.queued(); len(q) != 0 {
		t.Fatalf("queued %+v", q)
	}
}

// go-smtp closes the session after the fourth protocol error (unknown or
// malformed commands), our MaxErrors counts refused MAIL/RCPT/DATA.
func TestDialogProtocolErrorLimit(t *testing.T) {
	r := quietRelay(t, relayOpts{})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	for range 3 {
		c.cmd("XYZW", "500 5.5.2")
	}
	c.send("XYZW\r\n")
	c.expect("500 5.5.2")
	c.expect("500 5.5.1 Too many errors")
	c.expectClosed()
}

// Every reply in replies.go, provoked through a real socket, compared with
// the table byte for byte.
func TestDialogReplyTable(t *testing.T) {
	rw := testSRS()
	valid, _ := rw.Forward(context.Background(), "alice@example.com")
	forged := strings.Replace(valid, "=gIVm=", "=AAAA=", 1)
	dirDown := failingSource{fmt.Errorf("%w: connection refused", routing.ErrUnavailable)}
	fanOut := mapSource{"fan@company.com": "a@company.com, b@company.com, c@company.com", "sales@company.com": "central@company.com"}

	rcptReply := func(t *testing.T, o relayOpts, to string) string {
		r := quietRelay(t, o)
		c := begin(t, r.addr)
		return c.cmd("RCPT TO:<"+to+">", "")
	}
	dataReply := func(t *testing.T, o relayOpts, body string) (string, *testRelay) {
		r := quietRelay(t, o)
		c := begin(t, r.addr, "sales@company.com")
		c.cmd("DATA", "354")
		return c.cmd(body+".", ""), r
	}
	cases := []struct {
		name  string
		reply *smtp.SMTPError
		run   func(t *testing.T) string
	}{
		{"replyRelayDenied", replyRelayDenied, func(t *testing.T) string { return rcptReply(t, relayOpts{}, "victim@evil.test") }},
		{"replyBadRcpt", replyBadRcpt, func(t *testing.T) string { return rcptReply(t, relayOpts{}, "sales@company.com.") }},
		{"replyBadSender", replyBadSender, func(t *testing.T) string {
			c := dialRaw(t, quietRelay(t, relayOpts{}).addr)
			c.ehlo("dialog.test")
			return c.cmd("MAIL FROM:<alice@example.org.>", "")
		}},
		{"replyNeedUTF8", replyNeedUTF8, func(t *testing.T) string {
			c := dialRaw(t, quietRelay(t, relayOpts{}).addr)
			c.ehlo("dialog.test")
			if r := c.cmd("MAIL FROM:<j\xc3\xb6rg@example.org>", ""); !strings.HasPrefix(r, "553 5.6.7 ") {
				t.Errorf("non-ASCII sender without SMTPUTF8: %q", r)
			}
			c.cmd("MAIL FROM:<alice@example.org>", "250 ")
			return c.cmd("RCPT TO:<s\xc3\xa4les@company.com>", "")
		}},
		{"replyUnknownUser", replyUnknownUser, func(t *testing.T) string { return rcptReply(t, relayOpts{}, "nobody@company.com") }},
		{"replyDirDown", replyDirDown, func(t *testing.T) string { return rcptReply(t, relayOpts{src: dirDown}, "sales@company.com") }},
		{"replyExpansion", replyExpansion, func(t *testing.T) string { return rcptReply(t, relayOpts{src: loopSource{}}, "a@company.com") }},
		{"replyTooManyRcpt", replyTooManyRcpt, func(t *testing.T) string {
			// One RCPT fanning out past MaxRecipients (go-smtp counts RCPT
			// commands, we count final recipients).
			return rcptReply(t, relayOpts{src: fanOut, cfg: func(c *Config) { c.MaxRecipients = 2 }}, "fan@company.com")
		}},
		{"replyNoRcpt", replyNoRcpt, func(t *testing.T) string {
			// A second MAIL resets our transaction, but not go-smtp's
			// recipient list, so DATA gets as far as our handler.
			c := begin(t, quietRelay(t, relayOpts{}).addr, "sales@company.com")
			c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
			c.cmd("DATA", "354")
			return c.cmd("Subject: x\r\n\r\nx\r\n.", "")
		}},
		{"replyNoMemory", replyNoMemory, func(t *testing.T) string {
			// a budget smaller than one message's reserve: every DATA waits
			rep, r := dataReply(t, relayOpts{cfg: func(c *Config) { c.MemoryBudget = 1 }}, "Subject: x\r\n\r\nx\r\n")
			if q := r.queued(); len(q) != 0 {
				t.Errorf("queued past the memory budget: %+v", q)
			}
			return rep
		}},
		{"replySpoolFull", replySpoolFull, func(t *testing.T) string {
			rep, _ := dataReply(t, relayOpts{spool: failingSpool{fmt.Errorf("%w: %w", queue.ErrSpoolFull, syscall.ENOSPC)}}, "Subject: x\r\n\r\nx\r\n")
			return rep
		}},
		{"replyLocalError", replyLocalError, func(t *testing.T) string {
			rep, _ := dataReply(t, relayOpts{spool: failingSpool{errors.New("spool: bad file descriptor")}}, "Subject: x\r\n\r\nx\r\n")
			return rep
		}},
		{"replyTooBig", replyTooBig, func(t *testing.T) string {
			rep, r := dataReply(t, relayOpts{cfg: func(c *Config) { c.MaxSize = 1024 }}, "Subject: big\r\n\r\n"+strings.Repeat("x", 2000)+"\r\n")
			if q := r.queued(); len(q) != 0 {
				t.Errorf("oversize message queued: %+v", q)
			}
			return rep
		}},
		{"replyTooManyErrs", replyTooManyErrs, func(t *testing.T) string {
			r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.MaxErrors = 2 }})
			c := begin(t, r.addr)
			c.cmd("RCPT TO:<victim@evil.test>", "554 5.7.1")
			rep := c.cmd("RCPT TO:<victim@evil.test>", "")
			c.expectClosed()
			return rep
		}},
		{"replyTooManyCmds", replyTooManyCmds, func(t *testing.T) string {
			// The limit's last command is a DATA: it is queued and answered
			// 250 (before, 421 after queueing: the client sent it again);
			// the command after it is refused before it runs.
			r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.MaxCommands = 3 }})
			c := begin(t, r.addr, "sales@company.com")
			c.cmd("DATA", "354")
			c.cmd("Subject: the third command\r\n\r\nx\r\n.", "250 2.0.0 Ok: queued as ")
			rep := c.cmd("MAIL FROM:<alice@example.org>", "")
			c.expectClosed()
			if q := r.queued(); len(q) != 1 {
				t.Errorf("%d messages queued, want 1", len(q))
			}
			return rep
		}},
		{"replyLoop", replyLoop, func(t *testing.T) string {
			rep, r := dataReply(t, relayOpts{cfg: func(c *Config) { c.MaxReceived = 1 }},
				"Received: from a.test by b.test; Tue, 24 Nov 2026 10:00:00 +0000\r\nReceived: from b.test by a.test; Tue, 24 Nov 2026 10:00:01 +0000\r\nSubject: loop\r\n\r\nx\r\n")
			if q := r.queued(); len(q) != 0 {
				t.Errorf("looping message queued: %+v", q)
			}
			return rep
		}},
		{"replyDataTimeout", replyDataTimeout, func(t *testing.T) string {
			r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.DataTimeout = 200 * time.Millisecond }})
			c := begin(t, r.addr, "sales@company.com")
			c.cmd("DATA", "354")
			c.send("Subject: slow\r\n") // and nothing more
			rep := c.expect("")
			c.expectClosed()
			return rep
		}},
		{"replyBadSRS", replyBadSRS, func(t *testing.T) string { return bounceRcpt(t, relayOpts{srs: rw}, forged) }},
		{"replySRSLimited", replySRSLimited, func(t *testing.T) string {
			r := quietRelay(t, relayOpts{srs: rw}) // SRSFailureLimit 3
			c := beginBounce(t, r.addr)
			for range 3 {
				c.cmd("RCPT TO:<"+forged+">", "550 5.7.1")
			}
			c.cmd("RCPT TO:<"+valid+">", "250 2.0.0") // a valid one: never refused for failures
			c.cmd("RSET", "250")
			c.cmd("MAIL FROM:<>", "250")
			rep := c.cmd("RCPT TO:<"+forged+">", "")
			c.expectClosed() // a guesser pays a connection per guess
			return rep
		}},
		{"replySRSNotBounce", replySRSNotBounce, func(t *testing.T) string { return rcptReply(t, relayOpts{srs: rw}, valid) }},
		{"replySRSRate", replySRSRate, func(t *testing.T) string {
			r := quietRelay(t, relayOpts{srs: rw, cfg: func(c *Config) { c.SRSReverse.Rate = 2 }})
			c := beginBounce(t, r.addr)
			for range 2 {
				c.cmd("RCPT TO:<"+valid+">", "250 2.0.0")
				c.cmd("RSET", "250")
				c.cmd("MAIL FROM:<>", "250 2.0.0")
			}
			return c.cmd("RCPT TO:<"+valid+">", "")
		}},
		{"replySRSStoreDown", replySRSStoreDown, func(t *testing.T) string {
			down := *rw
			down.Store = failingStore{}
			r := quietRelay(t, relayOpts{srs: &down})
			c := dialRaw(t, r.addr)
			c.ehlo("dialog.test")
			c.cmd("MAIL FROM:<"+strings.Repeat("x", 60)+"@example.org>", "250 2.0.0")
			return c.cmd("RCPT TO:<internal.user@company.com>", "")
		}},
		{"replySRSTooLong", replySRSTooLong, func(t *testing.T) string {
			r := quietRelay(t, relayOpts{srs: rw})
			c := dialRaw(t, r.addr)
			c.ehlo("dialog.test")
			c.cmd("MAIL FROM:<"+strings.Repeat("x", 40)+"@"+strings.Repeat("y", 20)+".example>", "250 2.0.0")
			return c.cmd("RCPT TO:<internal.user@company.com>", "")
		}},
		{"replyNeedMail", replyNeedMail, func(t *testing.T) string {
			// policy.go: after a refused MAIL the earlier MAIL no longer counts.
			r := quietRelay(t, relayOpts{})
			c := begin(t, r.addr)
			c.cmd("MAIL FROM:<alice@example.org.>", "501 5.1.7")
			rep := c.cmd("RCPT TO:<internal.user@company.com>", "")
			c.cmd("DATA", "502 5.5.1")
			if q := r.queued(); len(q) != 0 {
				t.Errorf("queued %+v", q)
			}
			return rep
		}},
		{"replyQueued", nil, func(t *testing.T) string {
			rep, r := dataReply(t, relayOpts{}, "Subject: ok\r\n\r\nok\r\n")
			if q := r.queued(); len(q) != 1 || rep != replyLine(replyQueued(q[0].id)) {
				t.Errorf("DATA %q, queued %+v", rep, q)
			}
			return rep
		}},
	}
	covered := map[string]bool{}
	for _, tc := range cases {
		covered[tc.name] = true
		t.Run(tc.name, func(t *testing.T) {
			got := tc.run(t)
			if tc.reply != nil && got != replyLine(tc.reply) {
				t.Fatalf("got %q, want %q", got, replyLine(tc.reply))
			}
		})
	}
	// Every reply of the table has a case here.
	for _, name := range replyTableNames(t) {
		if !covered[name] {
			t.Errorf("%s (replies.go) has no dialog case", name)
		}
	}
}

// replyTableNames lists the package-level reply* variables and functions
// of replies.go.
func replyTableNames(t *testing.T) []string {
	f, err := parser.ParseFile(token.NewFileSet(), "replies.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if vs, ok := s.(*ast.ValueSpec); ok {
					for _, n := range vs.Names {
						names = append(names, n.Name)
					}
				}
			}
		case *ast.FuncDecl:
			names = append(names, d.Name.Name)
		}
	}
	if len(names) < 10 {
		t.Fatalf("replies.go: found only %q", names)
	}
	return names
}

type failingSpool struct{ err error }

func (f failingSpool) Create() (*queue.Writer, error) { return nil, f.err }

// A fan-out refused with 452 at RCPT: what the client was told and what
// goes out agree for the recipients before it.
func TestDialogRecipientLimits(t *testing.T) {
	r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.MaxRecipients = 2 }})
	c := begin(t, r.addr, "sales@company.com", "old.address@domain.com")
	// go-smtp's own limit, on the number of RCPT commands.
	c.cmd("RCPT TO:<info@company.com>", "452 4.5.3 Maximum limit of 2 recipients reached")
	c.cmd("DATA", "354")
	id := queuedID(t, c.cmd("Subject: two\r\n\r\nx\r\n.", "250 2.0.0"))
	r.waitDeliveredExactly(t, []string{"central@company.com", "new.address@domain.ro"})
	if q := r.queued(); len(q) != 1 || q[0].id != id {
		t.Fatalf("queued %+v", q)
	}
}

// Dot-stuffing: the relay stores the message unstuffed and stuffs it
// again towards the next hop, so every line arrives as the author wrote it.
func TestDialogDotStuffing(t *testing.T) {
	const sent = "Subject: dots\r\n\r\n..leading dot\r\n...\r\n..\r\n.. space\r\nmiddle . dot\r\n.\r\n"
	const stored = "Subject: dots\r\n\r\n.leading dot\r\n..\r\n.\r\n. space\r\nmiddle . dot\r\n"
	const onWire = "\r\n..leading dot\r\n...\r\n..\r\n.. space\r\nmiddle . dot\r\n.\r\n"

	t.Run("stored", func(t *testing.T) {
		r := quietRelay(t, relayOpts{noDelivery: true})
		c := begin(t, r.addr, "sales@company.com")
		c.cmd("DATA", "354")
		c.send(sent)
		id := queuedID(t, c.expect("250 2.0.0"))
		if b := spoolBody(t, r, id); !strings.HasSuffix(b, "\r\n"+stored) {
			t.Fatalf("spooled body:\n%q\nwant it to end with\n%q", b, stored)
		}
	})
	t.Run("delivered", func(t *testing.T) {
		r := quietRelay(t, relayOpts{})
		c := begin(t, r.addr, "sales@company.com")
		c.cmd("DATA", "354")
		c.send(sent)
		c.expect("250 2.0.0")
		if d := sunkData(t, r, 1)[0]; !strings.HasSuffix(d, "\r\n"+stored) {
			t.Fatalf("delivered body:\n%q\nwant it to end with\n%q", d, stored)
		}
		if w := strings.Join(r.wire.all(), ""); !strings.Contains(w, onWire) {
			t.Fatalf("next hop did not get the body stuffed again:\n%q", w)
		}
	})
}

// Bare LF and bare CR: go-smtp ends the data only at CRLF.CRLF, and every
// bare line end becomes CRLF as the message arrives (lineends.go), so the
// spool and the next hop see the same lines. No lone LF or CR combined with
// a dot ends the data early (SMTP smuggling): what follows stays in the
// body, and one message goes out.
func TestDialogBareLineEnds(t *testing.T) {
	t.Run("stored and delivered as CRLF", func(t *testing.T) {
		const sent = "Subject: lf\r\n\r\nline1\nline2\rline3\r\n"
		q := quietRelay(t, relayOpts{noDelivery: true})
		c := begin(t, q.addr, "sales@company.com")
		c.cmd("DATA", "354")
		id := queuedID(t, c.cmd(sent+".", "250 2.0.0"))
		if b := spoolBody(t, q, id); !strings.HasSuffix(b, "\r\nSubject: lf\r\n\r\nline1\r\nline2\r\nline3\r\n") {
			t.Fatalf("spooled body %q", b)
		}
		r := quietRelay(t, relayOpts{})
		c = begin(t, r.addr, "sales@company.com")
		c.cmd("DATA", "354")
		c.cmd(sent+".", "250 2.0.0")
		if d := sunkData(t, r, 1)[0]; !strings.HasSuffix(d, "\r\n\r\nline1\r\nline2\r\nline3\r\n") {
			t.Fatalf("delivered body %q", d)
		}
		for _, w := range r.wire.all() {
			if i := crlfClean(w); i >= 0 {
				t.Fatalf("bare CR or LF at %d towards the next hop: %q", i, w[max(0, i-20):min(len(w), i+20)])
			}
		}
	})
	for _, sep := range []string{"\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.", "\r\n\x00.\r\n"} {
		t.Run(fmt.Sprintf("smuggling %q", sep), func(t *testing.T) {
			r := quietRelay(t, relayOpts{})
			c := begin(t, r.addr, "sales@company.com")
			c.cmd("DATA", "354")
			c.send("Subject: smuggle\r\n\r\nhello" + sep +
				"MAIL FROM:<spam@evil.test>\r\nRCPT TO:<victim@evil.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nspam\r\n.\r\n")
			c.expect("250 2.0.0 Ok: queued as ")
			c.cmd("QUIT", "221 2.0.0") // no reply to a smuggled command came first
			r.waitDeliveredExactly(t, []string{"central@company.com"})
			if d := sunkData(t, r, 1)[0]; !strings.Contains(d, "RCPT TO:<victim@evil.test>\r\n") {
				t.Fatalf("smuggled lines not in the body: %q", d)
			}
			for _, w := range r.wire.all() {
				if i := crlfClean(w); i >= 0 {
					t.Fatalf("bare CR or LF at %d towards the next hop: %q", i, w[max(0, i-20):min(len(w), i+20)])
				}
				if n := strings.Count(w, "\r\n.\r\n"); n != 1 {
					t.Fatalf("%d end-of-data markers towards the next hop, want 1:\n%q", n, w)
				}
			}
		})
	}
}

// Lines over the 4096-octet limit (RFC 5321: 512 for commands, 1000 for
// text) end the session with go-smtp's 500 5.4.0; up to the limit they
// are read.
func TestDialogLongLines(t *testing.T) {
	r := quietRelay(t, relayOpts{})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.cmd("NOOP "+strings.Repeat("x", 4000), "250 2.0.0")
	c.cmd("NOOP "+strings.Repeat("x", 5000), "500 5.4.0")
	c.expectClosed()

	// In a message, lines of any length are taken, as Postfix takes them
	// (a 554 made senders' servers bounce what the MX used to take), and
	// our next hop gets them whole (Postfix breaks them at 998 octets when
	// it sends on; so do our external deliveries, nexthop.SMTPHop.LineLimit).
	long := strings.Repeat("y", 100<<10) // 100 KiB in one line
	c = begin(t, r.addr, "sales@company.com")
	c.cmd("DATA", "354")
	c.cmd("Subject: long\r\n\r\n"+long+"\r\n.", "250 2.0.0 Ok: queued as ")
	if d := sunkData(t, r, 1)[0]; !strings.Contains(d, "\r\n"+long+"\r\n") {
		t.Errorf("the long line did not reach the next hop whole (%d octets delivered)", len(d))
	}
}

// SIZE on MAIL and the size of what is sent.
func TestDialogMessageSize(t *testing.T) {
	r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.MaxSize = 1024 }})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.cmd("MAIL FROM:<alice@example.org> SIZE=1025", "552 5.3.4")
	c.cmd("MAIL FROM:<alice@example.org> SIZE=abc", "501 5.5.4")
	c.cmd("MAIL FROM:<alice@example.org> SIZE=99999999999", "501 5.5.4")
	c.cmd("MAIL FROM:<alice@example.org> SIZE=1024", "250 2.0.0")
	c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
	c.cmd("DATA", "354")
	// Declared small, sent big: the body decides.
	c.cmd("Subject: big\r\n\r\n"+strings.Repeat("z", 1100)+"\r\n.", replyLine(replyTooBig))
	// The session goes on; a message within the limit passes.
	c.cmd("MAIL FROM:<alice@example.org> SIZE=100", "250 2.0.0")
	c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
	c.cmd("DATA", "354")
	id := queuedID(t, c.cmd("Subject: small\r\n\r\nsmall\r\n.", "250 2.0.0"))
	if q := r.queued(); len(q) != 1 || q[0].id != id {
		t.Fatalf("queued %+v, want only %s", q, id)
	}
}

// BDAT (CHUNKING): chunks are taken as bytes, no dot-unstuffing, no line
// limit; bad arguments and sizes are refused and their chunk skipped.
func TestDialogBDAT(t *testing.T) {
	t.Run("two chunks", func(t *testing.T) {
		r := quietRelay(t, relayOpts{})
		c := begin(t, r.addr, "sales@company.com")
		chunk1 := "Subject: bdat\r\n\r\n"
		chunk2 := ".a dot line\r\n..two\r\n.\r\n" + strings.Repeat("l", 5000) + "\r\n"
		c.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk1), chunk1))
		c.expect("250 2.0.0 Continue")
		c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk2), chunk2))
		id := queuedID(t, c.expect("250 2.0.0"))
		c.cmd("QUIT", "221")
		r.waitDeliveredExactly(t, []string{"central@company.com"})
		if d := sunkData(t, r, 1)[0]; !strings.HasSuffix(d, "\r\n"+chunk1+chunk2) {
			t.Fatalf("message %s delivered as %q", id, trunc(d[max(0, len(d)-200):]))
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.MaxSize = 1024 }})
		c := dialRaw(t, r.addr)
		c.ehlo("dialog.test")
		// Without a transaction: refused, and the chunk is skipped.
		c.send("BDAT 5\r\nNOOP\n")
		c.expect("502 5.5.1")
		c.cmd("NOOP", "250 2.0.0")
		c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
		c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
		c.cmd("BDAT", "501 5.5.4")
		c.cmd("BDAT abc", "501 5.5.4")
		c.cmd("BDAT -1", "501 5.5.4")
		c.cmd("BDAT 99999999999", "501 5.5.4")
		c.cmd("BDAT 1 NOTLAST", "501 5.5.4")
		c.cmd("BDAT 1 LAST MORE", "501 5.5.4")
		// Over the size limit: 552, chunk skipped, transaction reset.
		c.send("BDAT 2000 LAST\r\n" + strings.Repeat("b", 2000))
		c.expect("552 5.3.4")
		c.cmd("NOOP", "250 2.0.0")
		c.cmd("BDAT 0 LAST", "502 5.5.1")
		// No other command in the middle of a message.
		c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
		c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
		c.send("BDAT 3\r\nabc")
		c.expect("250 2.0.0 Continue")
		c.cmd("DATA", "502 5.5.1")
		c.cmd("MAIL FROM:<alice@example.org>", "502 5.5.1")
		c.cmd("RCPT TO:<info@company.com>", "502 5.5.1")
		c.cmd("RSET", "250 2.0.0")
		c.cmd("BDAT 0 LAST", "502 5.5.1")
		if q := r.queued(); len(q) != 0 {
			t.Fatalf("queued %+v", q)
		}
	})
}

// Pipelined commands (RFC 2920) get their replies in order, and the
// message goes to the accepted recipients only.
func TestDialogPipelinedErrors(t *testing.T) {
	r := quietRelay(t, relayOpts{})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.send("MAIL FROM:<alice@example.org>\r\n" +
		"RCPT TO:<sales@company.com>\r\n" +
		"RCPT TO:<victim@evil.test>\r\n" +
		"RCPT TO:<nobody@company.com>\r\n" +
		"RCPT TO:<sales@company.com.>\r\n" +
		"RCPT TO:<user%evil.test@company.com>\r\n" +
		"RCPT TO:victim@evil.test>\r\n" +
		"RCPT TO:<old.address@domain.com>\r\n" +
		"DATA\r\n")
	for _, want := range []string{"250 2.0.0", "250 2.0.0", "554 5.7.1", "550 5.1.1", "501 5.1.3", "554 5.7.1", "500 5.5.4", "250 2.0.0", "354"} {
		c.expect(want)
	}
	c.send("Subject: pipelined\r\n\r\nhello\r\n.\r\nQUIT\r\n")
	c.expect("250 2.0.0 Ok: queued as ")
	c.expect("221 2.0.0")
	r.waitDeliveredExactly(t, []string{"central@company.com", "new.address@domain.ro"})

	// All refused, then a chunk pipelined behind them: the chunk is
	// skipped, not queued and not read as commands.
	c = dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.send("MAIL FROM:<alice@example.org>\r\nRCPT TO:<victim@evil.test>\r\nBDAT 27 LAST\r\nRCPT TO:<sales@company.com>NOOP\r\n")
	for _, want := range []string{"250 2.0.0", "554 5.7.1", "502 5.5.1", "250 2.0.0"} {
		c.expect(want)
	}
	// A refused MAIL makes the rest of the batch fail too, also when an
	// earlier MAIL of the session was accepted (go-smtp still holds that
	// one: the RCPT reaches us, DATA does not).
	c.send("MAIL FROM:<alice@example.org.>\r\nRCPT TO:<sales@company.com>\r\nDATA\r\n")
	for _, want := range []string{"501 5.1.7", "503 5.5.1", "502 5.5.1"} {
		c.expect(want)
	}
	c.cmd("QUIT", "221")
	time.Sleep(50 * time.Millisecond)
	if q := r.queued(); len(q) != 1 {
		t.Fatalf("queued %+v, want only the first message", q)
	}
}

// STARTTLS: the transaction starts over inside TLS, commands pipelined
// behind STARTTLS in clear text are dropped (CVE-2011-0411), and the
// message goes through with the protocol recorded.
func TestDialogSTARTTLS(t *testing.T) {
	cert, roots := testCert(t)
	r := quietRelay(t, relayOpts{tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
	c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
	c.send("STARTTLS\r\nRCPT TO:<info@company.com>\r\nNOOP\r\n")
	c.expect("220 2.0.0")
	c.startTLS(roots)
	// The first reply inside TLS is to our command, not to the injected ones.
	c.cmd("RCPT TO:<support@company.com>", "502 5.5.1") // no HELO, no MAIL: state was reset
	kw := c.ehlo("dialog.test")
	if slices.Contains(kw, "STARTTLS") {
		t.Fatalf("STARTTLS inside TLS: %q", kw)
	}
	c.cmd("RCPT TO:<sales@company.com>", "502 5.5.1") // the MAIL from before TLS is gone
	c.cmd("MAIL FROM:<alice@example.org>", "250 2.0.0")
	c.cmd("RCPT TO:<old.address@domain.com>", "250 2.0.0")
	c.cmd("DATA", "354")
	c.cmd("Subject: tls\r\n\r\nsecret\r\n.", "250 2.0.0 Ok: queued as ")
	c.cmd("STARTTLS", "502 5.5.1")
	c.cmd("QUIT", "221")
	r.waitDeliveredExactly(t, []string{"new.address@domain.ro"})
	if d := sunkData(t, r, 1)[0]; !strings.Contains(d, " with ESMTPS (TLS 1.") {
		t.Fatalf("Received header does not record TLS: %q", d[:min(300, len(d))])
	}
}

// 8BITMIME, SMTPUTF8 and DSN parameters reach the spool; unknown values
// are refused.
func TestDialogExtensionParameters(t *testing.T) {
	r := quietRelay(t, relayOpts{noDelivery: true})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	for _, s := range []struct{ send, want string }{
		{"MAIL FROM:<alice@example.org> BODY=BINARYMIME", "504 5.5.4"},
		{"MAIL FROM:<alice@example.org> BODY=9BIT", "501 5.5.4"},
		{"MAIL FROM:<alice@example.org> RET=NONE", "501 5.5.4"},
		{"MAIL FROM:<alice@example.org> ENVID=", "501 5.5.4"},
		{"MAIL FROM:<alice@example.org> REQUIRETLS", "504 5.5.4"},
		{"MAIL FROM:<alice@example.org> BODY=8BITMIME RET=HDRS ENVID=QQ+2B314159", "250 2.0.0"},
		{"RCPT TO:<sales@company.com> NOTIFY=NEVER,SUCCESS", "501 5.5.4"},
		{"RCPT TO:<sales@company.com> NOTIFY=SOMETIMES", "501 5.5.4"},
		{"RCPT TO:<sales@company.com> ORCPT=bogus", "501 5.5.4"},
		{"RCPT TO:<sales@company.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;info+2B@company.com", "250 2.0.0"},
		{"DATA", "354"},
	} {
		c.cmd(s.send, s.want)
	}
	id := queuedID(t, c.cmd("Subject: 8bit \xc3\xa9t\xc3\xa9\r\n\r\nd\xc3\xa9j\xc3\xa0\r\n.", "250 2.0.0"))
	env, err := r.spool.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if !env.Body8Bit || env.SMTPUTF8 || !env.UTF8Header || env.DSNRet != "HDRS" || env.DSNEnvID != "QQ+314159" {
		t.Errorf("envelope 8bit=%v utf8=%v utf8 header=%v ret=%q envid=%q", env.Body8Bit, env.SMTPUTF8, env.UTF8Header, env.DSNRet, env.DSNEnvID)
	}
	if rc := env.Recipients; len(rc) != 1 || rc[0].Addr != "central@company.com" || rc[0].DSNNotify != "SUCCESS,FAILURE" || rc[0].ORcpt != "RFC822;info+@company.com" {
		t.Errorf("recipients %+v", rc)
	}

	c.cmd("MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8", "250 2.0.0")
	c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
	c.cmd("DATA", "354")
	id = queuedID(t, c.cmd("Subject: utf8\r\n\r\nx\r\n.", "250 2.0.0"))
	env, err = r.spool.Load(id)
	if err != nil {
		t.Fatal(err)
	}
	if !env.SMTPUTF8 || env.UTF8Header || env.From != "j\xc3\xb6rg@example.org" {
		t.Errorf("envelope utf8=%v utf8 header=%v from=%q", env.SMTPUTF8, env.UTF8Header, env.From)
	}
	if b := spoolBody(t, r, id); !strings.Contains(b, " with UTF8SMTP id ") {
		t.Errorf("Received header without UTF8SMTP: %q", b[:min(200, len(b))])
	}
}

// EHLO advertises RCPTMAX=1000 (max_recipients): a transaction of that
// many fits the command limit's default.
func TestDialogMaxRecipientsFitsCommandLimit(t *testing.T) {
	r := quietRelay(t, relayOpts{noDelivery: true, cfg: func(c *Config) { c.PassUnknown, c.MaxRecipients = true, 1000 }})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.cmd("MAIL FROM:<alice@example.org>", "250")
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "RCPT TO:<u%d@company.com>\r\n", i)
	}
	c.send(b.String())
	for i := range 1000 {
		if rep := c.expect(""); !strings.HasPrefix(rep, "250") {
			t.Fatalf("RCPT %d: %q", i+1, rep)
		}
	}
	c.cmd("DATA", "354")
	c.cmd("Subject: 1000\r\n\r\nx\r\n.", "250 2.0.0 Ok: queued as ")
}

// NOOP, RSET, VRFY and HELP count: a session cannot idle on them.
func TestDialogJunkCommands(t *testing.T) {
	r := quietRelay(t, relayOpts{cfg: func(c *Config) { c.MaxJunkCommands = 3 }})
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.cmd("NOOP", "250")
	c.cmd("RSET", "250")
	c.cmd("VRFY postmaster", "252")
	c.cmd("NOOP", "421 4.7.0")
	c.expectClosed()
}

// Below the spool's free-space reserve MAIL gets 452 4.3.1 (before any
// byte is spooled), so what is left goes to delivery and bounces; a
// declared SIZE counts against it.
func TestDialogSpoolReserve(t *testing.T) {
	sp, err := queue.OpenSpool(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	r := quietRelay(t, relayOpts{spool: sp, noDelivery: true, cfg: func(c *Config) { c.MaxSize = 100 << 20 }})
	sp.MinFree = 1 << 60 // more than any disk has
	c := dialRaw(t, r.addr)
	c.ehlo("dialog.test")
	c.cmd("MAIL FROM:<alice@example.org>", "452 4.3.1")
	var st syscall.Statfs_t
	if err := syscall.Statfs(sp.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	sp.MinFree = int64(st.Bavail)*st.Bsize - 16<<20 // 16 MiB above the reserve
	c.cmd("MAIL FROM:<alice@example.org> SIZE=40000000", "452 4.3.1")
	c.cmd("MAIL FROM:<alice@example.org> SIZE=1000", "250 2.0.0")
	c.cmd("RCPT TO:<sales@company.com>", "250 2.0.0")
}
