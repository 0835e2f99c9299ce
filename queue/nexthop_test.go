package queue

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-smtp"
)

// fakeMTA is an in-process SMTP server with per-recipient RCPT answers.
type fakeMTA struct {
	rcptCode map[string]int
	dataCode int
	conns    atomic.Int64
	mu       sync.Mutex
	got      []string // "from>rcpt1,rcpt2|body"
}

func (f *fakeMTA) NewSession(c *smtp.Conn) (smtp.Session, error) {
	f.conns.Add(1)
	return &fakeSession{f: f}, nil
}

type fakeSession struct {
	f     *fakeMTA
	from  string
	rcpts []string
}

func (s *fakeSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *fakeSession) Logout() error { return nil }
func (s *fakeSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *fakeSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if c := s.f.rcptCode[to]; c != 0 {
		return &smtp.SMTPError{Code: c, EnhancedCode: smtp.EnhancedCode{c / 100, 1, 1}, Message: "scripted"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *fakeSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	if s.f.dataCode != 0 {
		return &smtp.SMTPError{Code: s.f.dataCode, EnhancedCode: smtp.EnhancedCode{s.f.dataCode / 100, 0, 0}, Message: "data scripted"}
	}
	s.f.mu.Lock()
	s.f.got = append(s.f.got, s.from+">"+strings.Join(s.rcpts, ",")+"|"+string(b))
	s.f.mu.Unlock()
	return nil
}

func startFakeMTA(t *testing.T, f *fakeMTA) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(f)
	srv.Domain = "fake.test"
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestSMTPHopPerRecipientReplies(t *testing.T) {
	f := &fakeMTA{rcptCode: map[string]int{"bad@x.test": 550, "later@x.test": 451}}
	hop := &SMTPHop{Addr: startFakeMTA(t, f), LocalName: "relay.test"}
	defer hop.Close()
	env := &Envelope{ID: "T1", From: "s@y.test"}
	replies, err := hop.Send(context.Background(), env, env.From, []string{"ok@x.test", "bad@x.test", "later@x.test"}, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !replies[0].OK() || replies[1].Code != 550 || !replies[1].Permanent() || replies[2].Code != 451 || replies[2].Permanent() {
		t.Fatalf("replies = %v", replies)
	}
	if len(f.got) != 1 || f.got[0] != "s@y.test>ok@x.test|Subject: t\r\n\r\nhi\r\n" {
		t.Fatalf("server got %q", f.got)
	}
}

func TestSMTPHopDataRefusalAppliesToAccepted(t *testing.T) {
	f := &fakeMTA{rcptCode: map[string]int{"bad@x.test": 550}, dataCode: 452}
	hop := &SMTPHop{Addr: startFakeMTA(t, f), LocalName: "relay.test"}
	defer hop.Close()
	replies, err := hop.Send(context.Background(), &Envelope{}, "", []string{"a@x.test", "bad@x.test"}, strings.NewReader("x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if replies[0].Code != 452 || replies[1].Code != 550 {
		t.Fatalf("replies = %v", replies)
	}
}

// Consecutive messages reuse one connection.
func TestSMTPHopReusesConnections(t *testing.T) {
	f := &fakeMTA{}
	hop := &SMTPHop{Addr: startFakeMTA(t, f), LocalName: "relay.test"}
	defer hop.Close()
	for i := range 5 {
		if _, err := hop.Send(context.Background(), &Envelope{}, "s@y.test", []string{"a@x.test"}, strings.NewReader("m\r\n")); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if n := f.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential messages, want 1", n)
	}
	if len(f.got) != 5 {
		t.Fatalf("server got %d messages", len(f.got))
	}
}

func TestSMTPHopDownIsAnError(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	hop := &SMTPHop{Addr: addr}
	if _, err := hop.Send(context.Background(), &Envelope{}, "", []string{"a@x.test"}, strings.NewReader("m\r\n")); err == nil {
		t.Fatal("no error from a next hop that is down")
	}
}
