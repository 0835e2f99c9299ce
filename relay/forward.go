package relay

// The per-recipient forwarding decision, in one place: a final recipient
// outside our domains (relay, local and SRS domains) is an external
// forward. Such a recipient carries the SRS form of the sender
// (forwardSender, srs.go, decides which) and, with the auth checks on, may
// leave with a rewritten From (DMARC-aware forwarding: auth decides at
// delivery time whether it must) unless the admin turned that off for the
// address the client used. Everything else about a recipient (its
// expansion) is routing's.

import (
	"context"
	"strings"

	"mailfwd/queue/envelope"
	"mailfwd/routing"
)

// isLocal reports whether a final recipient is in one of our domains.
func (s *session) isLocal(addr string) bool {
	i := strings.LastIndexByte(addr, '@')
	return i >= 0 && s.p.isLocal(addr[i+1:])
}

// forwardFrom is the envelope sender of this RCPT's external forwards
// among finals: the SRS form when there is one, else the client's sender.
func (s *session) forwardFrom(ctx context.Context, finals []string) (string, error) {
	for _, f := range finals {
		if !s.isLocal(f) {
			return s.forwardSender(ctx)
		}
	}
	return s.from, nil
}

// decideForward marks rc, expanded from the RCPT address addr, as an
// external forward when it is one, with the sender it travels with.
func (s *session) decideForward(rc *envelope.Recipient, addr routing.Address, fwdFrom string) {
	if s.isLocal(rc.Addr) {
		return
	}
	rc.Forward = true
	rc.RewriteFrom = s.p.cfg.Auth != nil && !s.rewriteOff(addr)
	if fwdFrom != s.from {
		rc.MailFrom = fwdFrom
	}
}

// rewriteOff reports whether the RCPT address or its domain turned
// DMARC-aware forwarding off.
func (s *session) rewriteOff(a routing.Address) bool {
	off := s.p.cfg.FromRewriteOff
	return len(off) > 0 && (off[strings.ToLower(a.Local+"@"+a.Domain)] || off[a.Domain])
}
