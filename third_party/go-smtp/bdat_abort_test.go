package smtp_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// abortBackend's Data takes its time to return: 50 ms after its reader
// fails (a transfer aborted by RSET or EHLO), 200 ms after a whole message.
// So an aborted transfer's result is still on its way when the client's
// next transaction ends.
type abortBackend struct {
	mu   sync.Mutex
	msgs []string
}

type abortSession struct {
	be   *abortBackend
	from string // written by Mail and Reset, read by Data
}

func (b *abortBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &abortSession{be: b}, nil }
func (s *abortSession) Reset()                                      { s.from = "" }
func (s *abortSession) Logout() error                               { return nil }
func (s *abortSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *abortSession) Rcpt(string, *smtp.RcptOptions) error        { return nil }
func (s *abortSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		time.Sleep(50 * time.Millisecond)
		return errors.New("aborted transfer: " + s.from)
	}
	time.Sleep(200 * time.Millisecond)
	s.be.mu.Lock()
	s.be.msgs = append(s.be.msgs, s.from+":"+string(b))
	s.be.mu.Unlock()
	return nil
}

// A BDAT transfer aborted by RSET, EHLO or HELO is finished (its Data call
// returned) before the next transaction starts: its result never answers
// the next message, and the session is not reset under it.
func TestServer_BDATAbortedThenNextTransaction(t *testing.T) {
	for _, abort := range []string{"RSET", "EHLO localhost", "HELO localhost"} {
		t.Run(abort, func(t *testing.T) {
			be := &abortBackend{}
			s := smtp.NewServer(be)
			s.Domain = "localhost"
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go s.Serve(l)
			defer s.Close()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)
			reply := func() string {
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						t.Fatalf("reading a reply: %v", err)
					}
					if len(l) < 4 || l[3] != '-' {
						return strings.TrimSpace(l)
					}
				}
			}
			cmd := func(line, want string) {
				t.Helper()
				io.WriteString(c, line+"\r\n")
				if got := reply(); !strings.HasPrefix(got, want) {
					t.Fatalf("%q: %q, want %s", line, got, want)
				}
			}
			reply() // greeting
			cmd("EHLO localhost", "250")
			cmd("MAIL FROM:<first@example.org>", "250")
			cmd("RCPT TO:<x@example.com>", "250")
			io.WriteString(c, "BDAT 5\r\nhello")
			if got := reply(); !strings.HasPrefix(got, "250") {
				t.Fatalf("first chunk: %q", got)
			}
			cmd(abort, "250")
			cmd("MAIL FROM:<second@example.org>", "250")
			cmd("RCPT TO:<x@example.com>", "250")
			io.WriteString(c, "BDAT 5 LAST\r\nworld")
			if got := reply(); !strings.HasPrefix(got, "250") {
				t.Errorf("the second message was answered %q: the aborted first transfer's result", got)
			}
			be.mu.Lock()
			defer be.mu.Unlock()
			if len(be.msgs) != 1 || be.msgs[0] != "second@example.org:world" {
				t.Errorf("delivered %q, want the second message only", be.msgs)
			}
		})
	}
}
