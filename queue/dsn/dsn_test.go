package dsn

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"mailfwd/internal/golden"
	"mailfwd/queue/envelope"
)

// The DSNs we generate, byte for byte (boundary normalised), as golden
// files: a failed local recipient, a failed forward (the outside address
// hidden, then revealed), a forward expired, a delayed forward.
func TestDSNGolden(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	env := &envelope.Envelope{ID: "6619B0A1B2C3D4E5F60", From: "alice@example.org", Received: now.Add(-2 * time.Hour), DSNEnvID: "env-42"}
	local := &envelope.Recipient{Addr: "central@company.com", OrigTo: "sales@company.com", Status: envelope.Failed,
		LastReply: "550 5.1.1 <central@company.com>: Recipient address rejected: User unknown"}
	fwd := &envelope.Recipient{Addr: "john.private@gmail.example", OrigTo: "john@company.com", Forward: true, Status: envelope.Failed,
		LastReply: "550 5.1.1 The email account <john.private@gmail.example> that you tried to reach does not exist"}
	expired := &envelope.Recipient{Addr: "john.private@gmail.example", OrigTo: "john@company.com", Forward: true, Status: envelope.Failed,
		LastReply: "message expired after 120h0m0s in the queue; last error: 451 4.7.1 <john.private@gmail.example> greylisted", Expired: true}
	delayed := &envelope.Recipient{Addr: "john.private@gmail.example", OrigTo: "john@company.com", Forward: true, Status: envelope.Pending,
		LastReply: "421 4.7.0 [192.0.2.9] try again later, john.private@gmail.example"}
	utf8 := &envelope.Recipient{Addr: "j\u00f6rg@gmail.example", OrigTo: "john@company.com", Forward: true, Status: envelope.Failed,
		LastReply: "553 5.6.7 SMTPUTF8 is required (the recipient address is not ASCII), but was not offered by host smtp:[192.0.2.9:25]"}
	orig := "Received: from client.example\r\nFrom: Alice <alice@example.org>\r\nTo: john@company.com\r\nSubject: lunch\r\nMessage-ID: <m1@example.org>\r\n\r\nthe body\r\n"
	for _, c := range []struct {
		name   string
		rcpts  []*envelope.Recipient
		kind   Kind
		reveal bool
	}{
		{"failed-local", []*envelope.Recipient{local}, Failure, false},
		{"failed-forward", []*envelope.Recipient{fwd}, Failure, false},
		{"failed-forward-revealed", []*envelope.Recipient{fwd}, Failure, true},
		{"expired-forward", []*envelope.Recipient{expired}, Failure, false},
		{"delayed-forward", []*envelope.Recipient{delayed}, Delay, false},
		{"failed-forward-smtputf8", []*envelope.Recipient{utf8}, Failure, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Write(&b, Report{ReportingMTA: "mx.company.com", Envelope: env, Recipients: c.rcpts, Kind: c.kind, Original: strings.NewReader(orig), Now: now, RetryUntil: now.Add(118 * time.Hour), Reveal: c.reveal}); err != nil {
				t.Fatal(err)
			}
			got := regexp.MustCompile(`mailfwd-[0-9a-f]{24}`).ReplaceAllString(b.String(), "mailfwd-BOUNDARY")
			path := filepath.Join("testdata", "dsn", c.name+".eml")
			golden.Check(t, path, []byte(got))
			hidden := !c.reveal && c.rcpts[0].Forward
			if leaks := strings.Contains(got, "john.private@gmail.example"); hidden && leaks {
				t.Errorf("the DSN names the outside address:\n%s", got)
			} else if !hidden && c.rcpts[0].Forward && !leaks {
				t.Errorf("revealed, but the outside address is missing:\n%s", got)
			}
		})
	}
}
