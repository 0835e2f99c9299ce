package nexthop

// A small SMTP/LMTP client (RFC 5321, RFC 2033) on net/textproto: one
// connection, its EHLO/LHLO extensions, STARTTLS, XCLIENT, pipelined
// command groups (RFC 2920) and a streaming dot-stuffing body writer.
// SMTPHop (nexthop.go) decides what to send; this file only speaks the
// protocol and keeps every network operation under a deadline.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// response is one (possibly multi-line) server reply.
type response struct {
	Reply
	Lines []string // text of each line, enhanced code removed
}

// replyError is a reply that ends the use of a connection (a bad greeting,
// a refused EHLO, 421) or a step that must succeed (STARTTLS, XCLIENT).
type replyError struct {
	Cmd   string // the command answered, "" for the greeting
	Reply Reply
}

func (e *replyError) Error() string {
	if e.Cmd == "" {
		return "greeting: " + e.Reply.String()
	}
	return e.Cmd + ": " + e.Reply.String()
}

// ReplyOf is the server reply that made a Send fail, if one did: a
// greeting or command answered 421, a refused EHLO or STARTTLS. The
// scheduler reads "slow down" in it.
func ReplyOf(err error) (Reply, bool) {
	var re *replyError
	if errors.As(err, &re) {
		return re.Reply, true
	}
	return Reply{}, false
}

// smtpConn is one client connection to an SMTP or LMTP server.
type smtpConn struct {
	nc   net.Conn // the current transport (a *tls.Conn after STARTTLS)
	raw  net.Conn // the TCP (or test) connection underneath
	br   *bufio.Reader
	tr   *textproto.Reader
	bw   *bufio.Writer
	lmtp bool

	// timeout bounds each read and write; readTimeout, when set, replaces
	// it for reads (waiting for the reply to the final dot).
	timeout     time.Duration
	readTimeout time.Duration

	mu       sync.Mutex // guards ctx state against the AfterFunc below
	deadline time.Time  // the bound context's deadline (zero: none)
	canceled bool

	greeting string            // the 220 text
	ext      map[string]string // EHLO keywords (upper case) -> parameters
	tls      bool              // STARTTLS done
	ident    string            // XCLIENT identity in effect ("" none)
	dirty    bool              // a MAIL transaction may be open: RSET first
}

func newSMTPConn(nc net.Conn, lmtp bool, timeout time.Duration) *smtpConn {
	c := &smtpConn{nc: nc, raw: nc, lmtp: lmtp, timeout: timeout}
	c.br = bufio.NewReader(deadlineReader{c})
	c.tr = textproto.NewReader(c.br)
	c.bw = bufio.NewWriterSize(deadlineWriter{c}, 16<<10)
	return c
}

// bind makes every network operation obey ctx (its deadline, and its
// cancellation, which unblocks a pending read or write at once) until the
// returned function is called. That function reports whether the
// connection is still usable (ctx was not cancelled meanwhile).
func (c *smtpConn) bind(ctx context.Context) (unbind func() bool) {
	c.mu.Lock()
	c.deadline, _ = ctx.Deadline()
	c.canceled = ctx.Err() != nil
	c.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.canceled = true
		c.nc.SetDeadline(time.Unix(1, 0))
		c.mu.Unlock()
	})
	return func() bool {
		ok := stop()
		c.mu.Lock()
		c.deadline, c.canceled = time.Time{}, false
		c.mu.Unlock()
		return ok
	}
}

// setDeadline arms the next read or write: d from now, never later than
// the bound context's deadline, already expired once it is cancelled.
func (c *smtpConn) setDeadline(read bool, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now().Add(d)
	if !c.deadline.IsZero() && c.deadline.Before(t) {
		t = c.deadline
	}
	if c.canceled {
		t = time.Unix(1, 0)
	}
	if read {
		return c.nc.SetReadDeadline(t)
	}
	return c.nc.SetWriteDeadline(t)
}

type deadlineReader struct{ c *smtpConn }

func (r deadlineReader) Read(p []byte) (int, error) {
	d := r.c.timeout
	if r.c.readTimeout > 0 {
		d = r.c.readTimeout
	}
	if err := r.c.setDeadline(true, d); err != nil {
		return 0, err
	}
	return r.c.nc.Read(p)
}

type deadlineWriter struct{ c *smtpConn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	if err := w.c.setDeadline(false, w.c.timeout); err != nil {
		return 0, err
	}
	return w.c.nc.Write(p)
}

func (c *smtpConn) Close() error { return c.nc.Close() }

// quit says goodbye without waiting long for the answer.
func (c *smtpConn) quit() {
	c.timeout, c.readTimeout = 2*time.Second, 0
	if c.cmd("QUIT") == nil {
		c.readResponse()
	}
	c.Close()
}

// has reports whether the server announced the extension.
func (c *smtpConn) has(ext string) bool { _, ok := c.ext[ext]; return ok }

// sizeLimit is the server's SIZE limit (0: none announced, or unlimited).
func (c *smtpConn) sizeLimit() int64 {
	p, ok := c.ext["SIZE"]
	if !ok {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
	return n
}

// extParams are the space-separated parameters of an extension keyword
// (upper case), e.g. XCLIENT's attribute names.
func (c *smtpConn) extParams(ext string) map[string]bool {
	m := map[string]bool{}
	for _, p := range strings.Fields(c.ext[ext]) {
		m[strings.ToUpper(p)] = true
	}
	return m
}

// queue writes a command line into the output buffer without sending it.
func (c *smtpConn) queue(line string) error {
	if strings.ContainsAny(line, "\r\n") {
		return fmt.Errorf("line break in SMTP command %q", line)
	}
	c.bw.WriteString(line)
	_, err := c.bw.WriteString("\r\n")
	return err
}

// cmd sends one command line at once.
func (c *smtpConn) cmd(line string) error {
	if err := c.queue(line); err != nil {
		return err
	}
	return c.bw.Flush()
}

// readResponse reads one reply. Enhanced status codes (RFC 2034) are
// taken from the first line when its class matches the reply code.
func (c *smtpConn) readResponse() (response, error) {
	var r response
	for i := 0; ; i++ {
		line, err := c.tr.ReadLine()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return r, err
		}
		if len(line) < 3 || line[0] < '2' || line[0] > '5' || !isDigit(line[1]) || !isDigit(line[2]) ||
			len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return r, textproto.ProtocolError("malformed reply: " + strconv.Quote(truncate(line, 100)))
		}
		code, _ := strconv.Atoi(line[:3])
		if i == 0 {
			r.Code = code
		} else if code != r.Code {
			return r, textproto.ProtocolError("reply code changes within a multi-line reply: " + strconv.Quote(truncate(line, 100)))
		}
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		if i == 0 {
			r.Enhanced, text = splitEnhanced(code, text)
		} else if r.Enhanced != "" {
			text = strings.TrimPrefix(strings.TrimPrefix(text, r.Enhanced), " ")
		}
		if i < 200 { // a runaway multi-line reply is read, not stored
			r.Lines = append(r.Lines, text)
		}
		if len(line) == 3 || line[3] == ' ' {
			break
		}
	}
	r.Text = strings.Join(r.Lines, " ")
	return r, nil
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// splitEnhanced takes "5.1.1 text" apart when 5 is code's class.
func splitEnhanced(code int, text string) (enhanced, rest string) {
	f, rest, _ := strings.Cut(text, " ")
	p := strings.Split(f, ".")
	if len(p) != 3 || p[0] != strconv.Itoa(code/100) {
		return "", text
	}
	for _, n := range p[1:] {
		if n == "" || len(n) > 3 || strings.Trim(n, "0123456789") != "" {
			return "", text
		}
	}
	return f, rest
}

// expect reads a reply and turns anything but the wanted code class into
// a *replyError for cmd.
func (c *smtpConn) expect(cmd string, class int) (response, error) {
	r, err := c.readResponse()
	if err != nil {
		return r, err
	}
	if r.Code/100 != class {
		return r, &replyError{Cmd: cmd, Reply: r.Reply}
	}
	return r, nil
}

// greet reads the server's greeting.
func (c *smtpConn) greet() error {
	r, err := c.expect("", 2)
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return &replyError{Reply: r.Reply}
	}
	c.greeting = r.Text
	return nil
}

// hello sends EHLO (LHLO for LMTP) and records the extensions. An SMTP
// server that refuses EHLO with a 5xx gets HELO: no extensions then.
func (c *smtpConn) hello(name string) error {
	verb := "EHLO"
	if c.lmtp {
		verb = "LHLO"
	}
	if err := c.cmd(verb + " " + name); err != nil {
		return err
	}
	r, err := c.readResponse()
	if err != nil {
		return err
	}
	if r.Code/100 != 2 {
		if c.lmtp || r.Code/100 != 5 || r.Code == 554 {
			return &replyError{Cmd: verb, Reply: r.Reply}
		}
		if err := c.cmd("HELO " + name); err != nil {
			return err
		}
		if _, err := c.expect("HELO", 2); err != nil {
			return err
		}
		c.ext = map[string]string{}
		return nil
	}
	c.ext = map[string]string{}
	for _, l := range r.Lines[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// errStartTLS wraps a failed STARTTLS exchange or handshake.
type errStartTLS struct{ err error }

func (e errStartTLS) Error() string { return "STARTTLS: " + e.err.Error() }
func (e errStartTLS) Unwrap() error { return e.err }

// startTLS upgrades the connection. The caller says EHLO again. A
// refusal is a *replyError (the session goes on in plaintext), a failed
// handshake an errStartTLS (the connection is lost).
func (c *smtpConn) startTLS(ctx context.Context, cfg *tls.Config) error {
	if err := c.cmd("STARTTLS"); err != nil {
		return err
	}
	if _, err := c.expect("STARTTLS", 2); err != nil {
		return err
	}
	if c.br.Buffered() > 0 { // bytes before the handshake: injected plaintext
		return errStartTLS{errors.New("server sent data after its STARTTLS reply")}
	}
	tc := tls.Client(c.raw, cfg)
	c.setDeadline(true, c.timeout)
	c.setDeadline(false, c.timeout)
	if err := tc.HandshakeContext(ctx); err != nil {
		return errStartTLS{err}
	}
	c.mu.Lock()
	c.nc = tc
	c.mu.Unlock()
	c.tls = true
	c.ext = nil
	return nil
}

// xclient sends XCLIENT with the attributes the server announced (Postfix
// XCLIENT_README) and expects the new 220 greeting. The caller says EHLO
// again.
func (c *smtpConn) xclient(attrs [][2]string) (sent bool, err error) {
	allowed := c.extParams("XCLIENT")
	line := "XCLIENT"
	for _, a := range attrs {
		if allowed[a[0]] {
			line += " " + a[0] + "=" + xtext(a[1])
		}
	}
	if line == "XCLIENT" {
		return false, nil
	}
	if err := c.cmd(line); err != nil {
		return true, err
	}
	r, err := c.expect("XCLIENT", 2)
	if err != nil {
		return true, err
	}
	if r.Code != 220 {
		return true, &replyError{Cmd: "XCLIENT", Reply: r.Reply}
	}
	c.ext = nil
	return true, nil
}

// xforwardLine is the XFORWARD command for the announced attributes ("" if
// none applies). Postfix XFORWARD_README.
func (c *smtpConn) xforwardLine(attrs [][2]string) string {
	allowed := c.extParams("XFORWARD")
	line := "XFORWARD"
	for _, a := range attrs {
		if allowed[a[0]] && a[1] != "" {
			line += " " + a[0] + "=" + xtext(a[1])
		}
	}
	if line == "XFORWARD" {
		return ""
	}
	return line
}

// exchange runs a group of commands. With PIPELINING (RFC 2920) they go
// out in one write and the replies are read after; without, one at a time,
// and stop(i, reply) may end the group early (the rest is not sent).
// It returns the replies read, in order.
func (c *smtpConn) exchange(cmds []string, stop func(i int, r Reply) bool) ([]Reply, error) {
	out := make([]Reply, 0, len(cmds))
	if c.has("PIPELINING") {
		for _, l := range cmds {
			if err := c.queue(l); err != nil {
				return nil, err
			}
		}
		if err := c.bw.Flush(); err != nil {
			return nil, err
		}
		for range cmds {
			r, err := c.readResponse()
			if err != nil {
				return nil, err
			}
			out = append(out, r.Reply)
		}
		return out, nil
	}
	for i, l := range cmds {
		if err := c.cmd(l); err != nil {
			return nil, err
		}
		r, err := c.readResponse()
		if err != nil {
			return nil, err
		}
		out = append(out, r.Reply)
		if stop != nil && stop(i, r.Reply) {
			break
		}
	}
	return out, nil
}

// xtext encodes s as RFC 3461 xtext: '+', '=' and anything outside
// '!'..'~' become "+XX".
func xtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < '!' || ch > '~' || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
		} else {
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// dotWriter streams a message body in DATA form: every line ends in CRLF
// (a bare LF or a bare CR is made a CRLF, so no line end the server might
// read differently can get through: SMTP smuggling), a line starting with
// '.' gets another one, and Close adds the final CRLF (if the body did not
// end with one) and ".\r\n". It keeps no more than one byte of state.
type dotWriter struct {
	w         *bufio.Writer
	lineStart bool
	cr        bool // the last byte was a CR not yet written
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w, lineStart: true} }

func (d *dotWriter) Write(p []byte) (int, error) {
	clean := true // no bare CR seen in p: runs of whole lines can go at once
	for i := 0; i < len(p); {
		if d.cr {
			d.cr = false
			d.w.WriteString("\r\n")
			d.lineStart = true
			if p[i] == '\n' {
				i++
				continue
			}
		}
		if d.lineStart && p[i] == '.' {
			d.w.WriteByte('.')
		}
		d.lineStart = false
		if clean {
			j, ok := crlfRun(p[i:])
			if !ok {
				clean = false
			} else if j > 0 {
				d.w.Write(p[i : i+j])
				d.lineStart = true
				i += j
				continue
			}
		}
		// One line, whatever its end: the first CR or LF.
		seg := p[i:]
		if lf := bytes.IndexByte(seg, '\n'); lf >= 0 {
			seg = seg[:lf]
		}
		j := i + len(seg)
		if k := bytes.IndexByte(seg, '\r'); k >= 0 {
			j = i + k
		}
		d.w.Write(p[i:j])
		if j == len(p) {
			break
		}
		if p[j] == '\n' {
			d.w.WriteString("\r\n")
			d.lineStart = true
		} else {
			d.cr = true
		}
		i = j + 1
	}
	// bufio flushes by itself when full and then keeps its first error
	if _, err := d.w.Write(nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// lineBreaker breaks lines longer than max octets by inserting CRLF SPACE,
// as Postfix's smtp_line_length_limit does (998 by default: RFC 5321's
// 1,000 with the CRLF), "to minimize the damage to MIME formatted mail".
// Mail from a client may carry lines of any length (we take them, as
// Postfix does); the Internet's MXes may refuse them.
type lineBreaker struct {
	w   io.Writer
	max int
	n   int // octets of the current line so far
	buf []byte
}

func (b *lineBreaker) Write(p []byte) (int, error) {
	b.buf = b.buf[:0]
	start := 0
	for i, c := range p {
		if c == '\n' || c == '\r' {
			b.n = 0
			continue
		}
		if b.n == b.max {
			b.buf = append(b.buf, p[start:i]...)
			b.buf = append(b.buf, '\r', '\n', ' ')
			start, b.n = i, 1
		}
		b.n++
	}
	if len(b.buf) == 0 {
		return len(p), writeAll(b.w, p)
	}
	b.buf = append(b.buf, p[start:]...)
	return len(p), writeAll(b.w, b.buf)
}

func writeAll(w io.Writer, p []byte) error {
	_, err := w.Write(p)
	return err
}

// crlfRun measures the run of whole lines at the start of p that can go
// out unchanged: each ends in CRLF and no line after the first starts with
// a dot. It stops before a bare LF. ok is false if the run holds a bare
// CR (its CRs outnumber its lines): the caller then goes line by line.
func crlfRun(p []byte) (n int, ok bool) {
	lines := 0
	for {
		k := bytes.IndexByte(p[n:], '\n')
		if k <= 0 || p[n+k-1] != '\r' {
			break // no more lines, or a bare LF
		}
		lines++
		n += k + 1
		if n < len(p) && p[n] == '.' {
			break
		}
	}
	return n, bytes.Count(p[:n], []byte{'\r'}) == lines
}

// Close ends the data: the caller flushes.
func (d *dotWriter) Close() error {
	if d.cr || !d.lineStart {
		d.w.WriteString("\r\n")
	}
	d.cr, d.lineStart = false, true
	_, err := d.w.WriteString(".\r\n")
	return err
}
