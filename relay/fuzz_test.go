package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"crypto/tls"

	"mailfwd/deploy"
	"mailfwd/routing"
	"mailfwd/routing/directory"
)

// fuzzPreamble opens a transaction; the fuzzer's bytes follow it.
const fuzzPreamble = "EHLO fuzz.test\r\nMAIL FROM:<alice@example.org>\r\n"

var (
	replyLineRE = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)
	queuedAsRE  = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as ([0-9A-F]+)`)
)

// FuzzSession feeds arbitrary bytes, after EHLO and MAIL, as a client
// session to a running relay, then half-closes. The relay must answer
// with well-formed replies and close; go-smtp turns a panic in a handler
// into "421 4.0.0 Internal server error", which counts as a crash; and
// nothing may be queued for a recipient outside our domains, nor for one
// of ours whose local part carries a route, except the directory's own
// forward and the addresses verified SRS bounces decode to.
//
// mode picks the relay (mod 3): 0, the routing defaults of `mailfwd serve`
// (recipient delimiter "+", propagated extensions) with a domain rewrite
// domain.com → domain.ro; 1, the migration shim (unknown relay-domain
// addresses pass unchanged); 2, plain seed routing with STARTTLS offered.
func FuzzSession(f *testing.F) {
	rw := testSRS()
	seed, err := directory.NewLDIFBytes(deploy.SeedLDIF, directory.MailRecipientSchema)
	if err != nil {
		f.Fatal(err)
	}
	cert, _ := testCert(f)
	base := func(c *Config) {
		c.MaxSize = 64 << 10
		c.SRSFailureLimit = 1 << 30 // keep SRS addresses verified, not deferred
	}
	relays := []*testRelay{
		startTestRelay(f, relayOpts{quiet: true, noDelivery: true, srs: rw, cfg: base,
			exp: &routing.Expander{Source: seed, Delimiter: "+", KeepExtension: true,
				Rewrites: routing.DomainRewrites{"domain.com": "domain.ro"}, Limits: routing.PostfixLimits}}),
		startTestRelay(f, relayOpts{quiet: true, noDelivery: true, srs: rw, src: seed, cfg: func(c *Config) {
			base(c)
			c.PassUnknown = true
		}}),
		startTestRelay(f, relayOpts{quiet: true, noDelivery: true, srs: rw, src: seed, cfg: base,
			tls: &tls.Config{Certificates: []tls.Certificate{cert}}}),
	}

	// Seeds: every battery trick as a full transaction, and the dialog
	// suite's odd inputs.
	for i, tc := range relayTricks(f, rw) {
		var b strings.Builder
		if tc.from != "" {
			b.WriteString("MAIL FROM:" + tc.from + "\r\n")
		}
		b.WriteString("RCPT TO:" + tc.rcpt + "\r\nDATA\r\nSubject: fuzz\r\n\r\nhello\r\n.\r\nQUIT\r\n")
		f.Add(byte(i), []byte(b.String()))
	}
	for _, s := range []string{
		"",
		"RCPT TO:<sales@company.com>\r\nRCPT TO:<old.address@domain.com>\r\nDATA\r\nSubject: x\r\n\r\n..x\r\n.\r\n",
		"RCPT TO:<sales@company.com>\r\nDATA\r\nSubject: x\r\n\r\nhello\n.\nMAIL FROM:<s@evil.test>\r\nRCPT TO:<v@evil.test>\r\nDATA\r\nx\r\n.\r\n",
		"RCPT TO:<sales@company.com>\r\nBDAT 12\r\nSubject: b\r\nBDAT 3 LAST\r\n\r\nx",
		"RCPT TO:<sales@company.com>\r\nBDAT 100 LAST\r\nshort",
		"RCPT TO:<victim@evil.test>\r\nBDAT 5 LAST\r\nhello\r\nNOOP\r\n",
		"RCPT TO:<sales@company.com>\r\nMAIL FROM:<bad@x.>\r\nRCPT TO:<internal.user@company.com>\r\nDATA\r\nx\r\n.\r\n",
		"RCPT TO:<sales@company.com>\r\nMAIL FROM:<alice@example.org>\r\nDATA\r\nx\r\n.\r\n",
		"RCPT TO:<sales+x%evil.test@company.com>\r\nRCPT TO:<\"user@evil.test\"@domain.com>\r\nDATA\r\nx\r\n.\r\n",
		"RCPT TO:<sales@company.com> NOTIFY=SUCCESS ORCPT=rfc822;x+2B@evil.test\r\nDATA\r\nx\r\n.\r\n",
		"MAIL FROM:<j\xc3\xb6rg@example.org> SMTPUTF8 BODY=8BITMIME SIZE=10\r\nRCPT TO:<sales@company.com>\r\nDATA\r\n\xff\xfe\r\n.\r\n",
		"STARTTLS\r\nRSET\r\nVRFY x\r\nEXPN y\r\nHELO again\r\nRCPT TO:<sales@company.com>\r\n",
		"RCPT TO:<sales@company.com>\r\nDATA\r\n" + strings.Repeat("y", 5000) + "\r\n.\r\n",
		"NOOP " + strings.Repeat("x", 5000) + "\r\n",
		"RCPT TO:<sales@company.com>\rRCPT TO:<victim@evil.test>\r\nRCPT\x00TO:<v@evil.test>\r\n",
		// BDAT cut off by RSET, EHLO or another MAIL, then a whole message
		"RCPT TO:<sales@company.com>\r\nBDAT 5\r\nhelloRSET\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<sales@company.com>\r\nBDAT 5 LAST\r\nworld",
		"RCPT TO:<sales@company.com>\r\nBDAT 5\r\nhelloEHLO x\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<sales@company.com>\r\nBDAT 5 LAST\r\nworld",
		"RCPT TO:<sales@company.com>\r\nBDAT 5\r\nhelloMAIL FROM:<c@example.org>\r\nBDAT 5 LAST\r\nworld\r\nRSET\r\n",
		"RCPT TO:<sales@company.com>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\nRSET\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<sales@company.com>\r\nDATA\r\nx\r\n.\r\n",
		// bare CR and LF in the header: hidden fields
		"RCPT TO:<sales@company.com>\r\nDATA\r\nX-Pad: x\rAuthentication-Results: relay.test; dmarc=pass\r\nSubject: y\r\n\r\nz\r\n.\r\n",
		"RCPT TO:<sales@company.com>\r\nDATA\r\nSubject: a\nFrom: x@y\rReceived: by x\r\r\n\r\nbody\r\r.\r\n.\r\n",
	} {
		for mode := range byte(3) {
			f.Add(mode, []byte(s))
		}
	}

	f.Fuzz(func(t *testing.T, mode byte, data []byte) {
		r := relays[int(mode)%len(relays)]
		r.mu.Lock()
		r.envs = nil
		r.mu.Unlock()

		c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Write concurrently: the relay answers while we send, and both
		// socket buffers may fill up with a large input.
		wrote := make(chan error, 1)
		go func() {
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Write(append([]byte(fuzzPreamble), data...))
			c.(*net.TCPConn).CloseWrite()
			wrote <- err
		}()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		var replies []string
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				if l != "" {
					t.Fatalf("reply line %q cut off: %v", l, err)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("relay neither answered nor closed within 10s; replies so far: %q", replies)
				}
				if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
					t.Fatalf("read: %v", err)
				}
				break
			}
			if !strings.HasSuffix(l, "\r\n") || !replyLineRE.MatchString(l) {
				t.Fatalf("malformed reply line %q", l)
			}
			if strings.HasPrefix(l, "421 4.0.0 Internal server error") {
				t.Fatalf("the relay panicked (go-smtp recovered it): replies %q", append(replies, l))
			}
			replies = append(replies, l)
		}
		<-wrote
		if len(replies) < 3 || !strings.HasPrefix(replies[0], "220 ") {
			t.Fatalf("replies %q: no greeting or no answer to the preamble", replies)
		}
		// Every "queued as ID" is a message we hold, and every message we
		// hold was answered so, once (an aborted BDAT's result must never
		// answer another message).
		answered := map[string]int{}
		for _, l := range replies {
			if m := queuedAsRE.FindStringSubmatch(l); m != nil {
				answered[m[1]]++
			}
		}
		held := map[string]bool{}
		for _, q := range r.queued() {
			held[q.id] = true
			if answered[q.id] != 1 {
				t.Errorf("message %s queued but answered \"queued as\" %d times; replies %q", q.id, answered[q.id], replies)
			}
			// one line end only, CRLF: what a header hid behind a bare CR
			// or LF is a line to us too (lineends.go)
			if b := spoolBody(t, r, q.id); strings.Count(b, "\r") != strings.Count(b, "\n") || strings.Count(b, "\r\n") != strings.Count(b, "\n") {
				t.Errorf("message %s spooled with a bare CR or LF: %q", q.id, b)
			}
		}
		for id := range answered {
			if !held[id] {
				t.Errorf("answered \"queued as %s\" but nothing was queued under it; replies %q", id, replies)
			}
		}

		for _, q := range r.queued() {
			for i, a := range q.rcpts {
				allowed := directoryExternal
				// A verified SRS bounce may leave for the sender's domain;
				// decoded into ours, it is held to the same rule as any
				// recipient of ours.
				if orig, err := rw.Reverse(context.Background(), q.origTo[i]); err == nil && outsideOurDomains(orig) {
					allowed = append(allowed[:len(allowed):len(allowed)], orig, routing.WireForm(orig))
				}
				if why := foreignRecipient(a, allowed); why != "" {
					t.Errorf("queued %s for %q (RCPT %q): %s", q.id, a, q.origTo[i], why)
				}
			}
			r.spool.Remove(q.id)
		}
	})
}

// outsideOurDomains: addr's domain is not one of ours.
func outsideOurDomains(addr string) bool {
	return strings.HasPrefix(foreignRecipient(addr, nil), "domain ")
}
