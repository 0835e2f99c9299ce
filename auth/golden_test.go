package auth

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"mailfwd/internal/golden"
)

// goldenKey loads one of testdata/golden's keys (made for these tests only).
func goldenKey(t *testing.T, domain, selector, file string) *Key {
	t.Helper()
	k, err := LoadKey(domain, selector, filepath.Join("testdata", "golden", file))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The header fields we add to a checked message, byte for byte, against
// testdata/golden/NAME.result; each NAME.msg is the message as received
// (signed inputs were made once from origMsg with the sender's keys and are
// kept, so their signatures do not change). The DNS is fixed, as is the
// clock, and the relay's keys are testdata's: every
// Authentication-Results, ARC set and DKIM-Signature is reproducible.
// go test ./auth -run TestHeadersGolden -update rewrites the results.
func TestHeadersGolden(t *testing.T) {
	senderRSA := goldenKey(t, "example.org", "s1", "sender-rsa.pem")
	senderEd := goldenKey(t, "example.org", "ed", "sender-ed25519.pem")
	relay := goldenKey(t, "relay.example.net", "fwd", "relay-rsa.pem")
	dns := func() *fakeDNS {
		d := newDNS()
		d.publish(senderRSA)
		d.publish(senderEd)
		d.publish(relay)
		d.txt["example.org"] = []string{"v=spf1 ip4:192.0.2.10 -all"}
		d.txt["_dmarc.example.org"] = []string{"v=DMARC1; p=reject"}
		return d
	}
	signedBy := func(k *Key) func() string {
		return func() string {
			var b bytes.Buffer
			err := dkim.Sign(&b, strings.NewReader(origMsg), &dkim.SignOptions{Domain: k.Domain, Selector: k.Selector,
				Signer: k.Signer, HeaderCanonicalization: dkim.CanonicalizationRelaxed,
				BodyCanonicalization: dkim.CanonicalizationSimple,
				HeaderKeys:           []string{"From", "To", "Subject", "Date", "Message-ID"}})
			if err != nil {
				t.Fatal(err)
			}
			return b.String()
		}
	}
	sender, other := net.ParseIP("192.0.2.10"), net.ParseIP("198.51.100.7")
	const hop1 = "mx.relay.example.net"
	cases := []struct {
		name   string
		make   func() string // the input, when NAME.msg is missing
		in     Inbound
		dns    func(*fakeDNS)
		config func(*Config)
	}{
		{name: "forward-aligned-pass", make: signedBy(senderRSA),
			in: Inbound{ClientIP: sender, Helo: "mail.example.org", MailFrom: "alice@example.org", Forward: true}},
		{name: "forward-ed25519", make: signedBy(senderEd),
			in: Inbound{ClientIP: sender, Helo: "mail.example.org", MailFrom: "alice@example.org", Forward: true}},
		{name: "local-no-arc", make: signedBy(senderRSA),
			in: Inbound{ClientIP: sender, Helo: "mail.example.org", MailFrom: "alice@example.org"}},
		{name: "spf-fail-unsigned", make: func() string { return origMsg },
			in: Inbound{ClientIP: other, Helo: "spoof.example", MailFrom: "alice@example.org", Forward: true}},
		{name: "body-changed", make: func() string { return strings.Replace(signedBy(senderRSA)(), "Hi Bob", "Hi Eve", 1) },
			in: Inbound{ClientIP: sender, Helo: "mail.example.org", MailFrom: "alice@example.org", Forward: true}},
		{name: "null-sender-helo", make: signedBy(senderRSA),
			in:  Inbound{ClientIP: sender, Helo: "example.org", MailFrom: "", Forward: true},
			dns: func(d *fakeDNS) { d.txt["example.org"] = []string{"v=spf1 ip4:192.0.2.10 -all"} }},
		{name: "dns-down", make: signedBy(senderRSA),
			in:  Inbound{ClientIP: sender, Helo: "mail.example.org", MailFrom: "alice@example.org", Forward: true},
			dns: func(d *fakeDNS) { d.fail["*"] = true }},
		{name: "dmarc-from-rewritten", make: func() string { return origMsg },
			in: Inbound{ClientIP: sender, Helo: "mail.example.org", MailFrom: "alice@example.org", Forward: true},
			config: func(c *Config) {
				c.FromRewrite = &FromRewriting{Address: "forwarded@relay.example.net", Via: "relay.example.net"}
			}},
		// The first case's output as the next hop receives it: ARC i=2.
		{name: "second-hop-arc",
			make: func() string {
				b, err := os.ReadFile(filepath.Join("testdata", "golden", "forward-aligned-pass.result"))
				if err != nil {
					t.Fatal(err)
				}
				_, added, _ := strings.Cut(string(b), "\n\n")
				msg, _ := os.ReadFile(filepath.Join("testdata", "golden", "forward-aligned-pass.msg"))
				return strings.ReplaceAll(added, "\n", "\r\n") +
					"Received: from mx.relay.example.net by mx2.second.example; Mon, 01 Jan 2024 10:00:05 +0000\r\n" + string(msg)
			},
			in: Inbound{ClientIP: net.ParseIP("203.0.113.25"), Helo: hop1, MailFrom: "SRS0=x=KH=example.org=alice@relay.example.net", Forward: true},
			config: func(c *Config) {
				c.AuthServID = "mx2.second.example"
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msgPath := filepath.Join("testdata", "golden", c.name+".msg")
			msg, err := os.ReadFile(msgPath)
			if os.IsNotExist(err) {
				msg = []byte(c.make())
				err = os.WriteFile(msgPath, msg, 0o644)
				t.Logf("wrote the input %s", msgPath)
			}
			if err != nil {
				t.Fatal(err)
			}
			d := dns()
			if c.dns != nil {
				c.dns(d)
			}
			cfg := Config{AuthServID: hop1, Resolver: d, LookupTimeout: time.Second, Timeout: 3 * time.Second,
				ARCKey: relay, DKIMKey: relay, Now: func() time.Time { return time.Unix(1700000000, 0) }}
			if c.config != nil {
				c.config(&cfg)
			}
			a, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ch := a.Start(c.in)
			ch.Write(msg)
			v := ch.Finish()
			if v.Err != nil {
				t.Fatalf("signing: %v", v.Err)
			}
			var b strings.Builder
			fmt.Fprintf(&b, "# client %s helo %s mail from <%s> forward %v\n", c.in.ClientIP, c.in.Helo, c.in.MailFrom, c.in.Forward)
			fmt.Fprintf(&b, "# action %s forwarding %q\n", v.Action, v.Forwarding)
			added := v.ForwardHeader + v.Header
			if r := v.FromRewrite; r != nil {
				fmt.Fprintf(&b, "# From rewritten: %q\n", r.Fields)
				added = r.ForwardHeader + v.Header
			}
			b.WriteString("\n" + strings.ReplaceAll(added, "\r\n", "\n"))
			golden.Check(t, filepath.Join("testdata", "golden", c.name+".result"), []byte(b.String()))
		})
	}
}
