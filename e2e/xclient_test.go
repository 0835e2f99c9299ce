//go:build e2e

package e2e

// XCLIENT and XFORWARD against the real Postfix: nexthop.SMTPHop tells
// Postfix who the original client was, and Postfix logs (and, for
// XCLIENT, applies its access rules to) that client instead of us.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailfwd/queue/envelope"
	"mailfwd/queue/nexthop"
)

// A Postfix of its own for the XCLIENT tests: the shared one relays only
// for mynetworks = 127.0.0.0/8, and under XCLIENT the client is
// 192.0.2.7, whom it refuses (TestXCLIENTAccessRules shows that).
const xclientPFPort = "10029"

func startXclientPostfix(t *testing.T) map[string]string {
	t.Helper()
	pf := suite.startFreshPostfix(t, suite.serverDir("postfix-xclient"), xclientPFPort, "postfix-xclient.test", "mynetworks = 127.0.0.0/8, 192.0.2.0/24")
	return pf
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// sendHop sends one message with subject tok through hop and returns
// Postfix's queue ID.
func sendHop(t *testing.T, hop *nexthop.SMTPHop, env *envelope.Envelope, rcpt, tok string) string {
	t.Helper()
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@mailfwd.e2e.test>\r\n\r\nxclient test\r\n", env.From, rcpt, tok, tok)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	replies, err := hop.Send(ctx, env, env.From, []string{rcpt}, strings.NewReader(body))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	m := queuedAs.FindStringSubmatch(replies[0].Text)
	if !replies[0].OK() || m == nil {
		t.Fatalf("Postfix answered %s", replies[0])
	}
	return m[1]
}

// maillogLine waits for the line of Postfix's log that has pattern
// (a regexp) and returns it.
func maillogLine(t *testing.T, logFile, pattern string) string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logFile)
		for _, l := range strings.Split(string(b), "\n") {
			if re.MatchString(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			if len(b) > 3000 {
				b = b[len(b)-3000:]
			}
			t.Fatalf("no line matching %q in %s:\n%s", pattern, logFile, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestXCLIENT(t *testing.T) {
	pf := startXclientPostfix(t)
	for _, tc := range []struct {
		name              string
		xclient, xforward bool
		conns             int // Postfix connections for the three messages
		// what Postfix logs for each message (%[1]s: the client's
		// address, %[2]s: our queue ID), and what its Received: header
		// says (%[1]s: the client's address, %[2]s: its HELO; "": no check)
		wantLog, wantReceived string
	}{
		// XCLIENT: Postfix takes the message as if from the client itself
		// (one per client: Postfix refuses a second XCLIENT on a connection)
		{"XCLIENT", true, false, 2, `: client=unknown\[%[1]s\]$`, "from %[2]s (unknown [%[1]s])"},
		// XFORWARD: for logging only; Postfix logs the connection's client
		// and the forwarded one, with our queue ID
		{"XFORWARD", false, true, 1, `: client=localhost\[127\.0\.0\.1\], orig_queue_id=%[2]s, orig_client=unknown\[%[1]s\]$`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hop := &nexthop.SMTPHop{Addr: pf["PF_SMTP"], LocalName: "mailfwd.e2e.test", Timeout: 10 * time.Second,
				XClient: tc.xclient, XForward: tc.xforward}
			defer hop.Close()
			connects := strings.Count(readFile(t, pf["PF_LOG"]), "connect from localhost[127.0.0.1]")
			// three messages from two clients, the first one again last
			clients := []struct{ addr, helo string }{
				{"192.0.2.7", "client.example"}, {"192.0.2.8", "other.example"}, {"192.0.2.7", "client.example"},
			}
			for i, cl := range clients {
				tok := suite.token(t)
				rcpt := fmt.Sprintf("%s-%d@domain.ro", strings.ToLower(tc.name), i)
				env := &envelope.Envelope{ID: fmt.Sprintf("E2E%s%d%d", tc.name, os.Getpid(), i), From: "alice@example.org",
					ClientAddr: cl.addr, ClientHelo: cl.helo,
					Recipients: []envelope.Recipient{{Addr: rcpt, Status: envelope.Pending}}}
				qid := sendHop(t, hop, env, rcpt, tok)
				line := maillogLine(t, pf["PF_LOG"], " "+qid+`: client=`)
				wantLog := fmt.Sprintf(tc.wantLog, regexp.QuoteMeta(cl.addr), env.ID)
				if !regexp.MustCompile(wantLog).MatchString(line) {
					t.Errorf("message %d: Postfix logged\n%s\nwant %s", i, line, wantLog)
				}
				d := suite.arrived(t, tok, map[string]int{rcpt: 1}, 30*time.Second)
				if tc.wantReceived != "" {
					want := fmt.Sprintf(tc.wantReceived, cl.addr, cl.helo)
					if !bytes.Contains(d[0].Raw, []byte(want)) {
						t.Errorf("message %d: no %q in what Postfix passed on:\n%s", i, want, d[0].RawHeader)
					}
				}
			}
			if n := strings.Count(readFile(t, pf["PF_LOG"]), "connect from localhost[127.0.0.1]") - connects; n != tc.conns {
				t.Errorf("%d connections for 3 messages, want %d", n, tc.conns)
			}
			if t.Failed() {
				var smtpd []string
				for _, l := range strings.Split(readFile(t, pf["PF_LOG"]), "\n") {
					if strings.Contains(l, "postfix/smtpd[") {
						smtpd = append(smtpd, l)
					}
				}
				t.Logf("Postfix smtpd log:\n%s", strings.Join(smtpd, "\n"))
			}
		})
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Under XCLIENT, Postfix applies its rules to the original client: the
// shared Postfix relays for 127.0.0.0/8 only, so it refuses 192.0.2.7 at
// RCPT (and logs it by that address), while it takes the same message
// from us.
func TestXCLIENTAccessRules(t *testing.T) {
	hop := &nexthop.SMTPHop{Addr: suite.servers["PF_SMTP"], LocalName: "mailfwd.e2e.test", Timeout: 10 * time.Second, XClient: true}
	defer hop.Close()
	rcpt := "xclient-denied@domain.ro"
	env := &envelope.Envelope{ID: "E2EXCLIENTDENIED", From: "alice@example.org", ClientAddr: "192.0.2.9", ClientHelo: "denied.example",
		Recipients: []envelope.Recipient{{Addr: rcpt, Status: envelope.Pending}}}
	replies, err := hop.Send(context.Background(), env, env.From, []string{rcpt}, strings.NewReader("Subject: denied\r\n\r\nx\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := replies[0]; r.Code != 554 || r.Enhanced != "5.7.1" {
		t.Fatalf("reply %s, want 554 5.7.1 (relay access denied)", r)
	}
	maillogLine(t, suite.servers["PF_LOG"], `NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.9\]: 554 5\.7\.1 <xclient-denied@domain\.ro>: .* helo=<denied\.example>`)
	// the same message without XCLIENT is ours: accepted
	tok := suite.token(t)
	plain := &nexthop.SMTPHop{Addr: suite.servers["PF_SMTP"], LocalName: "mailfwd.e2e.test", Timeout: 10 * time.Second}
	defer plain.Close()
	sendHop(t, plain, env, rcpt, tok)
	suite.arrived(t, tok, map[string]int{rcpt: 1}, 30*time.Second)
}
