package nexthop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"mailfwd/queue/envelope"

	"github.com/emersion/go-smtp"
)

// fakeMTA is an in-process go-smtp server (a second, independent SMTP
// implementation) with per-recipient RCPT answers; it records the MAIL and
// RCPT options it parsed and whether the session was TLS.
type fakeMTA struct {
	rcptCode map[string]int
	dataCode int
	lmtpCode map[string]int // LMTP: per-recipient reply to the dot
	conns    atomic.Int64
	mu       sync.Mutex
	got      []string // "from>rcpt1,rcpt2|body"
	mailOpts []smtp.MailOptions
	rcptOpts []smtp.RcptOptions
	tls      []bool // per message
}

func (f *fakeMTA) NewSession(c *smtp.Conn) (smtp.Session, error) {
	f.conns.Add(1)
	return &fakeSession{f: f, c: c}, nil
}

type fakeSession struct {
	f     *fakeMTA
	c     *smtp.Conn
	from  string
	rcpts []string
}

func (s *fakeSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *fakeSession) Logout() error { return nil }
func (s *fakeSession) Mail(from string, o *smtp.MailOptions) error {
	s.from = from
	s.f.mu.Lock()
	s.f.mailOpts = append(s.f.mailOpts, *o)
	s.f.mu.Unlock()
	return nil
}
func (s *fakeSession) Rcpt(to string, o *smtp.RcptOptions) error {
	s.f.mu.Lock()
	s.f.rcptOpts = append(s.f.rcptOpts, *o)
	s.f.mu.Unlock()
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
	_, isTLS := s.c.TLSConnectionState()
	s.f.mu.Lock()
	s.f.got = append(s.f.got, s.from+">"+strings.Join(s.rcpts, ",")+"|"+string(b))
	s.f.tls = append(s.f.tls, isTLS)
	s.f.mu.Unlock()
	return nil
}

// LMTPData answers per recipient from lmtpCode.
func (s *fakeSession) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	if err := s.Data(r); err != nil {
		return err
	}
	for _, rc := range s.rcpts {
		var err error
		if c := s.f.lmtpCode[rc]; c != 0 {
			err = &smtp.SMTPError{Code: c, EnhancedCode: smtp.EnhancedCode{c / 100, 2, 2}, Message: "lmtp scripted " + rc}
		}
		status.SetStatus(rc, err)
	}
	return nil
}

func startFakeMTA(t *testing.T, f *fakeMTA, opts ...func(*smtp.Server)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(f)
	srv.Domain = "fake.test"
	for _, o := range opts {
		o(srv)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func TestSMTPHopPerRecipientReplies(t *testing.T) {
	f := &fakeMTA{rcptCode: map[string]int{"bad@x.test": 550, "later@x.test": 451}}
	hop := &SMTPHop{Addr: startFakeMTA(t, f), LocalName: "relay.test"}
	defer hop.Close()
	env := &envelope.Envelope{ID: "T1", From: "s@y.test"}
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
	replies, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"a@x.test", "bad@x.test"}, strings.NewReader("x\r\n"))
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
		if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "s@y.test", []string{"a@x.test"}, strings.NewReader("m\r\n")); err != nil {
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
	if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"a@x.test"}, strings.NewReader("m\r\n")); err == nil {
		t.Fatal("no error from a next hop that is down")
	}
}

// A pooled connection that the server closed while it was idle (silently,
// or with Postfix's "421 timeout" first) is detected on use and the
// message goes once more on a new connection: delivered once, no error.
func TestSMTPHopPooledConnectionClosed(t *testing.T) {
	for _, tc := range []struct{ name, last string }{
		{"closed silently", ""},
		{"421 then closed", "421 4.4.2 fake.test Error: timeout exceeded\r\n"},
	} {
		for _, pipelining := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s pipelining=%v", tc.name, pipelining), func(t *testing.T) {
				f := &scriptMTA{}
				if pipelining {
					f.ext = []string{"PIPELINING"}
				}
				hop := &SMTPHop{Addr: f.listen(t), LocalName: "relay.test", Timeout: 5 * time.Second}
				defer hop.Close()
				send(t, hop, nil, "a@x.test")
				f.closeAll(tc.last)
				time.Sleep(50 * time.Millisecond) // the FIN arrives
				if got := replyStrings(send(t, hop, nil, "b@x.test")); !strings.HasPrefix(got, "250 ") {
					t.Fatalf("reply %s", got)
				}
				if n := f.connCount(); n != 2 {
					t.Errorf("%d connections, want 2", n)
				}
				if b := f.bodyList(); len(b) != 2 || !strings.HasPrefix(b[1], "2> ") {
					t.Errorf("bodies %q, want one per message, the second on connection 2", b)
				}
				send(t, hop, nil, "c@x.test") // and the new one is pooled
				if n := f.connCount(); n != 2 {
					t.Errorf("%d connections after a third message, want 2", n)
				}
			})
		}
	}
}

// Only a pooled connection is retried, only once, and never after the body
// started: a new connection that fails is the attempt's failure, and a
// message whose body was partly sent is not sent again at once.
func TestSMTPHopNoRetry(t *testing.T) {
	t.Run("fresh connection fails", func(t *testing.T) {
		f := &scriptMTA{stall: "MAIL"}
		hop := &SMTPHop{Addr: f.listen(t), LocalName: "relay.test", Timeout: 200 * time.Millisecond}
		defer hop.Close()
		if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"a@x.test"}, strings.NewReader("x\r\n")); err == nil {
			t.Fatal("no error")
		}
		if n := f.connCount(); n != 1 {
			t.Errorf("%d connections, want 1", n)
		}
	})
	t.Run("body read fails on a pooled connection", func(t *testing.T) {
		f := &scriptMTA{ext: []string{"PIPELINING"}}
		hop := pipeHop(f)
		defer hop.Close()
		send(t, hop, nil, "a@x.test")
		body := io.MultiReader(strings.NewReader("Subject: partial\r\n"), iotest.ErrReader(errors.New("disk error")))
		_, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"b@x.test"}, body)
		if err == nil || !strings.Contains(err.Error(), "disk error") {
			t.Fatalf("err %v", err)
		}
		if n := f.connCount(); n != 1 {
			t.Errorf("%d connections, want 1 (no retry once the body started)", n)
		}
		send(t, hop, nil, "c@x.test") // the broken connection was not pooled
		if n := f.connCount(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
	})
	t.Run("pooled and fresh both fail", func(t *testing.T) {
		f := &scriptMTA{}
		addr := f.listen(t)
		hop := &SMTPHop{Addr: addr, LocalName: "relay.test", Timeout: 500 * time.Millisecond}
		defer hop.Close()
		send(t, hop, nil, "a@x.test")
		f.mu.Lock()
		f.stall = "MAIL"
		f.mu.Unlock()
		f.closeAll("")
		time.Sleep(50 * time.Millisecond)
		if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"b@x.test"}, strings.NewReader("x\r\n")); err == nil {
			t.Fatal("no error")
		}
		if n := f.connCount(); n != 2 {
			t.Errorf("%d connections, want 2 (one retry)", n)
		}
	})
}

// The pool: idle connections expire after IdleTime (and get a QUIT), and
// no more than MaxIdle are kept.
func TestSMTPHopPoolLimits(t *testing.T) {
	t.Run("idle time", func(t *testing.T) {
		f := &scriptMTA{ext: []string{"PIPELINING"}}
		hop := pipeHop(f)
		hop.IdleTime = 50 * time.Millisecond
		defer hop.Close()
		send(t, hop, nil, "a@x.test")
		send(t, hop, nil, "a@x.test")
		time.Sleep(100 * time.Millisecond)
		send(t, hop, nil, "a@x.test")
		if n := f.connCount(); n != 2 {
			t.Errorf("%d connections, want 2", n)
		}
		deadline := time.Now().Add(2 * time.Second)
		for !slices.Contains(f.commands(), "1> QUIT") {
			if time.Now().After(deadline) {
				t.Fatalf("expired connection got no QUIT: %q", f.commands())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("max idle", func(t *testing.T) {
		f := &scriptMTA{ext: []string{"PIPELINING"}, bodyDelay: 100 * time.Millisecond}
		hop := pipeHop(f)
		hop.MaxIdle = 2
		defer hop.Close()
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := hop.Send(context.Background(), &envelope.Envelope{}, "", []string{"a@x.test"}, strings.NewReader("x\r\n")); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		hop.mu.Lock()
		idle := len(hop.idle)
		hop.mu.Unlock()
		if n := f.connCount(); n != 5 || idle != 2 {
			t.Errorf("%d connections, %d idle; want 5 and 2", n, idle)
		}
	})
}

// Against go-smtp's server: what we send parses as meant there (DSN
// parameters and xtext, SMTPUTF8, 8BITMIME), STARTTLS, and LMTP.
func TestSMTPHopGoSMTPInterop(t *testing.T) {
	t.Run("DSN SMTPUTF8 8BITMIME", func(t *testing.T) {
		f := &fakeMTA{}
		hop := &SMTPHop{Addr: startFakeMTA(t, f, func(s *smtp.Server) { s.EnableDSN, s.EnableSMTPUTF8 = true, true }), LocalName: "relay.test"}
		defer hop.Close()
		env := &envelope.Envelope{ID: "Q1", From: "jösé@y.test", SMTPUTF8: true, Body8Bit: true, DSNRet: "FULL", DSNEnvID: "id+=1 x",
			Recipients: []envelope.Recipient{{Addr: "a@x.test", Status: envelope.Pending, DSNNotify: "SUCCESS,DELAY", ORcpt: "rfc822;o+1@x.test"}}}
		replies, err := hop.Send(context.Background(), env, env.From, []string{"a@x.test"}, strings.NewReader("Subject: é\r\n\r\nü\r\n"))
		if err != nil || !replies[0].OK() {
			t.Fatalf("%v %v", replies, err)
		}
		m, r := f.mailOpts[0], f.rcptOpts[0]
		if !m.UTF8 || m.Body != smtp.Body8BitMIME || m.Return != smtp.DSNReturnFull || m.EnvelopeID != "id+=1 x" {
			t.Errorf("MAIL options %+v", m)
		}
		if fmt.Sprint(r.Notify) != "[SUCCESS DELAY]" || r.OriginalRecipient != "o+1@x.test" || r.OriginalRecipientType != smtp.DSNAddressTypeRFC822 {
			t.Errorf("RCPT options %+v", r)
		}
		if f.got[0] != "jösé@y.test>a@x.test|Subject: é\r\n\r\nü\r\n" {
			t.Errorf("got %q", f.got[0])
		}
	})
	t.Run("STARTTLS", func(t *testing.T) {
		cert, roots := testCert(t)
		f := &fakeMTA{}
		addr := startFakeMTA(t, f, func(s *smtp.Server) { s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}} })
		for _, policy := range []string{"", TLSRequire} {
			hop := &SMTPHop{Addr: addr, LocalName: "relay.test", TLSPolicy: policy, TLSConfig: &tls.Config{RootCAs: roots}}
			replies, err := hop.Send(context.Background(), &envelope.Envelope{}, "s@y.test", []string{"a@x.test"}, strings.NewReader("x\r\n"))
			hop.Close()
			if err != nil || !replies[0].OK() {
				t.Fatalf("%s: %v %v", policy, replies, err)
			}
		}
		if fmt.Sprint(f.tls) != "[true true]" {
			t.Errorf("TLS per message: %v", f.tls)
		}
	})
	t.Run("LMTP", func(t *testing.T) {
		f := &fakeMTA{rcptCode: map[string]int{"b@x.test": 550}, lmtpCode: map[string]int{"c@x.test": 452, "d@x.test": 552}}
		hop := &SMTPHop{Addr: startFakeMTA(t, f, func(s *smtp.Server) { s.LMTP = true }), LocalName: "relay.test", LMTP: true}
		defer hop.Close()
		replies, err := hop.Send(context.Background(), &envelope.Envelope{}, "s@y.test", []string{"a@x.test", "b@x.test", "c@x.test", "d@x.test"}, strings.NewReader("x\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if !replies[0].OK() || replies[1].Code != 550 || replies[2].Code != 452 || !strings.HasSuffix(replies[2].Text, "lmtp scripted c@x.test") ||
			replies[3].Code != 552 || replies[3].Enhanced != "5.2.2" {
			t.Errorf("replies %s", replyStrings(replies))
		}
		if hop.String() != "lmtp:["+hop.Addr+"]" {
			t.Errorf("String() = %s", hop)
		}
	})
}
