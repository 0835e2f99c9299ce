package queue

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"
)

// dsnKind is what a DSN reports.
type dsnKind int

const (
	dsnFailed dsnKind = iota
	dsnDelayed
)

// writeDSN writes a DSN (RFC 3464 multipart/report) about rcpts of env to
// w: a human-readable part, the delivery-status part, and the original
// message (RET=FULL) or its header (otherwise: the report must not carry,
// and re-send, whole bodies by default).
//
// The outside address of an external forward is a user's private mailbox:
// unless reveal, the DSN names the address the sender used instead, and of
// the remote reply only its codes (the text may repeat the address).
func writeDSN(w io.Writer, reportingMTA string, env *Envelope, rcpts []*Recipient, kind dsnKind, origBody io.Reader, now, retryUntil time.Time, reveal bool) error {
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "mailfwd-" + hex.EncodeToString(rb[:])
	bw := bufio.NewWriter(w)
	subject, intro := "Undelivered Mail Returned to Sender",
		"Your message could not be delivered to one or more recipients.\r\nIt is attached below."
	if kind == dsnDelayed {
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
		if r.expired {
			status = "4.4.7"
		}
		if kind == dsnDelayed {
			action, status = "delayed", dsnStatus(r.LastReply, "4.0.0")
			fmt.Fprintf(bw, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\nWill-Retry-Until: %s\r\n",
				shown(r, reveal), action, status, retryUntil.Format(time.RFC1123Z))
		} else {
			fmt.Fprintf(bw, "Final-Recipient: rfc822; %s\r\nAction: %s\r\nStatus: %s\r\n", shown(r, reveal), action, status)
		}
		if r.LastReply != "" {
			typ := "smtp"
			if r.expired && r.External && !reveal {
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
func shown(r *Recipient, reveal bool) string {
	if r.External && !reveal && r.OrigTo != "" {
		return r.OrigTo
	}
	return r.Addr
}

// diagnostic is the reply a DSN quotes for r.
func diagnostic(r *Recipient, reveal bool) string {
	if !r.External || reveal {
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
	if r.expired {
		return strings.TrimSpace(strings.Join(codes, " ") + " (the message could not be forwarded before it expired)")
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

// bounce queues a failure DSN to env's sender for the recipients that
// failed and were not reported yet, and marks them reported. No DSN goes
// to the null sender (RFC 5321 §4.5.5) or for NOTIFY=NEVER. The sender is
// the original (not SRS) one: it is who must hear of the failure.
func (q *Scheduler) bounce(env *Envelope) error {
	return q.notify(env, dsnFailed, func(r *Recipient) bool { return r.Status == Failed && !r.Bounced },
		func(r *Recipient) { r.Bounced = true }, "FAILURE")
}

// warnDelay queues a delay DSN for recipients still pending after the
// delay warning time, once each.
func (q *Scheduler) warnDelay(env *Envelope) error {
	err := q.notify(env, dsnDelayed, func(r *Recipient) bool { return r.Status == Pending && !r.DelayNotified },
		func(r *Recipient) { r.DelayNotified = true }, "DELAY")
	if err == nil {
		err = q.Spool.Update(env)
	}
	return err
}

func (q *Scheduler) notify(env *Envelope, kind dsnKind, due func(*Recipient) bool, mark func(*Recipient), want string) error {
	var report []*Recipient
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if !due(r) {
			continue
		}
		switch {
		case env.From == "" || !r.wants(want):
			mark(r) // nothing to send: reported as far as it will ever be
		case r.External && !q.forwardDSN(env):
			mark(r)
			q.Log.Info("no DSN for a failed forward: the sender was not authenticated (it would be backscatter)",
				"queue_id", env.ID, "from", env.From, "orig_to", r.OrigTo, "kind", want)
		default:
			report = append(report, r)
		}
	}
	if len(report) == 0 {
		return nil
	}
	body, err := q.Spool.OpenBody(env)
	if err != nil {
		return err
	}
	defer body.Close()
	w, err := q.Spool.Create()
	if err != nil {
		return err
	}
	now := q.now()
	var out io.Writer = w
	var signer DSNSigner
	if q.SignDSN != nil {
		signer = q.SignDSN()
		out = io.MultiWriter(w, signer)
	}
	if err := writeDSN(out, q.hostname(), env, report, kind, body, now, env.Received.Add(q.Lifetime), q.RevealForward); err != nil {
		w.Abort()
		return err
	}
	external := true
	if i := strings.LastIndexByte(env.From, '@'); i >= 0 && q.Local != nil {
		external = !q.Local(env.From[i+1:])
	}
	dsn := &Envelope{From: "", Received: now, NextAttempt: now.Add(q.Retry.Min),
		Recipients: []Recipient{{Addr: env.From, Status: Pending, External: external, DSNNotify: "NEVER"}}}
	if signer != nil {
		h, err := signer.Finish()
		if err != nil {
			q.Log.Warn("cannot DKIM-sign the DSN; sending it unsigned", "queue_id", env.ID, "err", err)
		}
		dsn.AuthHeader = h
	}
	if err := w.Commit(dsn); err != nil {
		return err
	}
	for _, r := range report {
		mark(r)
	}
	q.observe("dsn", map[dsnKind]string{dsnFailed: "failure", dsnDelayed: "delay"}[kind])
	kindName := map[dsnKind]string{dsnFailed: "bounce", dsnDelayed: "delay notice"}[kind]
	q.Log.Info(kindName+" queued", "queue_id", env.ID, "dsn_queue_id", dsn.ID, "to", env.From, "recipients", len(report))
	q.Submit(dsn)
	return nil
}

// ForwardDSN decides which senders hear about failed external forwards.
type ForwardDSN string

const (
	// ForwardDSNAuthenticated (the default): only a sender authenticated at
	// our edge (Envelope.SenderAuth). Mail from a forged sender that a
	// user's outside mailbox refuses would otherwise bounce to the forged
	// address: backscatter, which gets our IP listed.
	ForwardDSNAuthenticated ForwardDSN = "authenticated"
	ForwardDSNAlways        ForwardDSN = "always"
	ForwardDSNNever         ForwardDSN = "never"
)

func (q *Scheduler) forwardDSN(env *Envelope) bool {
	switch q.ForwardDSN {
	case ForwardDSNAlways:
		return true
	case ForwardDSNNever:
		return false
	}
	return env.SenderAuth != ""
}

func (q *Scheduler) hostname() string {
	if q.Hostname != "" {
		return q.Hostname
	}
	return "localhost"
}
