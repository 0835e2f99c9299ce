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

// writeDSN writes a failure DSN (RFC 3464 multipart/report) for the failed
// recipients of env to w: a human-readable part, the per-recipient
// delivery-status part and the original message's header.
func writeDSN(w io.Writer, reportingMTA string, env *Envelope, failed []Recipient, origBody io.Reader, now time.Time) error {
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "mailfwd-" + hex.EncodeToString(rb[:])
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", reportingMTA)
	fmt.Fprintf(bw, "To: <%s>\r\n", env.From)
	fmt.Fprintf(bw, "Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(bw, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(bw, "Message-ID: <%s.dsn@%s>\r\n", env.ID, reportingMTA)
	fmt.Fprintf(bw, "Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(bw, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(bw, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(bw, "This is a MIME-encapsulated message.\r\n\r\n--%s\r\n", boundary)
	fmt.Fprintf(bw, "Content-Type: text/plain; charset=utf-8\r\n\r\n")
	fmt.Fprintf(bw, "This is the mail system at host %s.\r\n\r\n", reportingMTA)
	fmt.Fprintf(bw, "Your message (queue ID %s) could not be delivered to one or more\r\nrecipients. It is attached below.\r\n\r\n", env.ID)
	for _, r := range failed {
		fmt.Fprintf(bw, "<%s>: %s\r\n", r.Addr, oneLine(r.LastReply))
	}
	fmt.Fprintf(bw, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(bw, "Reporting-MTA: dns; %s\r\nX-Mailfwd-Queue-ID: %s\r\nArrival-Date: %s\r\n",
		reportingMTA, env.ID, env.Received.Format(time.RFC1123Z))
	for _, r := range failed {
		fmt.Fprintf(bw, "\r\n")
		if r.OrigTo != "" && !strings.EqualFold(r.OrigTo, r.Addr) {
			fmt.Fprintf(bw, "Original-Recipient: rfc822; %s\r\n", r.OrigTo)
		}
		fmt.Fprintf(bw, "Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n", r.Addr, dsnStatus(r.LastReply))
		fmt.Fprintf(bw, "Diagnostic-Code: smtp; %s\r\n", oneLine(r.LastReply))
	}
	fmt.Fprintf(bw, "\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
	// Headers only: the report must not carry (and re-send) the whole body.
	sc := bufio.NewScanner(origBody)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			break
		}
		fmt.Fprintf(bw, "%s\r\n", line)
	}
	fmt.Fprintf(bw, "\r\n--%s--\r\n", boundary)
	return bw.Flush()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// dsnStatus is the enhanced status code of a reply text ("550 5.1.1 ...").
func dsnStatus(reply string) string {
	f := strings.Fields(reply)
	if len(f) > 1 && strings.Count(f[1], ".") == 2 && (f[1][0] == '4' || f[1][0] == '5') {
		return f[1]
	}
	return "5.0.0"
}

// bounce queues a DSN to env's sender for its failed recipients. No DSN is
// sent for the null sender (RFC 5321 §4.5.5: no bounce of a bounce).
func (q *Scheduler) bounce(env *Envelope) error {
	var failed []Recipient
	for _, r := range env.Recipients {
		if r.Status == Failed {
			failed = append(failed, r)
		}
	}
	if len(failed) == 0 || env.From == "" {
		return nil
	}
	body, err := q.Spool.OpenBody(env.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	w, err := q.Spool.Create()
	if err != nil {
		return err
	}
	if err := writeDSN(w, q.hostname(), env, failed, body, time.Now()); err != nil {
		w.Abort()
		return err
	}
	now := time.Now()
	external := true
	if i := strings.LastIndexByte(env.From, '@'); i >= 0 && q.Local != nil {
		external = !q.Local(env.From[i+1:])
	}
	dsn := &Envelope{From: "", Received: now, NextAttempt: now.Add(q.Retry.Min),
		Recipients: []Recipient{{Addr: env.From, Status: Pending, External: external}}}
	if err := w.Commit(dsn); err != nil {
		return err
	}
	q.Log.Info("bounce queued", "queue_id", env.ID, "dsn_queue_id", dsn.ID, "to", env.From)
	q.Submit(dsn)
	return nil
}

func (q *Scheduler) hostname() string {
	if q.Hostname != "" {
		return q.Hostname
	}
	return "localhost"
}
