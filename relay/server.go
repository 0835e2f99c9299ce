package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/queue"
	"mailfwd/routing"
)

// Expander resolves one RCPT address to its final recipients.
type Expander interface {
	Expand(ctx context.Context, addr string) ([]string, error)
}

// Committer is where accepted messages go: the spool, then the scheduler.
type Committer interface {
	Create() (*queue.Writer, error)
}

// Config is the front end's policy.
type Config struct {
	Hostname      string
	RelayDomains  []string // A-label, lower case
	LookupTimeout time.Duration
	MaxRecipients int
	MaxSize       int64
	// FirstRetry is stored as the next attempt time of a new message: the
	// first attempt starts at once, and if the relay dies during it, the
	// restarted relay tries again after this long (not in a hot loop).
	FirstRetry time.Duration
}

// Backend builds the go-smtp server around routing and the spool.
type Backend struct {
	cfg      Config
	domains  map[string]bool
	expander Expander
	spool    Committer
	submit   func(*queue.Envelope)
	log      *slog.Logger
}

// NewBackend returns a backend; submit is called with each committed
// message (to schedule its delivery).
func NewBackend(cfg Config, exp Expander, spool Committer, submit func(*queue.Envelope), log *slog.Logger) (*Backend, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = 10 * time.Second
	}
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = 1000
	}
	if cfg.FirstRetry <= 0 {
		cfg.FirstRetry = 10 * time.Second
	}
	b := &Backend{cfg: cfg, domains: map[string]bool{}, expander: exp, spool: spool, submit: submit, log: log}
	for _, d := range cfg.RelayDomains {
		nd, err := routing.NormalizeDomain(d)
		if err != nil {
			return nil, fmt.Errorf("relay domain %q: %w", d, err)
		}
		b.domains[nd] = true
	}
	return b, nil
}

// NewServer returns a go-smtp server for b (not yet listening).
func (b *Backend) NewServer() *smtp.Server {
	s := smtp.NewServer(b)
	s.Domain = b.cfg.Hostname
	s.MaxRecipients = b.cfg.MaxRecipients
	s.MaxMessageBytes = b.cfg.MaxSize
	s.MaxLineLength = 4096
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = 5 * time.Minute
	s.EnableSMTPUTF8 = true
	s.ErrorLog = slogLogger{b.log}
	return s
}

// NewSession is called by go-smtp for each connection.
func (b *Backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s := &session{b: b, helo: c.Hostname(), seen: map[string]bool{}}
	if a, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		s.clientIP = a.IP.String()
	} else {
		s.clientIP = c.Conn().RemoteAddr().String()
	}
	s.log = b.log.With("client", s.clientIP)
	s.log.Debug("connect")
	return s, nil
}

type session struct {
	b        *Backend
	log      *slog.Logger
	clientIP string
	helo     string

	hasFrom bool
	from    string
	opts    smtp.MailOptions
	rcpts   []queue.Recipient
	seen    map[string]bool
}

func (s *session) Reset() {
	s.hasFrom, s.from, s.opts = false, "", smtp.MailOptions{}
	s.rcpts = nil
	s.seen = map[string]bool{}
}

func (s *session) Logout() error { return nil }

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.Reset()
	if from != "" {
		if _, err := routing.ParseAddress(from); err != nil {
			return replyBadSender
		}
	}
	s.hasFrom, s.from = true, from
	if opts != nil {
		s.opts = *opts
	}
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	addr, err := routing.ParseAddress(to)
	if err != nil {
		return replyBadRcpt
	}
	if !s.b.domains[addr.Domain] {
		s.log.Info("reject: relay access denied", "from", s.from, "to", to)
		return replyRelayDenied
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.b.cfg.LookupTimeout)
	defer cancel()
	finals, err := s.b.expander.Expand(ctx, routing.External(to))
	switch {
	case err == nil:
	case errors.Is(err, routing.ErrNotFound):
		s.log.Info("reject: unknown recipient", "from", s.from, "to", to)
		return replyUnknownUser
	case errors.Is(err, routing.ErrExpansionLimit):
		s.log.Warn("defer: alias expansion", "to", to, "err", err)
		return replyExpansion
	default: // directory down, timeout, anything else: never a 5xx
		s.log.Warn("defer: directory lookup failed", "to", to, "err", err)
		return replyDirDown
	}
	added := 0
	for _, f := range finals {
		k := routing.RecipientKey(f)
		if s.seen[k] {
			continue
		}
		if len(s.rcpts) >= s.b.cfg.MaxRecipients {
			return replyTooManyRcpt
		}
		s.seen[k] = true
		s.rcpts = append(s.rcpts, queue.Recipient{Addr: f, OrigTo: to, Status: queue.Pending})
		added++
	}
	s.log.Debug("rcpt ok", "to", to, "finals", finals, "new", added)
	return nil
}

func (s *session) Data(r io.Reader) error {
	if len(s.rcpts) == 0 {
		return replyNoRcpt
	}
	w, err := s.b.spool.Create()
	if err != nil {
		return s.storageReply(err, "")
	}
	if _, err := io.WriteString(w, s.receivedHeader(w.ID())); err != nil {
		w.Abort()
		return s.storageReply(err, w.ID())
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		if errors.Is(err, smtp.ErrDataTooLarge) {
			return replyTooBig
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se
		}
		return s.storageReply(err, w.ID())
	}
	now := time.Now()
	env := &queue.Envelope{
		From:        s.from,
		Recipients:  s.rcpts,
		Received:    now,
		ClientAddr:  s.clientIP,
		ClientHelo:  s.helo,
		SMTPUTF8:    s.opts.UTF8,
		Body8Bit:    s.opts.Body == smtp.Body8BitMIME,
		NextAttempt: now.Add(s.b.cfg.FirstRetry),
	}
	if err := w.Commit(env); err != nil {
		return s.storageReply(err, w.ID())
	}
	s.log.Info("queued", "queue_id", env.ID, "from", s.from, "nrcpt", len(env.Recipients), "size", env.Size)
	s.b.submit(env)
	return replyQueued(env.ID)
}

func (s *session) storageReply(err error, id string) error {
	s.log.Error("cannot spool message", "queue_id", id, "err", err)
	if errors.Is(err, queue.ErrSpoolFull) {
		return replySpoolFull
	}
	return replyLocalError
}

// receivedHeader is our trace header (RFC 5321 §4.4). "for" is given only
// for a single recipient, so fan-out does not disclose the other ones.
func (s *session) receivedHeader(id string) string {
	helo := s.helo
	if helo == "" {
		helo = "unknown"
	}
	proto := "ESMTP"
	if s.opts.UTF8 {
		proto = "UTF8SMTP"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n\tby %s (mailfwd) with %s id %s", sanitize(helo), s.clientIP, s.b.cfg.Hostname, proto, id)
	if len(s.rcpts) == 1 {
		fmt.Fprintf(&b, "\r\n\tfor <%s>", sanitize(s.rcpts[0].OrigTo))
	}
	fmt.Fprintf(&b, ";\r\n\t%s\r\n", time.Now().Format(time.RFC1123Z))
	return b.String()
}

// sanitize keeps client-supplied text from breaking the header.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '(' || r == ')' {
			return '?'
		}
		return r
	}, s)
}

type slogLogger struct{ l *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l slogLogger) Println(v ...any)               { l.l.Warn(fmt.Sprint(v...)) }
