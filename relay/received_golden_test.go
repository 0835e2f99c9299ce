package relay

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mailfwd/internal/golden"
)

// The Received header we prepend, for the arrivals that change it, against
// testdata/received.golden: one "## name" section per case, the field as
// sent (CRLF shown as line ends). go test ./relay -run TestReceivedGolden
// -update rewrites it.
func TestReceivedGolden(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 0, time.FixedZone("", 3600))
	tls13 := &tls.ConnectionState{Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256}
	base := trace{helo: "mail.example.org", clientIP: "192.0.2.10", hostname: "mx.relay.example", id: "0RBqTQ4PzFvTR2c"}
	with := func(f func(*trace)) trace { t := base; f(&t); return t }
	cases := []struct {
		name string
		t    trace
	}{
		{"one recipient, in clear", with(func(t *trace) { t.forRcpt = "bob@company.com" })},
		{"several recipients: no for clause", base},
		{"STARTTLS: ESMTPS with the version and cipher", with(func(t *trace) { t.tls, t.forRcpt = tls13, "bob@company.com" })},
		{"SMTPUTF8 over TLS: UTF8SMTPS", with(func(t *trace) { t.utf8, t.tls, t.forRcpt = true, tls13, "bjørn@bücher.example" })},
		{"no HELO: unknown", with(func(t *trace) { t.helo = "" })},
		{"IPv6 client", with(func(t *trace) { t.clientIP = "2001:db8::25" })},
		{"a hostile HELO and recipient cannot break the field", with(func(t *trace) {
			t.helo, t.forRcpt = "evil)\r\nBcc: victim@example.com (x", "a\r\nX-Injected: 1@company.com"
		})},
	}
	var b strings.Builder
	for _, c := range cases {
		f := c.t.field(at)
		if !strings.HasSuffix(f, "\r\n") || strings.Count(f, "\r\n") != strings.Count(f, "\n") {
			t.Errorf("%s: not CRLF-terminated lines: %q", c.name, f)
		}
		for i, line := range strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n") {
			if i > 0 && !strings.HasPrefix(line, "\t") {
				t.Errorf("%s: line %d is not a continuation: %q", c.name, i+1, line)
			}
		}
		b.WriteString("## " + c.name + "\n" + strings.ReplaceAll(f, "\r\n", "\n") + "\n")
	}
	golden.Check(t, filepath.Join("testdata", "received.golden"), []byte(b.String()))
}
