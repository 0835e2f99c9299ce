package nexthop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"mailfwd/queue/envelope"
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

// TLS policies of an SMTPHop.
const (
	TLSNone          = "none"          // never STARTTLS
	TLSOpportunistic = "opportunistic" // STARTTLS when offered, certificate not verified
	TLSRequire       = "require"       // STARTTLS or no delivery (4.7.x), certificate verified
)

// SMTPHop delivers to one SMTP (or LMTP) next hop: Postfix, a smarthost, a
// mailbox server. It keeps idle connections for reuse: a new TCP
// connection and EHLO per message is what makes a relay slow.
//
// What it negotiates, from the server's EHLO (LHLO) answer:
//   - PIPELINING (RFC 2920): [RSET,] [XFORWARD,] MAIL, every RCPT and DATA go
//     out in one write; the body only when some RCPT was accepted and DATA
//     got 354. Without it, one command at a time.
//   - STARTTLS per TLSPolicy (zero value: opportunistic). Opportunistic does
//     not verify the certificate (the norm between MTAs); a failed handshake
//     is retried at once in plaintext on a new connection (Postfix's "may"
//     level). Require verifies the certificate with TLSConfig (set
//     InsecureSkipVerify there to encrypt without verifying) and answers
//     4.7.4 (not offered) or 4.7.5 (handshake failed) for every recipient, so
//     the mail waits until TLS works.
//   - SIZE (RFC 1870): SIZE= on MAIL; a message larger than the announced
//     limit is not sent: 552 5.3.4 for every recipient.
//   - 8BITMIME: BODY=8BITMIME for an 8-bit body. A server without 8BITMIME
//     gets the message anyway, without BODY= (no downgrade: nearly every
//     server passes 8-bit data through, as Postfix's smtp client does).
//   - SMTPUTF8 (RFC 6531): SMTPUTF8 on MAIL for a message that asked for it.
//     A server without it gets the message without the parameter when
//     nothing in it needs UTF-8 (needsUTF8: all-ASCII addresses and
//     header), else nothing: 553 5.6.7 for every recipient, saying why.
//   - DSN (RFC 3461): RET= and ENVID= on MAIL, NOTIFY= and ORCPT= on RCPT
//     (ORCPT: the client's, else the address the client gave before
//     rewriting, as Postfix does). Without DSN, none of them.
//   - XCLIENT (XClient): the message's client address and HELO name, so
//     Postfix applies its access rules and logs as if that client had
//     connected. A connection keeps that identity: it is reused only for
//     messages from the same client (address and HELO name).
//   - XFORWARD (XForward): the same for logging only, per transaction.
//   - LMTP (RFC 2033): LHLO, and one reply per accepted recipient after the
//     final dot.
//
// Timeout bounds the connect and every read and write (the wait for the
// reply to the final dot: dataDoneTimeout); the context's deadline and
// cancellation apply to all of them.
type SMTPHop struct {
	Addr      string        // host:port
	LocalName string        // our EHLO name
	Timeout   time.Duration // connect, and each read or write (default 30 s)
	IdleTime  time.Duration // how long an idle connection is kept (default 30 s)
	MaxIdle   int           // idle connections kept (default 16)

	TLSPolicy string      // TLSNone, TLSOpportunistic ("" too) or TLSRequire
	TLSConfig *tls.Config // RootCAs, ServerName (default: Addr's host), client certificate...
	XClient   bool        // send XCLIENT with the message's client (Postfix smtpd_authorized_xclient_hosts)
	XForward  bool        // send XFORWARD per transaction (Postfix smtpd_authorized_xforward_hosts)
	LMTP      bool        // speak LMTP (LHLO, a reply per recipient after DATA)
	// LineLimit: lines longer than this are broken (CRLF SPACE inserted) on
	// the way out, as Postfix's smtp_line_length_limit (998); 0: as they are.
	LineLimit int

	// dial replaces the TCP dial (tests).
	dial func(ctx context.Context) (net.Conn, error)

	mu   sync.Mutex
	idle []idleConn
}

type idleConn struct {
	c     *smtpConn
	since time.Time
}

// dataDoneTimeout bounds the wait for the reply to the final dot (Postfix's
// smtp_data_done_timeout): the server may scan the message first.
const dataDoneTimeout = 10 * time.Minute

func (h *SMTPHop) String() string {
	if h.LMTP {
		return "lmtp:[" + h.Addr + "]"
	}
	return "smtp:[" + h.Addr + "]"
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

func (h *SMTPHop) tlsPolicy() (string, error) {
	switch h.TLSPolicy {
	case "", TLSOpportunistic:
		return TLSOpportunistic, nil
	case TLSNone, TLSRequire:
		return h.TLSPolicy, nil
	}
	return "", fmt.Errorf("unknown TLS policy %q (want %s, %s or %s)", h.TLSPolicy, TLSNone, TLSOpportunistic, TLSRequire)
}

func (h *SMTPHop) tlsConfig(policy string) *tls.Config {
	cfg := &tls.Config{}
	if h.TLSConfig != nil {
		cfg = h.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(h.Addr); err == nil {
			cfg.ServerName = host
		}
	}
	if policy == TLSOpportunistic {
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// tlsRequired is a connection refused by the "require" TLS policy: its
// reply goes to every recipient.
type tlsRequired struct{ reply Reply }

func (e *tlsRequired) Error() string { return e.reply.String() }

// connect dials and greets a new connection: EHLO, STARTTLS per policy,
// EHLO again. plain skips STARTTLS (the opportunistic fallback).
func (h *SMTPHop) connect(ctx context.Context, plain bool) (*smtpConn, error) {
	policy, err := h.tlsPolicy()
	if err != nil {
		return nil, err
	}
	var nc net.Conn
	if h.dial != nil {
		nc, err = h.dial(ctx)
	} else {
		d := net.Dialer{Timeout: h.timeout()}
		nc, err = d.DialContext(ctx, "tcp", h.Addr)
	}
	if err != nil {
		return nil, err
	}
	c := newSMTPConn(nc, h.LMTP, h.timeout())
	unbind := c.bind(ctx)
	defer unbind()
	fail := func(err error) (*smtpConn, error) {
		c.Close()
		return nil, withCtxErr(ctx, err)
	}
	if err := c.greet(); err != nil {
		return fail(err)
	}
	if err := c.hello(h.LocalName); err != nil {
		return fail(err)
	}
	if policy == TLSNone || plain {
		return c, nil
	}
	if !c.has("STARTTLS") {
		if policy == TLSRequire {
			c.quit()
			return nil, &tlsRequired{Reply{451, "4.7.4", "TLS is required, but was not offered by host " + h.String()}}
		}
		return c, nil
	}
	err = c.startTLS(ctx, h.tlsConfig(policy))
	var hs errStartTLS
	var re *replyError
	refused := errors.As(err, &re) && re.Reply.Code != 421 // 454 TLS not available...
	switch {
	case err == nil:
		if err := c.hello(h.LocalName); err != nil {
			return fail(err)
		}
		return c, nil
	case policy == TLSRequire && (refused || errors.As(err, &hs)):
		c.Close()
		return nil, &tlsRequired{Reply{451, "4.7.5", "Cannot start TLS with host " + h.String() + ": " + err.Error()}}
	case refused: // opportunistic: the session goes on in plaintext
		return c, nil
	case errors.As(err, &hs) && ctx.Err() == nil:
		// opportunistic: a failed handshake (a broken TLS stack, no common
		// version) is retried at once in plaintext on a new connection,
		// as Postfix's "may" level does; "require" never gets here
		c.Close()
		return h.connect(ctx, true)
	}
	return fail(err)
}

// identity is the XCLIENT identity a message needs ("" none).
func (h *SMTPHop) identity(env *envelope.Envelope) string {
	if !h.XClient || env.ClientAddr == "" {
		return ""
	}
	return xclientAddr(env.ClientAddr) + " " + env.ClientHelo
}

// fit ranks an idle connection for identity want: 2 in that identity
// already, 1 usable (not yet XCLIENTed: it can take any identity), 0 not
// usable. Postfix refuses a second XCLIENT on a connection (the client it
// now believes it talks to is not in smtpd_authorized_xclient_hosts), so
// a connection keeps the identity of its first XCLIENT for life.
func fit(c *smtpConn, want string) int {
	switch {
	case c.ident == want:
		return 2
	case c.ident == "":
		return 1
	}
	return 0
}

func (h *SMTPHop) get(ctx context.Context, want string) (c *smtpConn, reused bool, err error) {
	now := time.Now()
	var expired []*smtpConn
	h.mu.Lock()
	kept := h.idle[:0]
	for _, ic := range h.idle {
		if now.Sub(ic.since) >= h.idleTime() {
			expired = append(expired, ic.c)
		} else {
			kept = append(kept, ic)
		}
	}
	h.idle = kept
	best, pick := 0, -1
	for i := len(h.idle) - 1; i >= 0; i-- { // most recently used first
		if f := fit(h.idle[i].c, want); f > best {
			best, pick = f, i
		}
	}
	if pick >= 0 {
		c = h.idle[pick].c
		h.idle = append(h.idle[:pick], h.idle[pick+1:]...)
	}
	h.mu.Unlock()
	for _, e := range expired {
		go e.quit()
	}
	if c != nil {
		return c, true, nil
	}
	c, err = h.connect(ctx, false)
	return c, false, err
}

// put pools c; when the pool is full, the connection idle longest goes.
func (h *SMTPHop) put(c *smtpConn) {
	h.mu.Lock()
	var evict *smtpConn
	if len(h.idle) >= h.maxIdle() {
		evict = h.idle[0].c
		h.idle = append(h.idle[:0], h.idle[1:]...)
	}
	h.idle = append(h.idle, idleConn{c, time.Now()})
	h.mu.Unlock()
	if evict != nil {
		go evict.quit()
	}
}

// Close drops idle connections.
func (h *SMTPHop) Close() {
	h.mu.Lock()
	idle := h.idle
	h.idle = nil
	h.mu.Unlock()
	for _, ic := range idle {
		ic.c.quit()
	}
}

// Send runs one transaction. It returns one Reply per recipient, or an
// error when the transaction failed as a whole before any recipient got a
// definite answer (connection refused, dropped, timed out): all
// recipients are then to be retried. A pooled connection that turns out
// to be dead (the server closed it while idle) is replaced by a new one
// once, as long as no byte of the body was sent.
func (h *SMTPHop) Send(ctx context.Context, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	if len(rcpts) == 0 {
		return []Reply{}, nil
	}
	want := h.identity(env)
	c, reused, err := h.get(ctx, want)
	if err != nil {
		return h.connectFailure(len(rcpts), err)
	}
	replies, err := h.use(ctx, c, env, from, rcpts, body)
	if err != nil && replies == nil && reused && !bodyStarted(err) && ctx.Err() == nil {
		if c, err = h.connect(ctx, false); err != nil {
			return h.connectFailure(len(rcpts), err)
		}
		replies, err = h.use(ctx, c, env, from, rcpts, body)
	}
	if replies != nil {
		return replies, nil
	}
	return nil, withCtxErr(ctx, err)
}

// withCtxErr makes an error that the context caused say so (errors.Is
// context.Canceled or DeadlineExceeded): a connection deadline set from
// the context's may expire a moment before the context itself.
func withCtxErr(ctx context.Context, err error) error {
	cerr := ctx.Err()
	if cerr == nil {
		var ne net.Error
		if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) && errors.As(err, &ne) && ne.Timeout() {
			cerr = context.DeadlineExceeded
		}
	}
	if cerr == nil || errors.Is(err, cerr) {
		return err
	}
	return fmt.Errorf("%w (%v)", cerr, err)
}

func (h *SMTPHop) connectFailure(n int, err error) ([]Reply, error) {
	var tr *tlsRequired
	if errors.As(err, &tr) {
		return all(n, tr.reply), nil
	}
	return nil, err
}

// use runs a transaction on c under ctx and pools c afterwards, or closes
// it. Replies and an error together: the replies are definite, but the
// connection is gone.
func (h *SMTPHop) use(ctx context.Context, c *smtpConn, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	unbind := c.bind(ctx)
	err := h.prepare(c, env)
	var replies []Reply
	if err == nil {
		replies, err = h.transaction(c, env, from, rcpts, body)
	}
	if !unbind() || err != nil {
		c.Close()
		return replies, err
	}
	h.put(c)
	return replies, nil
}

// prepare puts c in the message's XCLIENT identity (get gave us a
// connection in that identity, or one without any).
func (h *SMTPHop) prepare(c *smtpConn, env *envelope.Envelope) error {
	want := h.identity(env)
	if c.ident == want || !c.has("XCLIENT") || want == "" {
		return nil
	}
	if c.ident != "" {
		return fmt.Errorf("connection is XCLIENT %q already, not %q", c.ident, want)
	}
	helo := env.ClientHelo
	if helo == "" {
		helo = "[UNAVAILABLE]"
	}
	sent, err := c.xclient([][2]string{
		{"ADDR", xclientAddr(env.ClientAddr)},
		{"NAME", "[UNAVAILABLE]"},
		{"HELO", helo},
		{"PROTO", "ESMTP"},
	})
	if err != nil || !sent {
		return err
	}
	// The server greets anew: EHLO as the client did (Postfix
	// XCLIENT_README), since the EHLO name replaces the HELO attribute.
	c.ident = "?"
	name := env.ClientHelo
	if !heloOK(name) {
		name = h.LocalName
	}
	if err := c.hello(name); err != nil {
		return err
	}
	c.ident = want
	return nil
}

// heloOK accepts a HELO name that is safe to repeat in our EHLO.
func heloOK(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, ch := range s {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.ContainsRune(".-_[]:", ch)) {
			return false
		}
	}
	return true
}

// xclientAddr is a client address as XCLIENT and XFORWARD want it:
// "192.0.2.7", "IPV6:2001:db8::1", or "[UNAVAILABLE]".
func xclientAddr(a string) string {
	if host, _, err := net.SplitHostPort(a); err == nil {
		a = host
	}
	a, _, _ = strings.Cut(a, "%")
	ip := net.ParseIP(strings.Trim(a, "[]"))
	switch {
	case ip == nil:
		return "[UNAVAILABLE]"
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return "IPV6:" + ip.String()
}

type bodyError struct{ err error }

func (e bodyError) Error() string { return "sending body: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

func bodyStarted(err error) bool { var b bodyError; return errors.As(err, &b) }

func all(n int, r Reply) []Reply {
	out := make([]Reply, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// recipient finds the envelope entry of rcpt in a transaction from from.
func recipient(env *envelope.Envelope, from, rcpt string) *envelope.Recipient {
	var first *envelope.Recipient
	for i := range env.Recipients {
		r := &env.Recipients[i]
		if r.Addr != rcpt {
			continue
		}
		if r.Status == envelope.Pending && r.Sender(env) == from {
			return r
		}
		if first == nil {
			first = r
		}
	}
	return first
}

func mailParams(c *smtpConn, env *envelope.Envelope) string {
	var b strings.Builder
	if c.has("SIZE") && env.Size > 0 {
		fmt.Fprintf(&b, " SIZE=%d", env.Size)
	}
	if env.Body8Bit && c.has("8BITMIME") {
		b.WriteString(" BODY=8BITMIME")
	}
	if env.SMTPUTF8 && c.has("SMTPUTF8") {
		b.WriteString(" SMTPUTF8")
	}
	if c.has("DSN") {
		if ret := strings.ToUpper(env.DSNRet); ret == "FULL" || ret == "HDRS" {
			b.WriteString(" RET=" + ret)
		}
		if env.DSNEnvID != "" {
			b.WriteString(" ENVID=" + xtext(env.DSNEnvID))
		}
	}
	return b.String()
}

func rcptParams(c *smtpConn, r *envelope.Recipient) string {
	if r == nil || !c.has("DSN") {
		return ""
	}
	var b strings.Builder
	if n := strings.ToUpper(strings.ReplaceAll(r.DSNNotify, " ", "")); n != "" && validNotify(n) {
		b.WriteString(" NOTIFY=" + n)
	}
	typ, addr := "rfc822", r.OrigTo
	if r.ORcpt != "" {
		typ, addr = "rfc822", r.ORcpt
		if t, a, ok := strings.Cut(r.ORcpt, ";"); ok {
			typ, addr = t, a
		}
	}
	// addr-type rfc822 is ASCII; an internationalized original address
	// (RFC 6533 utf-8 addr-type) is left out rather than mangled.
	if addr != "" && isASCIIPrintable(addr) && isASCIIPrintable(typ) && !strings.ContainsAny(typ, "+=") {
		b.WriteString(" ORCPT=" + typ + ";" + xtext(addr))
	}
	return b.String()
}

func validNotify(n string) bool {
	if n == "NEVER" {
		return true
	}
	for _, k := range strings.Split(n, ",") {
		if k != "SUCCESS" && k != "FAILURE" && k != "DELAY" {
			return false
		}
	}
	return true
}

func isASCIIPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// needsUTF8 says what in a transaction needs SMTPUTF8 ("" nothing): a
// non-ASCII envelope address, or a header field with UTF-8 in it.
func needsUTF8(env *envelope.Envelope, from string, rcpts []string) string {
	if !isASCII(from) {
		return "the sender address is not ASCII"
	}
	for _, r := range rcpts {
		if !isASCII(r) {
			return "the recipient address is not ASCII" // not named: it may be a private forward
		}
	}
	if env.UTF8Header {
		return "the message header is not ASCII"
	}
	return ""
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func badAddr(a string) bool { return strings.ContainsAny(a, "\r\n<>") }

// transaction runs MAIL, RCPT, DATA and the body on c. It returns a
// non-nil error when the connection is no longer usable: with nil
// replies, before any recipient got a definite answer; with replies, after
// (they stand). SMTP refusals come back as Replies.
func (h *SMTPHop) transaction(c *smtpConn, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error) {
	n := len(rcpts)
	replies := make([]Reply, n)
	switch {
	case badAddr(from):
		return all(n, Reply{501, "5.1.7", "bad sender address syntax"}), nil
	case env.SMTPUTF8 && !c.has("SMTPUTF8"):
		// RFC 6531 §3.4: the client's SMTPUTF8 is a request; the message
		// needs it only if an address or a header carries UTF-8. Otherwise
		// it goes without (as Postfix does), else it cannot go at all.
		if why := needsUTF8(env, from, rcpts); why != "" {
			return all(n, Reply{553, "5.6.7", "SMTPUTF8 is required (" + why + "), but was not offered by host " + h.String()}), nil
		}
	}
	if lim := c.sizeLimit(); lim > 0 && env.Size > lim {
		return all(n, Reply{552, "5.3.4", fmt.Sprintf("message size %d exceeds size limit %d of host %s", env.Size, lim, h)}), nil
	}

	// The command group: [RSET] [XFORWARD] MAIL RCPT... DATA.
	var cmds, names []string
	add := func(name, line string) { cmds, names = append(cmds, line), append(names, name) }
	rset := c.dirty
	if rset {
		add("RSET", "RSET")
	}
	if h.XForward && c.has("XFORWARD") {
		attrs := [][2]string{{"IDENT", env.ID}}
		if env.ClientAddr != "" {
			helo := env.ClientHelo
			if helo == "" {
				helo = "[UNAVAILABLE]"
			}
			attrs = append(attrs, [2]string{"ADDR", xclientAddr(env.ClientAddr)}, [2]string{"NAME", "[UNAVAILABLE]"},
				[2]string{"HELO", helo}, [2]string{"PROTO", "ESMTP"}, [2]string{"SOURCE", "REMOTE"})
		}
		if l := c.xforwardLine(attrs); l != "" {
			add("XFORWARD", l)
		}
	}
	mailIdx := len(cmds)
	add("MAIL", "MAIL FROM:<"+from+">"+mailParams(c, env))
	rcptIdx := make([]int, n) // index in cmds, -1 not sent
	for i, rc := range rcpts {
		if badAddr(rc) {
			replies[i], rcptIdx[i] = Reply{501, "5.1.3", "bad recipient address syntax"}, -1
			continue
		}
		rcptIdx[i] = len(cmds)
		add("RCPT", "RCPT TO:<"+rc+">"+rcptParams(c, recipient(env, from, rc)))
	}
	dataIdx := len(cmds)
	if dataIdx == mailIdx+1 { // no recipient to send
		return replies, nil
	}
	add("DATA", "DATA")

	okRcpts := 0
	c.dirty = true // until we know better
	got, err := c.exchange(cmds, func(i int, r Reply) bool {
		switch {
		case r.Code == 421:
			return true
		case rset && i == 0:
			return !r.OK()
		case i == mailIdx:
			return !r.OK()
		case i > mailIdx && i < dataIdx:
			if r.OK() {
				okRcpts++
			}
			return i == dataIdx-1 && okRcpts == 0
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	for i, r := range got {
		if r.Code == 421 { // the server is closing the connection
			return nil, &replyError{Cmd: names[i], Reply: r}
		}
	}
	if rset && !got[0].OK() {
		return nil, &replyError{Cmd: "RSET", Reply: got[0]}
	}
	var data Reply
	if len(got) > dataIdx {
		data = got[dataIdx]
	}
	if data.Code/100 == 2 || data.Code/100 == 3 && data.Code != 354 {
		return nil, &replyError{Cmd: "DATA", Reply: data} // lost track of the protocol
	}
	mail := got[mailIdx]
	if !mail.OK() {
		for i := range replies {
			if rcptIdx[i] >= 0 {
				replies[i] = mail
			}
		}
		c.dirty = false
		return replies, h.endEmptyData(c, data)
	}
	accepted := 0
	for i := range rcpts {
		if j := rcptIdx[i]; j >= 0 {
			replies[i] = got[j] // all RCPTs were answered: the group stops early only on MAIL or the last RCPT
			if replies[i].OK() {
				accepted++
			}
		}
	}
	if accepted == 0 || data.Code != 354 {
		for i := range replies {
			if replies[i].OK() { // DATA refused: its reply is theirs
				replies[i] = data
			}
		}
		return replies, h.endEmptyData(c, data)
	}

	// The body, streamed.
	dw := newDotWriter(c.bw)
	var bw io.Writer = dw
	if h.LineLimit > 0 {
		bw = &lineBreaker{w: dw, max: h.LineLimit}
	}
	if _, err := io.Copy(bw, body); err != nil {
		return nil, bodyError{err}
	}
	if err := dw.Close(); err != nil {
		return nil, bodyError{err}
	}
	if err := c.bw.Flush(); err != nil {
		return nil, bodyError{err}
	}
	c.readTimeout = dataDoneTimeout
	defer func() { c.readTimeout = 0 }()
	if !h.LMTP {
		r, err := c.readResponse()
		if err != nil {
			return nil, bodyError{err}
		}
		c.dirty = false
		for i := range replies {
			if replies[i].OK() {
				replies[i] = r.Reply
			}
		}
		if r.Code == 421 {
			return replies, &replyError{Cmd: "end of data", Reply: r.Reply}
		}
		return replies, nil
	}
	// LMTP: a reply per accepted recipient, in RCPT order. Those that
	// came before a connection loss stand; the others are deferred.
	var lost error
	for i := range replies {
		if !replies[i].OK() {
			continue
		}
		if lost != nil {
			replies[i] = Reply{451, "4.4.2", "lost connection with " + h.String() + " after end of data: " + lost.Error()}
			continue
		}
		r, err := c.readResponse()
		if err != nil {
			lost = err
			replies[i] = Reply{451, "4.4.2", "lost connection with " + h.String() + " after end of data: " + err.Error()}
			continue
		}
		replies[i] = r.Reply
		if r.Code == 421 {
			lost = &replyError{Cmd: "end of data", Reply: r.Reply}
		}
	}
	c.dirty = false
	return replies, lost
}

// endEmptyData completes a transaction that has no recipient: a server
// that answered DATA with 354 anyway (RFC 2920 §3.1) gets an empty body,
// and its reply is ignored. The transaction stays dirty (RSET next time)
// when MAIL was accepted.
func (h *SMTPHop) endEmptyData(c *smtpConn, data Reply) error {
	if data.Code != 354 {
		return nil
	}
	if err := c.cmd("."); err != nil {
		return err
	}
	_, err := c.readResponse()
	c.dirty = true
	return err
}
