package relay

import (
	"io"
	"net"
	"sync"

	"github.com/emersion/go-smtp"
)

// Observer hears what the front end does (for metrics). It is attached
// from outside (ObserveListener, ObserveServer), so the session code does
// not know about it; its methods are called from session goroutines and
// must not block.
type Observer interface {
	// Connection: a client was greeted with 220 (accepted), or turned away
	// before any session: a 421 from the connection limits, or a
	// connection closed before its greeting (bad PROXY header, shutdown).
	Connection(accepted bool)
	// Disconnect: an accepted connection closed.
	Disconnect()
	// Rcpt: the reply code the relay gave to a RCPT command.
	Rcpt(code int)
	// Message: a DATA ended with the message queued (2xx) or not.
	Message(queued bool)
}

// ObserveListener reports every connection of l to obs. It must wrap the
// raw listener, under Listen, so that connections the limits refuse are
// seen too: a connection counts as accepted when the first line it is sent
// is a 2xx greeting.
func ObserveListener(l net.Listener, obs Observer) net.Listener {
	if obs == nil {
		return l
	}
	return &observedListener{Listener: l, obs: obs}
}

type observedListener struct {
	net.Listener
	obs Observer
}

func (l *observedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &observedConn{Conn: c, obs: l.obs}, nil
}

type observedConn struct {
	net.Conn
	obs Observer

	mu       sync.Mutex
	greeted  bool // the first reply was written: decided
	accepted bool
	closed   bool
}

func (c *observedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	if !c.greeted && !c.closed && len(b) > 0 {
		c.greeted, c.accepted = true, b[0] == '2'
		c.obs.Connection(c.accepted)
	}
	c.mu.Unlock()
	return c.Conn.Write(b)
}

func (c *observedConn) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		switch {
		case !c.greeted:
			c.obs.Connection(false)
		case c.accepted:
			c.obs.Disconnect()
		}
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// ObserveServer makes the sessions of srv report their RCPT and DATA
// replies to obs. Call it before srv serves.
//
// The wrapper exposes the smtp.Session methods only: optional session
// interfaces (smtp.AuthSession, smtp.LMTPSession) would be hidden, so the
// relay's session must not grow one without observedSession forwarding it.
func ObserveServer(srv *smtp.Server, obs Observer) {
	if obs != nil {
		srv.Backend = observedBackend{srv.Backend, obs}
	}
}

type observedBackend struct {
	smtp.Backend
	obs Observer
}

func (b observedBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s, err := b.Backend.NewSession(c)
	if err != nil {
		return nil, err
	}
	return &observedSession{Session: s, obs: b.obs}, nil
}

type observedSession struct {
	smtp.Session
	obs Observer
}

func (s *observedSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	err := s.Session.Rcpt(to, opts)
	s.obs.Rcpt(replyCode(err, 451))
	return err
}

func (s *observedSession) Data(r io.Reader) error {
	err := s.Session.Data(r)
	s.obs.Message(replyCode(err, 554)/100 == 2)
	return err
}

// replyCode is the code go-smtp sends for a handler's result: 250 for
// nil, an SMTPError's own code, def (go-smtp's default for the command)
// for any other error.
func replyCode(err error, def int) int {
	if err == nil {
		return 250
	}
	if se, ok := err.(*smtp.SMTPError); ok { // go-smtp does not unwrap either
		return se.Code
	}
	return def
}
