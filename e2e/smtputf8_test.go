//go:build e2e

package e2e

// SMTPUTF8 only when the message needs it (RFC 6531 3.4), against a real
// Postfix next hop with smtputf8_enable = no: a client that declares
// SMTPUTF8 on an all-ASCII message (Go's net/smtp always does when it is
// offered) gets its message delivered, without the parameter; a message
// whose sender address is UTF-8 cannot be, and its bounce says why.

import (
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawSend speaks SMTP line by line, so the test says exactly what the
// client declared.
func rawSend(t *testing.T, addr, mailFrom, rcpt, message string) {
	t.Helper()
	c, err := textproto.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect := func(code int, cmd string, args ...any) {
		t.Helper()
		if cmd != "" {
			if err := c.PrintfLine(cmd, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, msg, err := c.ReadResponse(code); err != nil {
			t.Fatalf("%s: %v %s", fmt.Sprintf(cmd, args...), err, msg)
		}
	}
	expect(220, "")
	expect(250, "EHLO client.e2e.test")
	expect(250, "MAIL FROM:<%s> BODY=8BITMIME SMTPUTF8", mailFrom)
	expect(250, "RCPT TO:<%s>", rcpt)
	expect(354, "DATA")
	w := c.DotWriter()
	w.Write([]byte(message))
	w.Close()
	expect(250, "")
	expect(221, "QUIT")
}

func TestSMTPUTF8OnlyWhenNeeded(t *testing.T) {
	pfAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, pfPort, _ := net.SplitHostPort(pfAddr)
	_, sinkPort, _ := net.SplitHostPort(suite.servers["SINK_ADDR"])
	pf := suite.startFreshPostfix(t, suite.serverDir("postfix-noutf8"), pfPort, "postfix-noutf8.test",
		"smtputf8_enable = no", "SINK_PORT="+sinkPort)

	dir := t.TempDir()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, filepath.Join(dir, "mailfwd.yaml"), "smtputf8/mailfwd.yaml", vars{"Listen": addr, "NextHop": pfAddr, "ExternalNextHop": suite.servers["SINK_ADDR"]})
	p, err := suite.startRelayConfig(dir, cfg, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()
	p.spool = filepath.Join(dir, "spool", "msg")

	t.Run("all-ASCII message declared SMTPUTF8 is delivered without it", func(t *testing.T) {
		tok := suite.token(t)
		rawSend(t, addr, "alice@example.org", "sales@company.com",
			"From: alice@example.org\r\nSubject: "+tok+"\r\n\r\nplain ASCII\r\n")
		d := suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 20*time.Second)
		if !strings.Contains(string(d[0].RawHeader), "postfix-noutf8.test") {
			t.Fatalf("not delivered through the Postfix without SMTPUTF8:\n%s", d[0].RawHeader)
		}
		b, _ := os.ReadFile(pf["PF_LOG"])
		if bytes.Contains(b, []byte("SMTPUTF8")) {
			t.Fatalf("Postfix's log mentions SMTPUTF8 (we sent the parameter?):\n%s", b)
		}
	})

	t.Run("UTF-8 sender address: not delivered, and the bounce says why", func(t *testing.T) {
		tok := suite.token(t)
		sender := "jösé@example.org"
		rawSend(t, addr, sender, "sales@company.com",
			"From: "+sender+"\r\nSubject: "+tok+"\r\n\r\nUTF-8 sender\r\n")
		// smtp-sink writes non-ASCII bytes as '?' in its dump headers.
		d := suite.arrived(t, tok, map[string]int{"j??s??@example.org": 1}, 20*time.Second)
		if d[0].MailFrom != "" {
			t.Fatalf("the bounce has sender <%s>, want <>", d[0].MailFrom)
		}
		body := string(d[0].Raw)
		for _, want := range []string{"5.6.7", "not ASCII", "Status: 5.6.7"} {
			if !strings.Contains(body, want) {
				t.Errorf("the bounce does not say %q:\n%s", want, body)
			}
		}
		if !strings.Contains(body, "central@company.com") && !strings.Contains(body, "sales@company.com") {
			t.Errorf("the bounce names no recipient:\n%s", body)
		}
		for _, got := range d {
			if len(got.Rcpts) == 1 && got.Rcpts[0] == "central@company.com" {
				t.Fatalf("the UTF-8 message was delivered: %s", got.File)
			}
		}
	})
}
