package nexthop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"mailfwd/queue/envelope"
)

// scriptMTA is a scripted SMTP/LMTP server that records the exact bytes it
// reads (one chunk per Read: over net.Pipe, one chunk per client Write) and
// every command line. Zero values answer like a friendly Postfix.
type scriptMTA struct {
	ext       []string          // EHLO keywords, e.g. "PIPELINING", "SIZE 1000"
	extTLS    []string          // keywords after STARTTLS (nil: ext without STARTTLS)
	ehloReply string            // instead of 250 + ext, e.g. "502 5.5.2 no EHLO"
	lmtp      bool              // per-recipient replies after the dot
	tls       *tls.Config       // for STARTTLS
	tlsBroken bool              // answer STARTTLS with 220 and then garbage
	tlsReply  string            // answer STARTTLS with this refusal
	mailReply string            // e.g. "452 4.3.1 full" (default 250)
	rcpt      map[string]string // RCPT replies by address (default 250)
	dataReply string            // instead of 354
	data354   bool              // 354 even without valid recipients
	final     string            // reply to the dot (default 250 ... queued as)
	lmtpFinal map[string]string // LMTP: per-recipient reply to the dot
	lmtpDrop  int               // LMTP: close after this many replies to the dot (0: never)
	xclient   string            // reply to XCLIENT (default 220)
	stall     string            // never answer a command starting with this
	bodyDelay time.Duration     // wait this long before answering the dot

	mu     sync.Mutex
	conns  int
	open   []net.Conn
	cmds   []string // "N> line" per connection number N
	chunks []string // "N> bytes" per Read
	bodies []string // the DATA bytes as received (dot-stuffed, with the final dot line)
	queued int
}

func (f *scriptMTA) record(list *[]string, id int, s string) {
	f.mu.Lock()
	*list = append(*list, fmt.Sprintf("%d> %s", id, s))
	f.mu.Unlock()
}

func (f *scriptMTA) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

func (f *scriptMTA) chunkList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.chunks...)
}

func (f *scriptMTA) bodyList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

func (f *scriptMTA) connCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// dialPipe is an SMTPHop.dial that serves each connection over net.Pipe.
func (f *scriptMTA) dialPipe(ctx context.Context) (net.Conn, error) {
	c, s := net.Pipe()
	go f.serve(s)
	return c, nil
}

// listen serves on a loopback TCP port (for a real kernel buffer).
func (f *scriptMTA) listen(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); f.closeAll("") })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	return l.Addr().String()
}

// closeAll closes every server side connection, after writing last.
func (f *scriptMTA) closeAll(last string) {
	f.mu.Lock()
	open := f.open
	f.open = nil
	f.mu.Unlock()
	for _, c := range open {
		if last != "" {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(c, last)
		}
		c.Close()
	}
}

type chunkReader struct {
	f  *scriptMTA
	id int
	r  io.Reader
}

func (c chunkReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.f.record(&c.f.chunks, c.id, string(p[:n]))
	}
	return n, err
}

func (f *scriptMTA) serve(nc net.Conn) {
	f.mu.Lock()
	f.conns++
	id := f.conns
	f.open = append(f.open, nc)
	f.mu.Unlock()
	defer nc.Close()
	var br *bufio.Reader
	var bw *bufio.Writer
	setup := func(c net.Conn) {
		br = bufio.NewReaderSize(chunkReader{f, id, c}, 64<<10)
		bw = bufio.NewWriter(c)
	}
	setup(nc)
	out := func(s string) { bw.WriteString(s + "\r\n") }
	var (
		mail, isTLS bool
		rcpts       []string
	)
	out("220 fake.test ESMTP")
	for {
		if br.Buffered() == 0 { // answer a pipelined group at once, like Postfix
			if bw.Flush() != nil {
				return
			}
		}
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.record(&f.cmds, id, line)
		f.mu.Lock()
		stall := f.stall
		f.mu.Unlock()
		if stall != "" && strings.HasPrefix(line, stall) {
			bw.Flush()
			io.Copy(io.Discard, br) // until the client gives up
			return
		}
		verb, _, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "LHLO":
			if f.ehloReply != "" {
				out(f.ehloReply)
				continue
			}
			ext := f.ext
			if isTLS {
				ext = f.extTLS
				if ext == nil {
					for _, e := range f.ext {
						if e != "STARTTLS" {
							ext = append(ext, e)
						}
					}
				}
			}
			if len(ext) == 0 {
				out("250 fake.test")
				continue
			}
			out("250-fake.test")
			for i, e := range ext {
				if i == len(ext)-1 {
					out("250 " + e)
				} else {
					out("250-" + e)
				}
			}
		case "HELO":
			out("250 fake.test")
		case "STARTTLS":
			if f.tlsReply != "" {
				out(f.tlsReply)
				continue
			}
			out("220 2.0.0 Ready to start TLS")
			bw.Flush()
			if f.tlsBroken {
				io.WriteString(nc, "this is not TLS\r\n")
				return
			}
			tc := tls.Server(nc, f.tls)
			if err := tc.Handshake(); err != nil {
				f.record(&f.cmds, id, "[TLS handshake failed: "+err.Error()+"]")
				return
			}
			f.record(&f.cmds, id, "[TLS]")
			isTLS = true
			setup(tc)
		case "XCLIENT":
			if f.xclient != "" {
				out(f.xclient)
			} else {
				out("220 fake.test ESMTP")
				mail, rcpts = false, nil
			}
		case "XFORWARD":
			out("250 2.0.0 Ok")
		case "RSET":
			mail, rcpts = false, nil
			out("250 2.0.0 Ok")
		case "QUIT":
			out("221 2.0.0 Bye")
			bw.Flush()
			return
		case "MAIL":
			switch {
			case mail:
				out("503 5.5.1 Error: nested MAIL command")
			case f.mailReply != "":
				out(f.mailReply)
			default:
				mail = true
				out("250 2.1.0 Ok")
			}
		case "RCPT":
			if !mail {
				out("503 5.5.1 Error: need MAIL command")
				continue
			}
			addr := line[strings.Index(line, "<")+1 : strings.Index(line, ">")]
			r := f.rcpt[addr]
			if r == "" {
				r = "250 2.1.5 Ok"
			}
			if r[0] == '2' {
				rcpts = append(rcpts, addr)
			}
			out(r)
		case "DATA":
			switch {
			case !mail:
				out("503 5.5.1 Error: need RCPT command")
				continue
			case len(rcpts) == 0 && !f.data354:
				out("554 5.5.1 Error: no valid recipients")
				continue
			case f.dataReply != "":
				out(f.dataReply)
				continue
			}
			out("354 End data with <CR><LF>.<CR><LF>")
			bw.Flush()
			var body strings.Builder
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				body.WriteString(l)
				if l == ".\r\n" {
					break
				}
			}
			f.record(&f.bodies, id, body.String())
			time.Sleep(f.bodyDelay)
			f.mu.Lock()
			f.queued++
			q := f.queued
			f.mu.Unlock()
			if !f.lmtp {
				if f.final != "" {
					out(f.final)
				} else {
					out(fmt.Sprintf("250 2.0.0 Ok: queued as Q%d", q))
				}
			} else {
				for i, r := range rcpts {
					if f.lmtpDrop > 0 && i == f.lmtpDrop {
						bw.Flush()
						return
					}
					if x := f.lmtpFinal[r]; x != "" {
						out(x)
					} else {
						out("250 2.0.0 <" + r + "> delivered")
					}
				}
			}
			mail, rcpts = false, nil
		default:
			out("502 5.5.2 Error: command not recognized")
		}
	}
}

func pipeHop(f *scriptMTA) *SMTPHop {
	return &SMTPHop{Addr: "fake.test:25", LocalName: "relay.test", Timeout: 5 * time.Second, dial: f.dialPipe}
}

func send(t *testing.T, hop *SMTPHop, env *envelope.Envelope, rcpts ...string) []Reply {
	t.Helper()
	if env == nil {
		env = &envelope.Envelope{ID: "Q1", From: "s@y.test"}
	}
	replies, err := hop.Send(context.Background(), env, env.From, rcpts, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if len(replies) != len(rcpts) {
		t.Fatalf("%d replies for %d recipients", len(replies), len(rcpts))
	}
	return replies
}

func replyStrings(rs []Reply) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.String())
	}
	return strings.Join(s, " | ")
}

// cmdsOf returns the commands of connection id (1-based), without its
// EHLO/QUIT noise when trim is set.
func cmdsOf(f *scriptMTA, id int, trim bool) []string {
	var out []string
	p := fmt.Sprintf("%d> ", id)
	for _, c := range f.commands() {
		if !strings.HasPrefix(c, p) {
			continue
		}
		c = c[len(p):]
		if trim && (strings.HasPrefix(c, "EHLO") || strings.HasPrefix(c, "LHLO") || c == "QUIT") {
			continue
		}
		out = append(out, c)
	}
	return out
}

// With PIPELINING, MAIL, every RCPT and DATA arrive in one write and each
// recipient gets its own reply; without it, one command per write, and
// nothing after a refused MAIL or when no RCPT was accepted.
func TestClientPipelining(t *testing.T) {
	rcptReplies := map[string]string{"bad@x.test": "550 5.1.1 <bad@x.test>: unknown", "later@x.test": "450 4.2.0 greylisted"}
	for _, tc := range []struct {
		name       string
		pipelining bool
		mailReply  string
		rcpts      []string
		wantChunks []string // the chunks of connection 1 after EHLO
		wantReply  string
	}{
		{"pipelined", true, "", []string{"ok@x.test", "bad@x.test", "later@x.test"},
			[]string{"MAIL FROM:<s@y.test>\r\nRCPT TO:<ok@x.test>\r\nRCPT TO:<bad@x.test>\r\nRCPT TO:<later@x.test>\r\nDATA\r\n",
				"Subject: t\r\n\r\nhi\r\n.\r\n"},
			"250 2.0.0 Ok: queued as Q1 | 550 5.1.1 <bad@x.test>: unknown | 450 4.2.0 greylisted"},
		{"one at a time", false, "", []string{"ok@x.test", "bad@x.test", "later@x.test"},
			[]string{"MAIL FROM:<s@y.test>\r\n", "RCPT TO:<ok@x.test>\r\n", "RCPT TO:<bad@x.test>\r\n", "RCPT TO:<later@x.test>\r\n", "DATA\r\n",
				"Subject: t\r\n\r\nhi\r\n.\r\n"},
			"250 2.0.0 Ok: queued as Q1 | 550 5.1.1 <bad@x.test>: unknown | 450 4.2.0 greylisted"},
		{"pipelined, all refused: DATA answered 554, no body", true, "", []string{"bad@x.test", "later@x.test"},
			[]string{"MAIL FROM:<s@y.test>\r\nRCPT TO:<bad@x.test>\r\nRCPT TO:<later@x.test>\r\nDATA\r\n"},
			"550 5.1.1 <bad@x.test>: unknown | 450 4.2.0 greylisted"},
		{"one at a time, all refused: no DATA", false, "", []string{"bad@x.test", "later@x.test"},
			[]string{"MAIL FROM:<s@y.test>\r\n", "RCPT TO:<bad@x.test>\r\n", "RCPT TO:<later@x.test>\r\n"},
			"550 5.1.1 <bad@x.test>: unknown | 450 4.2.0 greylisted"},
		{"pipelined, MAIL refused: its reply for all", true, "452 4.3.1 Insufficient system storage", []string{"ok@x.test", "bad@x.test"},
			[]string{"MAIL FROM:<s@y.test>\r\nRCPT TO:<ok@x.test>\r\nRCPT TO:<bad@x.test>\r\nDATA\r\n"},
			"452 4.3.1 Insufficient system storage | 452 4.3.1 Insufficient system storage"},
		{"one at a time, MAIL refused: no RCPT", false, "553 5.7.1 sender rejected", []string{"ok@x.test", "bad@x.test"},
			[]string{"MAIL FROM:<s@y.test>\r\n"},
			"553 5.7.1 sender rejected | 553 5.7.1 sender rejected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &scriptMTA{rcpt: rcptReplies, mailReply: tc.mailReply, ext: []string{"ENHANCEDSTATUSCODES"}}
			if tc.pipelining {
				f.ext = append(f.ext, "PIPELINING")
			}
			hop := pipeHop(f)
			defer hop.Close()
			got := replyStrings(send(t, hop, nil, tc.rcpts...))
			if got != tc.wantReply {
				t.Errorf("replies:\n got %s\nwant %s", got, tc.wantReply)
			}
			var chunks []string
			for _, c := range f.chunkList() {
				if strings.HasPrefix(c, "1> ") && !strings.HasPrefix(c, "1> EHLO") {
					chunks = append(chunks, c[3:])
				}
			}
			if fmt.Sprintf("%q", chunks) != fmt.Sprintf("%q", tc.wantChunks) {
				t.Errorf("writes:\n got %q\nwant %q", chunks, tc.wantChunks)
			}
		})
	}
}

// RSET goes out only before a transaction that follows an unfinished one
// (MAIL accepted, then no recipient or DATA refused), pipelined with it.
func TestClientRSETOnlyWhenNeeded(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprint("pipelining=", pipelining), func(t *testing.T) {
			f := &scriptMTA{rcpt: map[string]string{"bad@x.test": "550 5.1.1 no"}}
			if pipelining {
				f.ext = []string{"PIPELINING"}
			}
			hop := pipeHop(f)
			defer hop.Close()
			send(t, hop, nil, "a@x.test")   // complete
			send(t, hop, nil, "b@x.test")   // complete: no RSET before
			send(t, hop, nil, "bad@x.test") // MAIL open afterwards
			send(t, hop, nil, "c@x.test")   // RSET first
			got := strings.Join(cmdsOf(f, 1, true), "\n")
			want := strings.Join([]string{
				"MAIL FROM:<s@y.test>", "RCPT TO:<a@x.test>", "DATA",
				"MAIL FROM:<s@y.test>", "RCPT TO:<b@x.test>", "DATA",
				"MAIL FROM:<s@y.test>", "RCPT TO:<bad@x.test>",
				"RSET", "MAIL FROM:<s@y.test>", "RCPT TO:<c@x.test>", "DATA",
			}, "\n")
			if pipelining {
				want = strings.Replace(want, "RCPT TO:<bad@x.test>", "RCPT TO:<bad@x.test>\nDATA", 1)
			}
			if got != want {
				t.Errorf("commands:\n%s\nwant:\n%s", got, want)
			}
			if n := f.connCount(); n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
			if pipelining { // RSET travels in the same write as MAIL
				found := false
				for _, c := range f.chunkList() {
					found = found || strings.HasPrefix(c, "1> RSET\r\nMAIL FROM:<s@y.test>\r\nRCPT TO:<c@x.test>\r\nDATA\r\n")
				}
				if !found {
					t.Errorf("RSET not pipelined with MAIL: %q", f.chunkList())
				}
			}
		})
	}
}

// A refusal of DATA, or of the message after the dot, is the reply of
// every recipient that was accepted; refused ones keep their own.
func TestClientDataRefusal(t *testing.T) {
	for _, tc := range []struct {
		name             string
		dataReply, final string
		want             string
		wantBodies       int
	}{
		{"DATA 451", "451 4.3.0 try later", "", "451 4.3.0 try later | 550 5.1.1 no | 451 4.3.0 try later", 0},
		{"DATA 554", "554 5.7.1 no thanks", "", "554 5.7.1 no thanks | 550 5.1.1 no | 554 5.7.1 no thanks", 0},
		{"after the dot 552", "", "552 5.3.4 message too big", "552 5.3.4 message too big | 550 5.1.1 no | 552 5.3.4 message too big", 1},
		{"after the dot 451", "", "451 4.7.1 content scan failed", "451 4.7.1 content scan failed | 550 5.1.1 no | 451 4.7.1 content scan failed", 1},
		{"no enhanced codes", "", "554 rejected", "554 rejected | 550 5.1.1 no | 554 rejected", 1},
	} {
		for _, pipelining := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s pipelining=%v", tc.name, pipelining), func(t *testing.T) {
				f := &scriptMTA{dataReply: tc.dataReply, final: tc.final, rcpt: map[string]string{"bad@x.test": "550 5.1.1 no"}}
				if pipelining {
					f.ext = []string{"PIPELINING"}
				}
				hop := pipeHop(f)
				defer hop.Close()
				if got := replyStrings(send(t, hop, nil, "a@x.test", "bad@x.test", "b@x.test")); got != tc.want {
					t.Errorf("replies %s, want %s", got, tc.want)
				}
				if n := len(f.bodyList()); n != tc.wantBodies {
					t.Errorf("%d bodies sent, want %d", n, tc.wantBodies)
				}
				// the connection is still good for the next message
				if got := replyStrings(send(t, hop, nil, "c@x.test")); !strings.HasPrefix(got, tc.final[:min(3, len(tc.final))]) {
					t.Errorf("next message: %s", got)
				}
				if n := f.connCount(); n != 1 {
					t.Errorf("%d connections, want 1", n)
				}
			})
		}
	}
}

// A server that answers a pipelined DATA with 354 although no recipient
// was accepted gets an empty body and an RSET before the next message.
func TestClientData354WithoutRecipients(t *testing.T) {
	f := &scriptMTA{ext: []string{"PIPELINING"}, data354: true, rcpt: map[string]string{"bad@x.test": "550 5.1.1 no"}}
	hop := pipeHop(f)
	defer hop.Close()
	if got := replyStrings(send(t, hop, nil, "bad@x.test")); got != "550 5.1.1 no" {
		t.Fatalf("replies %s", got)
	}
	if b := f.bodyList(); len(b) != 1 || b[0] != "1> .\r\n" {
		t.Fatalf("bodies %q, want just the dot", b)
	}
	send(t, hop, nil, "a@x.test")
	if c := cmdsOf(f, 1, true); c[len(c)-4] != "RSET" {
		t.Fatalf("no RSET before the next transaction: %q", c)
	}
}

// Bodies go out dot-stuffed with CRLF line ends whatever the spool holds,
// and the stream is never read whole: the dotWriter sees it in pieces.
func TestClientDotStuffing(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"plain", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{"no final line end", "a\r\nb", "a\r\nb\r\n.\r\n"},
		{"empty", "", ".\r\n"},
		{"leading dots", ".\r\n..x\r\n.y\r\n", "..\r\n...x\r\n..y\r\n.\r\n"},
		{"dot not at line start", "a.b\r\n a.\r\n", "a.b\r\n a.\r\n.\r\n"},
		{"bare LF", "a\nb\n.\nc", "a\r\nb\r\n..\r\nc\r\n.\r\n"},
		{"bare CR", "a\rb\r.\r", "a\r\nb\r\n..\r\n.\r\n"},
		{"CR CR LF", "a\r\r\nb\r\n", "a\r\n\r\nb\r\n.\r\n"},
		{"smuggling attempt", "x\n.\r\nMAIL FROM:<e@vil>\r\n", "x\r\n..\r\nMAIL FROM:<e@vil>\r\n.\r\n"},
		{"smuggling attempt 2", "x\r\n.\nRCPT TO:<e@vil>\r\n", "x\r\n..\r\nRCPT TO:<e@vil>\r\n.\r\n"},
		{"dot line at end", "a\r\n.", "a\r\n..\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// whole, byte by byte, and in odd pieces: same bytes on the wire
			for _, split := range []int{0, 1, 2, 3} {
				var out bytes.Buffer
				bw := bufio.NewWriterSize(&out, 16)
				d := newDotWriter(bw)
				var r io.Reader = strings.NewReader(tc.in)
				switch split {
				case 1:
					r = iotest.OneByteReader(r)
				case 2:
					r = iotest.HalfReader(r)
				case 3:
					r = iotest.DataErrReader(r)
				}
				if _, err := io.Copy(d, r); err != nil {
					t.Fatal(err)
				}
				d.Close()
				bw.Flush()
				if out.String() != tc.want {
					t.Errorf("split %d: %q -> %q, want %q", split, tc.in, out.String(), tc.want)
				}
			}
			// and through a hop, over the wire
			f := &scriptMTA{ext: []string{"PIPELINING"}}
			hop := pipeHop(f)
			defer hop.Close()
			if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"a@x.test"}, iotest.HalfReader(strings.NewReader(tc.in))); err != nil {
				t.Fatal(err)
			}
			if b := f.bodyList(); len(b) != 1 || b[0] != "1> "+tc.want {
				t.Errorf("server got %q, want %q", b, tc.want)
			}
		})
	}
}

func TestClientReplyParsing(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // Reply.String(), or "error"
	}{
		{"250 2.1.5 Ok\r\n", "250 2.1.5 Ok"},
		{"250 Ok\r\n", "250 Ok"},
		{"250\r\n", "250 "},
		{"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n", "550 5.1.1 first second third"},
		{"451 5.1.1 class mismatch\r\n", "451 5.1.1 class mismatch"},
		{"250 2.0.0\r\n", "250 2.0.0 "},
		{"550 1.2.3.4 not an enhanced code\r\n", "550 1.2.3.4 not an enhanced code"},
		{"250-a\r\n251 b\r\n", "error"},
		{"hello\r\n", "error"},
		{"25\r\n", "error"},
		{"250x\r\n", "error"},
		{"650 x\r\n", "error"},
		{"250-a\r\n", "error"}, // EOF inside a multi-line reply
	} {
		c := newSMTPConn(&fakeConn{r: strings.NewReader(tc.in)}, false, time.Second)
		r, err := c.readResponse()
		got := r.Reply.String()
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("%q: got %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
	// "451 5.1.1": the enhanced code's class must match: kept as text
	c := newSMTPConn(&fakeConn{r: strings.NewReader("451 5.1.1 x\r\n")}, false, time.Second)
	if r, _ := c.readResponse(); r.Enhanced != "" {
		t.Errorf("enhanced code %q taken from a reply of another class", r.Enhanced)
	}
}

// fakeConn is a net.Conn over a reader, for parsing tests.
type fakeConn struct {
	net.Conn
	r io.Reader
	w bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }

func TestClientXtext(t *testing.T) {
	for in, want := range map[string]string{
		"client.example":     "client.example",
		"[UNAVAILABLE]":      "[UNAVAILABLE]",
		"a+b=c":              "a+2Bb+3Dc",
		"two words":          "two+20words",
		"tab\there":          "tab+09here",
		"é":                  "+C3+A9",
		"IPV6:2001:db8::7":   "IPV6:2001:db8::7",
		"rfc822-addr@x.test": "rfc822-addr@x.test",
	} {
		if got := xtext(in); got != want {
			t.Errorf("xtext(%q) = %q, want %q", in, got, want)
		}
	}
}

// Extensions: what goes on MAIL and RCPT, and what is refused before
// anything is sent, per what the server announced.
func TestClientExtensions(t *testing.T) {
	dsnEnv := &envelope.Envelope{ID: "Q1", From: "s@y.test", DSNRet: "hdrs", DSNEnvID: "env id+1", Recipients: []envelope.Recipient{
		{Addr: "a@x.test", Status: envelope.Pending, DSNNotify: "SUCCESS,FAILURE", ORcpt: "rfc822;orig+tag@x.test"},
		{Addr: "b@x.test", Status: envelope.Pending, OrigTo: "alias@x.test"},
		{Addr: "c@x.test", Status: envelope.Pending, DSNNotify: "NEVER", ORcpt: "rfc822;dé@x.test"},
	}}
	for _, tc := range []struct {
		name      string
		ext       []string
		env       *envelope.Envelope
		wantCmds  []string // MAIL and RCPTs (nil: nothing sent)
		wantReply string   // for every recipient ("" the server's 250)
	}{
		{"SIZE sent", []string{"SIZE 1000"}, &envelope.Envelope{From: "s@y.test", Size: 999},
			[]string{"MAIL FROM:<s@y.test> SIZE=999", "RCPT TO:<a@x.test>"}, ""},
		{"SIZE exceeded: 5.3.4, nothing sent", []string{"SIZE 1000"}, &envelope.Envelope{From: "s@y.test", Size: 1001},
			nil, "552 5.3.4 message size 1001 exceeds size limit 1000 of host smtp:[fake.test:25]"},
		{"SIZE without a limit", []string{"SIZE"}, &envelope.Envelope{From: "s@y.test", Size: 1 << 40},
			[]string{"MAIL FROM:<s@y.test> SIZE=1099511627776", "RCPT TO:<a@x.test>"}, ""},
		{"no SIZE: no parameter, no limit", nil, &envelope.Envelope{From: "s@y.test", Size: 1 << 40},
			[]string{"MAIL FROM:<s@y.test>", "RCPT TO:<a@x.test>"}, ""},
		{"8BITMIME", []string{"8BITMIME"}, &envelope.Envelope{From: "s@y.test", Body8Bit: true},
			[]string{"MAIL FROM:<s@y.test> BODY=8BITMIME", "RCPT TO:<a@x.test>"}, ""},
		{"8-bit body to a server without 8BITMIME: sent as is", nil, &envelope.Envelope{From: "s@y.test", Body8Bit: true},
			[]string{"MAIL FROM:<s@y.test>", "RCPT TO:<a@x.test>"}, ""},
		{"SMTPUTF8", []string{"SMTPUTF8", "8BITMIME"}, &envelope.Envelope{From: "jösé@y.test", SMTPUTF8: true, Body8Bit: true},
			[]string{"MAIL FROM:<jösé@y.test> BODY=8BITMIME SMTPUTF8", "RCPT TO:<a@x.test>"}, ""},
		{"SMTPUTF8 not offered, UTF-8 sender: 5.6.7, nothing sent", []string{"8BITMIME"}, &envelope.Envelope{From: "jösé@y.test", SMTPUTF8: true},
			nil, "553 5.6.7 SMTPUTF8 is required (the sender address is not ASCII), but was not offered by host smtp:[fake.test:25]"},
		{"SMTPUTF8 not offered, UTF-8 header: 5.6.7", nil, &envelope.Envelope{From: "s@y.test", SMTPUTF8: true, UTF8Header: true},
			nil, "553 5.6.7 SMTPUTF8 is required (the message header is not ASCII), but was not offered by host smtp:[fake.test:25]"},
		{"SMTPUTF8 asked for an all-ASCII message, not offered: sent without it", []string{"8BITMIME"},
			&envelope.Envelope{From: "s@y.test", SMTPUTF8: true, Body8Bit: true},
			[]string{"MAIL FROM:<s@y.test> BODY=8BITMIME", "RCPT TO:<a@x.test>"}, ""},
		{"SMTPUTF8 not offered, UTF-8 recipient: 5.6.7", nil, &envelope.Envelope{From: "utf8-rcpt@y.test", SMTPUTF8: true},
			nil, "553 5.6.7 SMTPUTF8 is required (the recipient address is not ASCII), but was not offered by host smtp:[fake.test:25]"},
		{"DSN", []string{"DSN"}, dsnEnv, []string{
			"MAIL FROM:<s@y.test> RET=HDRS ENVID=env+20id+2B1",
			"RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Btag@x.test",
			"RCPT TO:<b@x.test> ORCPT=rfc822;alias@x.test",
			"RCPT TO:<c@x.test> NOTIFY=NEVER",
		}, ""},
		{"no DSN: no DSN parameters", nil, dsnEnv, []string{
			"MAIL FROM:<s@y.test>", "RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>", "RCPT TO:<c@x.test>",
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &scriptMTA{ext: append([]string{"PIPELINING", "ENHANCEDSTATUSCODES"}, tc.ext...)}
			hop := pipeHop(f)
			defer hop.Close()
			rcpts := []string{"a@x.test"}
			if tc.env.From == "utf8-rcpt@y.test" {
				rcpts = []string{"jösé@x.test"}
			}
			if tc.env == dsnEnv {
				rcpts = []string{"a@x.test", "b@x.test", "c@x.test"}
			}
			replies := send(t, hop, tc.env, rcpts...)
			for _, r := range replies {
				if tc.wantReply == "" && !r.OK() || tc.wantReply != "" && r.String() != tc.wantReply {
					t.Errorf("reply %s, want %q", r, tc.wantReply)
				}
			}
			var got []string
			for _, c := range cmdsOf(f, 1, true) {
				if strings.HasPrefix(c, "MAIL") || strings.HasPrefix(c, "RCPT") {
					got = append(got, c)
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.wantCmds, "\n") {
				t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantCmds, "\n"))
			}
		})
	}
}

// A server that refuses EHLO gets HELO, and then plain one-at-a-time SMTP
// without any extension parameter.
func TestClientHELOFallback(t *testing.T) {
	f := &scriptMTA{ehloReply: "502 5.5.2 Error: command not recognized"}
	hop := pipeHop(f)
	defer hop.Close()
	send(t, hop, &envelope.Envelope{From: "s@y.test", Size: 10, Body8Bit: true}, "a@x.test")
	got := strings.Join(cmdsOf(f, 1, false)[:4], "\n")
	if want := "EHLO relay.test\nHELO relay.test\nMAIL FROM:<s@y.test>\nRCPT TO:<a@x.test>"; got != want {
		t.Fatalf("commands:\n%s\nwant:\n%s", got, want)
	}
}

// XCLIENT: after EHLO, the client's address and HELO as xtext with the
// attributes the server announced, then EHLO again under the client's
// name. A pooled connection keeps that identity: reused for the same
// client without another XCLIENT, never for another client (Postfix
// refuses a second XCLIENT) nor for a message without client information.
func TestClientXCLIENT(t *testing.T) {
	f := &scriptMTA{ext: []string{"PIPELINING", "XCLIENT NAME ADDR PROTO HELO LOGIN"}}
	hop := pipeHop(f)
	hop.XClient = true
	defer hop.Close()
	env := func(addr, helo string) *envelope.Envelope {
		return &envelope.Envelope{ID: "Q1", From: "s@y.test", ClientAddr: addr, ClientHelo: helo}
	}
	send(t, hop, env("192.0.2.7", "client.example"), "a@x.test")
	send(t, hop, env("192.0.2.7", "client.example"), "b@x.test")
	send(t, hop, env("[2001:db8::7]:4711", "we=ird+helo name"), "c@x.test")
	send(t, hop, env("", ""), "d@x.test")
	send(t, hop, env("192.0.2.7", "client.example"), "e@x.test")
	for i, want := range [][]string{
		{
			"EHLO relay.test",
			"XCLIENT ADDR=192.0.2.7 NAME=[UNAVAILABLE] HELO=client.example PROTO=ESMTP",
			"EHLO client.example",
			"MAIL FROM:<s@y.test>", "RCPT TO:<a@x.test>", "DATA",
			"MAIL FROM:<s@y.test>", "RCPT TO:<b@x.test>", "DATA",
			"MAIL FROM:<s@y.test>", "RCPT TO:<e@x.test>", "DATA",
		},
		{
			"EHLO relay.test",
			"XCLIENT ADDR=IPV6:2001:db8::7 NAME=[UNAVAILABLE] HELO=we+3Dird+2Bhelo+20name PROTO=ESMTP",
			"EHLO relay.test", // not a usable EHLO name: ours
			"MAIL FROM:<s@y.test>", "RCPT TO:<c@x.test>", "DATA",
		},
		{"EHLO relay.test", "MAIL FROM:<s@y.test>", "RCPT TO:<d@x.test>", "DATA"},
	} {
		if got := cmdsOf(f, i+1, false); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("connection %d:\n%s\nwant:\n%s", i+1, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	t.Run("only announced attributes", func(t *testing.T) {
		f := &scriptMTA{ext: []string{"XCLIENT ADDR HELO"}}
		hop := pipeHop(f)
		hop.XClient = true
		defer hop.Close()
		send(t, hop, env("192.0.2.7", "client.example"), "a@x.test")
		if c := cmdsOf(f, 1, false); c[1] != "XCLIENT ADDR=192.0.2.7 HELO=client.example" {
			t.Errorf("XCLIENT line %q", c[1])
		}
	})
	t.Run("not announced: not sent", func(t *testing.T) {
		f := &scriptMTA{ext: []string{"PIPELINING"}}
		hop := pipeHop(f)
		hop.XClient = true
		defer hop.Close()
		send(t, hop, env("192.0.2.7", "client.example"), "a@x.test")
		send(t, hop, env("192.0.2.8", "other.example"), "a@x.test")
		for _, c := range f.commands() {
			if strings.HasPrefix(c, "1> XCLIENT") {
				t.Errorf("sent %q", c)
			}
		}
		if n := f.connCount(); n != 1 {
			t.Errorf("%d connections, want 1 (reused)", n)
		}
	})
	t.Run("refused: the message waits", func(t *testing.T) {
		f := &scriptMTA{ext: []string{"XCLIENT ADDR"}, xclient: "550 5.7.0 Error: insufficient authorization"}
		hop := pipeHop(f)
		hop.XClient = true
		defer hop.Close()
		_, err := hop.Send(context.Background(), env("192.0.2.7", "c"), "s@y.test", []string{"a@x.test"}, strings.NewReader("x\r\n"))
		if err == nil || !strings.Contains(err.Error(), "XCLIENT: 550 5.7.0") {
			t.Errorf("err %v", err)
		}
	})
}

// XFORWARD goes with every transaction (Postfix forgets it after each),
// pipelined with MAIL, with the announced attributes only.
func TestClientXFORWARD(t *testing.T) {
	f := &scriptMTA{ext: []string{"PIPELINING", "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"}}
	hop := pipeHop(f)
	hop.XForward = true
	defer hop.Close()
	send(t, hop, &envelope.Envelope{ID: "Q7", From: "s@y.test", ClientAddr: "192.0.2.7", ClientHelo: "client.example"}, "a@x.test")
	send(t, hop, &envelope.Envelope{ID: "Q8", From: "s@y.test"}, "b@x.test")
	want := []string{
		"XFORWARD IDENT=Q7 ADDR=192.0.2.7 NAME=[UNAVAILABLE] HELO=client.example PROTO=ESMTP SOURCE=REMOTE",
		"MAIL FROM:<s@y.test>", "RCPT TO:<a@x.test>", "DATA",
		"XFORWARD IDENT=Q8",
		"MAIL FROM:<s@y.test>", "RCPT TO:<b@x.test>", "DATA",
	}
	if got := cmdsOf(f, 1, true); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	found := false
	for _, c := range f.chunkList() {
		found = found || strings.HasPrefix(c, "1> XFORWARD IDENT=Q7 ") && strings.HasSuffix(c, "\r\nMAIL FROM:<s@y.test>\r\nRCPT TO:<a@x.test>\r\nDATA\r\n")
	}
	if !found {
		t.Errorf("XFORWARD not in the same write as MAIL: %q", f.chunkList())
	}

	f = &scriptMTA{ext: []string{"XFORWARD ADDR"}}
	hop = pipeHop(f)
	hop.XForward = true
	defer hop.Close()
	send(t, hop, &envelope.Envelope{ID: "Q7", From: "s@y.test", ClientAddr: "192.0.2.7:1234"}, "a@x.test")
	if c := cmdsOf(f, 1, true); c[0] != "XFORWARD ADDR=192.0.2.7" {
		t.Errorf("XFORWARD line %q", c[0])
	}
}

// LMTP: LHLO, and after the dot one reply per accepted recipient, each
// mapped to its recipient; refused RCPTs keep their own reply.
func TestClientLMTP(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprint("pipelining=", pipelining), func(t *testing.T) {
			f := &scriptMTA{lmtp: true,
				rcpt:      map[string]string{"b@x.test": "550 5.1.1 no such user"},
				lmtpFinal: map[string]string{"c@x.test": "452 4.2.2 mailbox full", "d@x.test": "552 5.2.2 quota exceeded"}}
			if pipelining {
				f.ext = []string{"PIPELINING", "ENHANCEDSTATUSCODES"}
			}
			hop := pipeHop(f)
			hop.LMTP = true
			defer hop.Close()
			got := replyStrings(send(t, hop, nil, "a@x.test", "b@x.test", "c@x.test", "d@x.test"))
			want := "250 2.0.0 <a@x.test> delivered | 550 5.1.1 no such user | 452 4.2.2 mailbox full | 552 5.2.2 quota exceeded"
			if got != want {
				t.Errorf("replies:\n got %s\nwant %s", got, want)
			}
			if c := cmdsOf(f, 1, false); c[0] != "LHLO relay.test" {
				t.Errorf("greeting command %q", c[0])
			}
			// the connection stays usable: no stray reply left behind
			if got := replyStrings(send(t, hop, nil, "e@x.test")); got != "250 2.0.0 <e@x.test> delivered" {
				t.Errorf("next message: %s", got)
			}
			if n := f.connCount(); n != 1 {
				t.Errorf("%d connections", n)
			}
		})
	}
	t.Run("connection lost after the first reply", func(t *testing.T) {
		f := &scriptMTA{lmtp: true, ext: []string{"PIPELINING"}, lmtpDrop: 1}
		hop := pipeHop(f)
		hop.LMTP = true
		defer hop.Close()
		rs := send(t, hop, nil, "a@x.test", "b@x.test", "c@x.test")
		if !rs[0].OK() || rs[1].Code != 451 || rs[1].Enhanced != "4.4.2" || rs[2].Code != 451 {
			t.Errorf("replies %s", replyStrings(rs))
		}
		send(t, hop, nil, "d@x.test") // a new connection
		if n := f.connCount(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
}

// testCert is a self-signed certificate for fake.test and 127.0.0.1, and
// a pool that trusts it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fake.test"},
		DNSNames:              []string{"fake.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestClientSTARTTLS(t *testing.T) {
	cert, roots := testCert(t)
	srvTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	for _, tc := range []struct {
		name      string
		policy    string
		offer     bool
		broken    bool
		refuse    string // the reply to STARTTLS
		cfg       *tls.Config
		wantTLS   bool   // the message went over TLS
		wantReply string // for the recipient, "" 250, "error" Send failed
		wantConns int
	}{
		{"opportunistic, self-signed: not verified", "", true, false, "", nil, true, "", 1},
		{"opportunistic by name", TLSOpportunistic, true, false, "", nil, true, "", 1},
		{"opportunistic, not offered: plaintext", "", false, false, "", nil, false, "", 1},
		{"opportunistic, handshake fails: plaintext on a new connection", "", true, true, "", nil, false, "", 2},
		{"opportunistic, no common TLS version: plaintext on a new connection", "", true, false, "", &tls.Config{MaxVersion: tls.VersionTLS12}, false, "", 2},
		{"opportunistic, STARTTLS refused: plaintext on the same connection", "", true, false, "454 4.7.0 TLS not available due to local problem", nil, false, "", 1},
		{"none: never", TLSNone, true, false, "", nil, false, "", 1},
		{"require, trusted", TLSRequire, true, false, "", &tls.Config{RootCAs: roots}, true, "", 1},
		{"require, untrusted: 4.7.5", TLSRequire, true, false, "", nil, false, "451 4.7.5", 1},
		{"require, untrusted, verification off", TLSRequire, true, false, "", &tls.Config{InsecureSkipVerify: true}, true, "", 1},
		{"require, wrong name: 4.7.5", TLSRequire, true, false, "", &tls.Config{RootCAs: roots, ServerName: "other.test"}, false, "451 4.7.5", 1},
		{"require, not offered: 4.7.4", TLSRequire, false, false, "", &tls.Config{RootCAs: roots}, false, "451 4.7.4", 1},
		{"require, handshake fails: 4.7.5", TLSRequire, true, true, "", &tls.Config{RootCAs: roots}, false, "451 4.7.5", 1},
		{"require, STARTTLS refused: 4.7.5", TLSRequire, true, false, "454 4.7.0 TLS not available due to local problem", &tls.Config{RootCAs: roots}, false, "451 4.7.5", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &scriptMTA{ext: []string{"PIPELINING"}, tls: srvTLS, tlsBroken: tc.broken, tlsReply: tc.refuse}
			if tc.offer {
				f.ext = append(f.ext, "STARTTLS")
			}
			// TCP, not net.Pipe: a failing handshake needs the kernel's
			// buffers (both sides write at once)
			hop := &SMTPHop{Addr: f.listen(t), LocalName: "relay.test", Timeout: 5 * time.Second}
			hop.TLSPolicy, hop.TLSConfig = tc.policy, tc.cfg
			defer hop.Close()
			replies, err := hop.Send(context.Background(), &envelope.Envelope{From: "s@y.test"}, "s@y.test", []string{"a@x.test"}, strings.NewReader("x\r\n"))
			switch {
			case tc.wantReply == "error":
				if err == nil {
					t.Fatalf("no error; replies %v", replies)
				}
			case err != nil:
				t.Fatalf("Send: %v", err)
			case tc.wantReply == "" && !replies[0].OK(),
				tc.wantReply != "" && !strings.HasPrefix(replies[0].String(), tc.wantReply):
				t.Fatalf("reply %s, want %q", replies[0], tc.wantReply)
			}
			cmds := strings.Join(f.commands(), "\n")
			sentTLS := strings.Contains(cmds, "[TLS]\n") && strings.Contains(cmds, "MAIL FROM")
			if sentTLS != tc.wantTLS {
				t.Errorf("over TLS: %v, want %v\n%s", sentTLS, tc.wantTLS, cmds)
			}
			if tc.wantTLS && !strings.Contains(cmds, "[TLS]\n1> EHLO relay.test") {
				t.Errorf("no EHLO after STARTTLS:\n%s", cmds)
			}
			if strings.Contains(cmds, "STARTTLS") && tc.policy == TLSNone {
				t.Errorf("STARTTLS with policy none:\n%s", cmds)
			}
			if n := f.connCount(); n != tc.wantConns {
				t.Errorf("%d connections, want %d", n, tc.wantConns)
			}
		})
	}
	t.Run("unknown policy", func(t *testing.T) {
		hop := pipeHop(&scriptMTA{})
		hop.TLSPolicy = "sometimes"
		if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"a@x.test"}, strings.NewReader("x")); err == nil {
			t.Fatal("no error")
		}
	})
}

// A server that stops answering: the per-command timeout, the context's
// deadline and its cancellation each end the attempt promptly, with an
// error (all recipients retried).
func TestClientStallAndTimeouts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stall   string
		timeout time.Duration // hop.Timeout
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error // errors.Is, nil: any error
	}{
		{"per-command timeout at MAIL", "MAIL", 200 * time.Millisecond, func() (context.Context, context.CancelFunc) { return context.Background(), func() {} }, nil},
		{"context deadline at DATA", "DATA", 10 * time.Second, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		}, context.DeadlineExceeded},
		{"context cancelled at RCPT", "RCPT", 10 * time.Second, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"context cancelled at EHLO", "EHLO", 10 * time.Second, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(300*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
		{"context cancelled before", "", 10 * time.Second, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &scriptMTA{ext: []string{"PIPELINING"}, stall: tc.stall}
			addr := f.listen(t)
			hop := &SMTPHop{Addr: addr, LocalName: "relay.test", Timeout: tc.timeout}
			defer hop.Close()
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			_, err := hop.Send(ctx, &envelope.Envelope{}, "", []string{"a@x.test"}, strings.NewReader("x\r\n"))
			if err == nil {
				t.Fatal("no error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// FuzzDotWriter checks the stuffer against the rule written out: every CR
// LF, bare CR or bare LF ends a line, each line goes out with CRLF and one
// more dot if it starts with one, then ".\r\n" ends the data.
func FuzzDotWriter(f *testing.F) {
	for _, s := range []string{"a\r\nb\r\n", ".\r\n..x", "a\rb\n.\r\r\n", "x\n.\r\nMAIL"} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, in string, chunk uint8) {
		s := strings.ReplaceAll(strings.ReplaceAll(in, "\r\n", "\n"), "\r", "\n")
		var want strings.Builder
		if s != "" {
			for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
				if strings.HasPrefix(line, ".") {
					want.WriteByte('.')
				}
				want.WriteString(line + "\r\n")
			}
		}
		want.WriteString(".\r\n")
		var out bytes.Buffer
		bw := bufio.NewWriterSize(&out, 16)
		d := newDotWriter(bw)
		n := int(chunk%64) + 1
		for i := 0; i < len(in); i += n {
			d.Write([]byte(in[i:min(i+n, len(in))]))
		}
		d.Close()
		bw.Flush()
		if out.String() != want.String() {
			t.Fatalf("%q in pieces of %d -> %q, want %q", in, n, out.String(), want.String())
		}
	})
}

// Lines over the limit are broken with CRLF SPACE, in any write size; the
// rest passes unchanged.
func TestLineBreaker(t *testing.T) {
	long := strings.Repeat("a", 2500)
	in := "Subject: x\r\n\r\n" + long + "\r\nshort\r\n"
	want := "Subject: x\r\n\r\n" + long[:998] + "\r\n " + long[998:1995] + "\r\n " + long[1995:] + "\r\nshort\r\n"
	for _, chunk := range []int{1, 7, 998, 999, 4096} {
		var out bytes.Buffer
		lb := &lineBreaker{w: &out, max: 998}
		for b := []byte(in); len(b) > 0; {
			n := min(chunk, len(b))
			lb.Write(b[:n])
			b = b[n:]
		}
		if out.String() != want {
			t.Errorf("chunk %d: lines %v", chunk, lineLengths(out.String()))
		}
		for _, l := range strings.Split(out.String(), "\r\n") {
			if len(l) > 998 {
				t.Errorf("chunk %d: a line of %d octets left", chunk, len(l))
			}
		}
	}
}

func lineLengths(s string) []int {
	var n []int
	for _, l := range strings.Split(s, "\r\n") {
		n = append(n, len(l))
	}
	return n
}
