//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 4 end to end: an external forward leaves with an SRS0 sender, a
// local delivery keeps the original sender, a bounce to the SRS0 address
// reaches the original sender, and a forged one is refused at RCPT.
func TestSRSForwardAndBounce(t *testing.T) {
	tok := suite.token(t)
	sendSwaks(t, suite.relay.addr, tok, "internal.user@company.com")
	fwd := suite.arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)[0]
	if !strings.HasPrefix(fwd.MailFrom, "SRS0=") || !strings.HasSuffix(fwd.MailFrom, "=example.org=alice@"+srsDomain) {
		t.Fatalf("external forward sent with MAIL FROM <%s>, want SRS0=…=example.org=alice@%s", fwd.MailFrom, srsDomain)
	}
	// What the binary's own SRS encoder makes of the sender today.
	secrets := filepath.Join(t.TempDir(), "secrets")
	os.WriteFile(secrets, []byte(srsSecret+"\n"), 0o600)
	want, err := exec.Command(suite.binary, "srs", "forward", "-secrets", secrets, "-domain", srsDomain, "alice@example.org").Output()
	if err != nil || strings.TrimSpace(string(want)) != fwd.MailFrom {
		t.Fatalf("mailfwd srs forward says %q (%v), the relay sent %q", want, err, fwd.MailFrom)
	}

	tok = suite.token(t)
	sendSwaks(t, suite.relay.addr, tok, "sales@company.com")
	if local := suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)[0]; local.MailFrom != "alice@example.org" {
		t.Fatalf("local delivery sent with MAIL FROM <%s>, want the original sender", local.MailFrom)
	}

	// The far end bounces to the SRS address: it reaches Alice, from <>.
	tok = suite.token(t)
	out, err := swaks(t, suite.relay.addr, "--from", "<>", "--to", fwd.MailFrom, "--header", "Subject: "+tok)
	if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("bounce to %s: %v\n%s", fwd.MailFrom, err, out)
	}
	if b := suite.arrived(t, tok, map[string]int{"alice@example.org": 1}, 30*time.Second)[0]; b.MailFrom != "" {
		t.Fatalf("bounce delivered with MAIL FROM <%s>, want <>", b.MailFrom)
	}

	// Forged: a hash we did not make.
	at := strings.LastIndexByte(fwd.MailFrom, '@')
	parts := strings.SplitN(fwd.MailFrom[:at], "=", 3) // SRS0, hash, rest
	forged := fmt.Sprintf("SRS0=%s=%s@%s", flip(parts[1]), parts[2], srsDomain)
	out, _ = swaks(t, suite.relay.addr, "--from", "<>", "--to", forged, "--quit-after", "RCPT")
	if got := replyTo(out, "RCPT TO:"); !strings.HasPrefix(got, "550 5.7.1") {
		t.Fatalf("forged %s: RCPT reply %q, want 550 5.7.1\n%s", forged, got, out)
	}
}

// flip changes every character of a hash, staying in its alphabet.
func flip(h string) string {
	b := []byte(h)
	for i, c := range b {
		if c == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
	}
	return string(b)
}
