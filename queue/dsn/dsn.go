// Package dsn writes delivery status notifications (RFC 3464): what a
// sender gets back when mail to some of its recipients failed, expired or
// is delayed. Which recipients are reported, and when, is the scheduler's
// decision (queue); this package decides only what a DSN says, including
// what it must not reveal of a forward's outside address.
package dsn

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"mailfwd/queue/envelope"
)

// Kind is what a DSN reports.
type Kind int

const (
	Failure Kind = iota // recipients that failed (or expired)
	Delay               // recipients still being retried
)

// Report is one DSN to write.
type Report struct {
	ReportingMTA string // our host name
	Envelope     *envelope.Envelope
	Recipients   []*envelope.Recipient // those reported
	Kind         Kind
	// Original is the message as received: quoted whole (RET=FULL) or its
	// header.
	Original        io.Reader
	Now, RetryUntil time.Time
	// Reveal: name the outside address of external forwards and quote their
	// MX's reply text (see Write).
	Reveal bool
}

// Write writes a DSN (RFC 3464 multipart/report) to w: a human-readable part, the delivery-status part, and the original
// message (RET=FULL) or its header (otherwise: the report must not carry,
// and re-send, whole bodies by default).
//
// The outside address of an external forward is a user's private mailbox:
// unless reveal, the DSN names the address the sender used instead, and of
// the remote reply only its codes (the text may repeat the address).
func Write(w io.Writer, rep Report) error {
	reportingMTA, env, rcpts, kind, origBody, now, retryUntil, reveal :=
		rep.ReportingMTA, rep.Envelope, rep.Recipients, rep.Kind, rep.Original, rep.Now, rep.RetryUntil, rep.Reveal
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "mailfwd-" + hex.EncodeToString(rb[:])
	bw := bufio.NewWriter(w)
	subject, intro := "Undelivered Mail Returned to Sender",
		"Your message could not be delivered to one or more recipients.\r\nIt is attached below."
	if kind == Delay {
		subject, intro = "Delayed Mail (still being retried)",
			"Your message has not been delivered yet to the recipients below.\r\nIt is still being retried; you do not need to resend it."
	}
	fmt.Fprintf(bw, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", reportingMTA)
	fmt.Fprintf(bw, "To: <%s>\r\n", env.From)
	fmt.Fprintf(bw, "Subject: %s\r\n", subject)
	fmt.Fprintf(bw, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(bw, "Message-ID: <%s.%d.dsn@%s>\r\n", env.ID, now.UnixNano(), reportingMTA)
	fmt.Fprintf(bw, "Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(bw, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(bw, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(bw, "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n", boundary)
	fmt.Fprintf(bw, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(bw, "This is the mail system at host %s.\r\n\r\n%s\r\n(queue ID %s)\r\n\r\n", reportingMTA, intro, env.ID)
	for _, r := range rcpts {
		fmt.Fprintf(bw, "<%s>: %s\r\n", shown(r, reveal), diagnostic(r, reveal))
	}
	fmt.Fprintf(bw, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(bw, "Reporting-MTA: dns; %s\r\n", reportingMTA)
	if env.DSNEnvID != "" {
		fmt.Fprintf(bw, "Original-Envelope-Id: %s\r\n", env.DSNEnvID)
	}
	fmt.Fprintf(bw, "X-Mailfwd-Queue-ID: %s\r\nArrival-Date: %s\r\n", env.ID, env.Received.Format(time.RFC1123Z))
	for _, r := range rcpts {
		fmt.Fprintf(bw, "\r\n")
		switch {
		case r.ORcpt != "":
			fmt.Fprintf(bw, "Original-Recipient: %s\r\n", strings.Replace(r.ORcpt, ";", "; ", 1))
		case r.OrigTo != "" && !strings.EqualFold(r.OrigTo, shown(r, reveal)):
			fmt.Fprintf(bw, "Original-Recipient: rfc822; %s\r\n", r.OrigTo)
		}
		action, status := "failed", dsnStatus(r.LastReply, "5.0.0")
		if r.Expired {
			status = "4.4.7"
		}
		if kind == Delay {
			action, status = "delayed", dsnStatus(r.LastReply, "4.0.0")
			fmt.Fprintf(bw, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\nWill-Retry-Until: %s\r\n",
				shown(r, reveal), action, status, retryUntil.Format(time.RFC1123Z))
		} else {
			fmt.Fprintf(bw, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", shown(r, reveal), action, status)
		}
		if r.LastReply != "" {
			typ := "smtp"
			if r.Expired && r.Forward && !reveal {
				typ = "X-Mailfwd" // no SMTP reply to quote
			}
			fmt.Fprintf(bw, "Diagnostic-Code: %s; %s\r\n", typ, diagnostic(r, reveal))
		}
	}
	if strings.EqualFold(env.DSNRet, "FULL") {
		fmt.Fprintf(bw, "\r\n--%s\r\nContent-Type: message/rfc822\r\n\r\n", boundary)
		if _, err := io.Copy(bw, origBody); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(bw, "\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
		sc := bufio.NewScanner(origBody)
		sc.Buffer(make([]byte, 0, 4096), 1<<20)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			if line == "" {
				break
			}
			fmt.Fprintf(bw, "%s\r\n", line)
		}
	}
	fmt.Fprintf(bw, "\r\n--%s--\r\n", boundary)
	return bw.Flush()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// shown is the recipient a DSN names.
func shown(r *envelope.Recipient, reveal bool) string {
	if r.Forward && !reveal && r.OrigTo != "" {
		return r.OrigTo
	}
	return r.Addr
}

// diagnostic is the reply a DSN quotes for r.
func diagnostic(r *envelope.Recipient, reveal bool) string {
	if !r.Forward || reveal {
		return oneLine(r.LastReply)
	}
	f := strings.Fields(r.LastReply)
	codes := []string{}
	if len(f) > 0 && len(f[0]) == 3 && (f[0][0] == '4' || f[0][0] == '5') {
		codes = append(codes, f[0])
		if len(f) > 1 && strings.Count(f[1], ".") == 2 {
			codes = append(codes, f[1])
		}
	}
	if r.Expired {
		return strings.TrimSpace(strings.Join(codes, " ") + " (the message could not be forwarded before it expired)")
	}
	if len(codes) == 2 && codes[1] == "5.6.7" { // what it means is no secret
		return strings.TrimSpace(strings.Join(codes, " ") + " (the message needs SMTPUTF8: a UTF-8 address or header, and the destination this address forwards to does not support it)")
	}
	return strings.TrimSpace(strings.Join(codes, " ") + " (the destination this address forwards to did not take the message)")
}

// dsnStatus is the enhanced status code of a reply text ("550 5.1.1 ..."),
// or def.
func dsnStatus(reply, def string) string {
	f := strings.Fields(reply)
	if len(f) > 1 && strings.Count(f[1], ".") == 2 && (f[1][0] == '4' || f[1][0] == '5') {
		return f[1]
	}
	return def
}
