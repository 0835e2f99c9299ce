package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Reply is a next hop's answer for one recipient.
type Reply struct {
	Code     int
	Enhanced string // "5.1.1", or "" if the server sent none
	Text     string
}

func (r Reply) String() string {
	if r.Enhanced != "" {
		return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
	}
	return fmt.Sprintf("%d %s", r.Code, r.Text)
}

// Permanent reports a 5xx reply.
func (r Reply) Permanent() bool { return r.Code >= 500 }

// OK reports a 2xx reply.
func (r Reply) OK() bool { return r.Code >= 200 && r.Code < 300 }

// SMTPHop delivers to one SMTP next hop (Postfix, a smarthost), keeping
// idle connections for reuse: a new TCP connection and EHLO per message is
// what makes a relay slow.
type SMTPHop struct {
	Addr      string // host:port
	LocalName string // our EHLO name
	Timeout   time.Duration
	IdleTime  time.Duration // how long an idle connection is kept
	MaxIdle   int

	mu   sync.Mutex
	idle []idleConn
}

type idleConn struct {
	c     *smtp.Client
	since time.Time
}

func (h *SMTPHop) String() string { return "smtp:[" + h.Addr + "]" }

func (h *SMTPHop) get(ctx context.Context) (c *smtp.Client, reused bool, err error) {
	h.mu.Lock()
	for len(h.idle) > 0 {
		ic := h.idle[len(h.idle)-1]
		h.idle = h.idle[:len(h.idle)-1]
		if time.Since(ic.since) < h.idleTime() {
			h.mu.Unlock()
			return ic.c, true, nil
		}
		go ic.c.Close()
	}
	h.mu.Unlock()
	d := net.Dialer{Timeout: h.timeout()}
	conn, err := d.DialContext(ctx, "tcp", h.Addr)
	if err != nil {
		return nil, false, err
	}
	c = smtp.NewClient(conn)
	c.CommandTimeout = h.timeout()
	c.SubmissionTimeout = 10 * time.Minute
	if err := c.Hello(h.LocalName); err != nil {
		c.Close()
		return nil, false, err
	}
	return c, false, nil
}

func (h *SMTPHop) put(c *smtp.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.idle) >= h.maxIdle() {
		go c.Quit()
		return
	}
	h.idle = append(h.idle, idleConn{c, time.Now()})
}

func (h *SMTPHop) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 30 * time.Second
}

func (h *SMTPHop) idleTime() time.Duration {
	if h.IdleTime > 0 {
		return h.IdleTime
	}
	return 30 * time.Second
}

func (h *SMTPHop) maxIdle() int {
	if h.MaxIdle > 0 {
		return h.MaxIdle
	}
	return 16
}

// Close drops idle connections.
func (h *SMTPHop) Close() {
	h.mu.Lock()
	idle := h.idle
	h.idle = nil
	h.mu.Unlock()
	for _, ic := range idle {
		ic.c.Quit()
	}
}

// Send runs one SMTP transaction. It returns one Reply per recipient, or
// an error when the transaction failed as a whole before any recipient got
// a definite answer (connection refused, dropped, timed out): all
// recipients are then to be retried.
func (h *SMTPHop) Send(ctx context.Context, env *Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	c, reused, err := h.get(ctx)
	if err != nil {
		return nil, err
	}
	replies, err := h.transaction(c, env, from, rcpts, body)
	if err != nil && reused && !isSMTPError(err) && !bodyStarted(err) {
		// A pooled connection the server had already closed: once more on a
		// fresh one.
		c.Close()
		if c, _, err = h.get(ctx); err != nil {
			return nil, err
		}
		replies, err = h.transaction(c, env, from, rcpts, body)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	h.put(c)
	return replies, nil
}

type bodyError struct{ err error }

func (e bodyError) Error() string { return "sending body: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

func bodyStarted(err error) bool { var b bodyError; return errors.As(err, &b) }

func isSMTPError(err error) bool { var se *smtp.SMTPError; return errors.As(err, &se) }

func replyOf(err error) (Reply, bool) {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return Reply{}, false
	}
	r := Reply{Code: se.Code, Text: se.Message}
	if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
		r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
	}
	return r, true
}

func all(n int, r Reply) []Reply {
	out := make([]Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// transaction returns a non-nil error only when the connection is no
// longer usable; SMTP refusals come back as Replies.
func (h *SMTPHop) transaction(c *smtp.Client, env *Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	opts := &smtp.MailOptions{UTF8: env.SMTPUTF8}
	if env.Body8Bit {
		opts.Body = smtp.Body8BitMIME
	}
	if err := c.Mail(from, opts); err != nil {
		if r, ok := replyOf(err); ok {
			return all(len(rcpts), r), c.Reset()
		}
		return nil, err
	}
	replies := make([]Reply, len(rcpts))
	accepted := 0
	for i, rc := range rcpts {
		err := c.Rcpt(rc, nil)
		if err == nil {
			replies[i] = Reply{Code: 250, Text: "recipient ok"}
			accepted++
			continue
		}
		r, ok := replyOf(err)
		if !ok {
			return nil, err
		}
		replies[i] = r
	}
	if accepted == 0 {
		return replies, c.Reset()
	}
	w, err := c.Data()
	if err != nil {
		r, ok := replyOf(err)
		if !ok {
			return nil, err
		}
		for i := range replies {
			if replies[i].OK() {
				replies[i] = r
			}
		}
		return replies, c.Reset()
	}
	if _, err := io.Copy(w, body); err != nil {
		w.Close()
		return nil, bodyError{err}
	}
	resp, err := w.CloseWithResponse()
	final := Reply{Code: 250, Text: "queued"}
	if err != nil {
		r, ok := replyOf(err)
		if !ok {
			return nil, bodyError{err}
		}
		final = r
	} else if resp != nil {
		final.Text = strings.TrimSpace(resp.StatusText)
	}
	for i := range replies {
		if replies[i].OK() {
			replies[i] = final
		}
	}
	return replies, nil
}
