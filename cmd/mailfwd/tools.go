package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// sink is the demo next hop: it accepts everything and prints one line per
// message and recipient, so a README reader can watch mail go through.
func sink(args []string) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:2526", "address to listen on")
	dir := fs.String("dir", "", "also write each message to this directory (envelope in X-Sink-* headers)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return err
		}
	}
	var n atomic.Int64
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{dir: *dir, n: &n}, nil
	})
	s := smtp.NewServer(be)
	s.Addr = *listen
	s.Domain = "sink.localhost"
	s.EnableSMTPUTF8 = true
	s.MaxMessageBytes = 1 << 30
	fmt.Printf("sink: listening on %s\n", *listen)
	return s.ListenAndServe()
}

type sinkSession struct {
	dir   string
	n     *atomic.Int64
	from  string
	rcpts []string
}

func (s *sinkSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	n := s.n.Add(1)
	subject := ""
	if m, err := mail.ReadMessage(bytes.NewReader(buf.Bytes())); err == nil {
		subject = m.Header.Get("Subject")
	}
	fmt.Printf("sink: message %d from=<%s> to=<%s> size=%d subject=%q\n",
		n, s.from, strings.Join(s.rcpts, ">,<"), buf.Len(), subject)
	if s.dir != "" {
		var hdr bytes.Buffer
		fmt.Fprintf(&hdr, "X-Sink-Mail-From: <%s>\r\n", s.from)
		for _, r := range s.rcpts {
			fmt.Fprintf(&hdr, "X-Sink-Rcpt-To: <%s>\r\n", r)
		}
		name := filepath.Join(s.dir, fmt.Sprintf("%d-%06d.eml", time.Now().UnixNano(), n))
		if err := os.WriteFile(name, append(hdr.Bytes(), buf.Bytes()...), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// send submits one small test message and prints the server's answers.
func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	server := fs.String("server", "127.0.0.1:2525", "SMTP server")
	from := fs.String("from", "alice@example.org", "envelope sender")
	subject := fs.String("subject", "mailfwd test", "Subject header")
	var to multiFlag
	fs.Var(&to, "to", "envelope recipient (repeat for several)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(to) == 0 {
		return fmt.Errorf("-to is required")
	}
	c, err := smtp.Dial(*server)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("mailfwd-send.localhost"); err != nil {
		return err
	}
	if err := c.Mail(*from, nil); err != nil {
		return fmt.Errorf("MAIL FROM:<%s>: %w", *from, err)
	}
	ok := 0
	for _, t := range to {
		if err := c.Rcpt(t, nil); err != nil {
			fmt.Printf("RCPT TO:<%s>: %v\n", t, err)
			continue
		}
		fmt.Printf("RCPT TO:<%s>: 250 accepted\n", t)
		ok++
	}
	if ok == 0 {
		return fmt.Errorf("no recipient accepted")
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%d@mailfwd-send.localhost>\r\n\r\nHello from mailfwd send.\r\n",
		*from, strings.Join(to, ">, <"), *subject, time.Now().Format(time.RFC1123Z), time.Now().UnixNano())
	resp, err := w.CloseWithResponse()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	fmt.Printf("DATA: 250 %s\n", resp.StatusText)
	return c.Quit()
}
