package nexthop

import (
	"context"
	"io"

	"mailfwd/queue/envelope"
)

// Hop is a next hop that messages are handed to: one SMTP or LMTP server
// (SMTPHop), the MX hosts of a domain (MXHop), or a test's stand-in.
type Hop interface {
	// Send runs one transaction. It returns one Reply per recipient, or
	// an error when the transaction failed as a whole before any
	// recipient got a definite answer (all are to be retried).
	Send(ctx context.Context, env *envelope.Envelope, from string, rcpts []string, body io.Reader) ([]Reply, error)
	String() string
}

// Destination is where a recipient's mail goes next.
type Destination struct {
	// Key identifies the destination for grouping recipients into one
	// transaction, for its concurrency window and its dead/alive state
	// ("smtp:[127.0.0.1]:10025", "smtp:gmail.com:25").
	Key string
	// Name is what a per-destination policy matches: the recipient domain
	// for MX delivery, else the next hop's host.
	Name string
	Hop  Hop
	// Internet: the destination is the Internet's MXes (or the smarthost
	// towards them): it has its own workers and backs off slowly; our own
	// next hops (Postfix) are retried soon.
	Internet bool
}
