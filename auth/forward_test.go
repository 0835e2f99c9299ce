package auth

import (
	"strings"
	"testing"
)

// applied is the message as the queue sends a rewritten forward: our
// fields, then the message with the From field replaced.
func applied(v *Verdict, msg string) string {
	rw := v.FromRewrite
	return rw.ForwardHeader + v.Header + msg[:rw.Offset] + rw.Fields + msg[rw.Offset+rw.Length:]
}

func TestDMARCForwarding(t *testing.T) {
	cfg := func(c *Config) {
		c.FromRewrite = &FromRewriting{Address: "forwarded@relay.example.net", Via: "relay.example.net"}
	}
	spfOnly := origMsg // not signed: DMARC passes here through SPF alone
	withReplyTo := strings.Replace(origMsg, "To: bob@company.com\r\n", "To: bob@company.com\r\nReply-To: list@example.org\r\n", 1)
	for _, c := range []struct {
		name    string
		dmarc   string // the _dmarc.example.org record
		from    string // MAIL FROM
		msg     string
		want    string
		replyTo bool // a Reply-To is added
	}{
		{"p=reject, SPF only", "v=DMARC1; p=reject", "alice@example.org", spfOnly, ForwardRewritten, true},
		{"p=quarantine, SPF only", "v=DMARC1; p=quarantine", "alice@example.org", spfOnly, ForwardRewritten, true},
		{"p=reject, has a Reply-To", "v=DMARC1; p=reject", "alice@example.org", withReplyTo, ForwardRewritten, false},
		{"p=reject, aligned DKIM survives", "v=DMARC1; p=reject", "alice@example.org", "DKIM", ForwardAlignedDKIM, false},
		{"p=none", "v=DMARC1; p=none", "alice@example.org", spfOnly, ForwardNoPolicy, false},
		{"t=y (testing)", "v=DMARC1; p=reject; t=y", "alice@example.org", spfOnly, ForwardNoPolicy, false},
		{"pct=0", "v=DMARC1; p=reject; pct=0", "alice@example.org", spfOnly, ForwardNoPolicy, false},
		{"no DMARC record", "", "alice@example.org", spfOnly, ForwardNoPolicy, false},
		{"spoofed: DMARC fails here", "v=DMARC1; p=reject", "mallory@evil.example", spfOnly, ForwardFailed, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t, cfg)
			if c.dmarc == "" {
				delete(e.dns.txt, "_dmarc.example.org")
			} else {
				e.dns.txt["_dmarc.example.org"] = []string{c.dmarc}
			}
			msg := c.msg
			if msg == "DKIM" {
				msg = signed(t, origMsg, rsaA, "s1")
			}
			v := e.check(e.in(c.from), msg, 3)
			if v.Err != nil {
				t.Fatal(v.Err)
			}
			if v.Forwarding != c.want {
				t.Fatalf("outcome %q, want %q (dmarc %+v)", v.Forwarding, c.want, v.Results.DMARC)
			}
			if (v.FromRewrite != nil) != (c.want == ForwardRewritten) {
				t.Fatalf("FromRewrite %+v with outcome %s", v.FromRewrite, v.Forwarding)
			}
			if v.FromRewrite == nil {
				return
			}
			out := applied(v, msg)
			hdr := out[:strings.Index(out, "\r\n\r\n")+2]
			for _, want := range []string{
				"From: \"Alice via relay.example.net\" <forwarded@relay.example.net>\r\n",
				"X-Original-From: Alice <alice@example.org>\r\n",
			} {
				if !strings.Contains(hdr, want) {
					t.Errorf("header lacks %q:\n%s", want, hdr)
				}
			}
			if got := strings.Count(hdr, "\nFrom:") + strings.Count(hdr[:5], "From:"); got != 1 {
				t.Errorf("%d From fields:\n%s", got, hdr)
			}
			if strings.Contains(hdr, "Reply-To: Alice <alice@example.org>") != c.replyTo {
				t.Errorf("Reply-To added: %v, want %v:\n%s", !c.replyTo, c.replyTo, hdr)
			}
			if !c.replyTo && c.msg == withReplyTo && !strings.Contains(hdr, "Reply-To: list@example.org\r\n") {
				t.Errorf("the message's own Reply-To is gone:\n%s", hdr)
			}
			// Our DKIM signature verifies over the rewritten message, and is
			// aligned with the new From (d=relay.example.net).
			vs := verifyAll(t, e.dns, out)
			ok := false
			for _, x := range vs {
				if x.Domain == "relay.example.net" && x.Err == nil {
					ok = true
				}
				if x.Domain == "relay.example.net" && x.Err != nil {
					t.Errorf("our signature over the rewritten message: %v", x.Err)
				}
			}
			if !ok {
				t.Errorf("no valid signature of ours on the rewritten message:\n%s", out)
			}
			// The body is the sender's, unchanged.
			if !strings.HasSuffix(out, msg[strings.Index(msg, "\r\n\r\n"):]) {
				t.Error("the body changed")
			}
		})
	}
	// off: no decision is made
	e := setup(t, nil)
	if v := e.check(e.in("alice@example.org"), spfOnly, 0); v.Forwarding != ForwardOff || v.FromRewrite != nil {
		t.Errorf("not configured: %q %+v", v.Forwarding, v.FromRewrite)
	}
	// not a forward: nothing
	e = setup(t, cfg)
	in := e.in("alice@example.org")
	in.Forward = false
	if v := e.check(in, spfOnly, 0); v.Forwarding != "" || v.FromRewrite != nil {
		t.Errorf("not a forward: %q %+v", v.Forwarding, v.FromRewrite)
	}
}

func TestRewrittenFrom(t *testing.T) {
	cfg := &FromRewriting{Address: "forwarded@company.com", Via: "company.com"}
	for in, want := range map[string]string{
		"Alice <alice@example.org>":                `"Alice via company.com" <forwarded@company.com>`,
		"alice@example.org":                        `"alice at example.org via company.com" <forwarded@company.com>`,
		"=?utf-8?q?J=C3=B6rg?= <jorg@example.org>": `=?utf-8?b?SsO2cmcgdmlhIGNvbXBhbnkuY29t?= <forwarded@company.com>`, // "Jörg via company.com"
		`"Smith, John" <john@example.org>`:         `"Smith, John via company.com" <forwarded@company.com>`,
		"broken <<<":                               `"broken via company.com" <forwarded@company.com>`,
		"Evil\r\n\tInjected: x <e@example.org>":    `"EvilInjected: x <e at example.org via company.com" <forwarded@company.com>`, // no line break survives
	} {
		if got := rewrittenFrom(in, cfg); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}
