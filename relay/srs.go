package relay

// The SRS decisions of the front end, in one place: which sender an
// external forward carries (forwardSender), and what a bounce to our SRS
// domain may do (reverseSRS). The codec (formats, hashes, the sender
// store) is srs.Rewriter.

import (
	"context"
	"errors"
	"strings"
	"time"

	"mailfwd/routing"
	"mailfwd/routing/srs"
)

// SRSReversePolicy bounds what a valid SRS address may be used for. A
// signature proves we minted the address, not that the mail to it is a
// bounce: whoever saw one forwarded copy holds an address that relays to
// its sender for three weeks. So by default only bounces and auto-replies
// (MAIL FROM:<>, RFC 3464 and RFC 3834) reach it, one SRS recipient per
// transaction (a DSN has one), at most Rate per decoded address per Window.
type SRSReversePolicy struct {
	// AnySender also admits mail from a non-null sender (postsrsd's
	// behaviour): some challenge-response systems and list managers reply
	// to the envelope sender with a sender of their own.
	AnySender bool
	// MaxRecipients per transaction; more get 452 4.5.3, which makes the
	// client send them in another transaction.
	MaxRecipients int
	// Rate bounces per decoded address per Window; past it 450 4.7.1.
	Rate   int
	Window time.Duration
}

// forwardSender is the envelope sender for external forwards: the SRS form
// of the client's sender (embedded, or for a sender that does not fit, the
// database form). The null sender stays as it is; so does a sender SRS
// cannot encode when there is no store (as with postsrsd). A store that
// cannot record the sender defers the recipient (451 4.3.0): the client
// tries again, nothing is lost. Without a store, a sender whose SRS form
// would not fit RFC 5321 is refused for external forwards (550 5.1.7)
// rather than sent with an invalid address.
func (s *session) forwardSender(ctx context.Context) (string, error) {
	if s.p.cfg.SRS == nil || s.from == "" {
		return s.from, nil
	}
	if !s.srsDone {
		s.srsDone = true
		// SRS encodes the address as parsed; the result is quoted for the
		// wire like any address.
		s.srsFrom, s.srsFromErr = s.p.cfg.SRS.Forward(ctx, s.rawFrom)
		s.srsFrom = routing.WireForm(s.srsFrom)
		switch {
		case errors.Is(s.srsFromErr, srs.ErrStore):
			s.log.Warn("defer: cannot store the sender for SRS", "from", s.from, "err", s.srsFromErr)
			s.srsDone = false // a later RCPT may try again
			return "", replySRSStoreDown
		case errors.Is(s.srsFromErr, srs.ErrTooLong):
			s.log.Warn("reject: sender too long for SRS (no srs store)", "from", s.from)
		case s.srsFromErr != nil:
			// postsrsd leaves such senders alone too.
			s.log.Warn("srs: sender not rewritten", "from", s.from, "err", s.srsFromErr)
			s.srsFrom, s.srsFromErr = s.from, nil
		}
	}
	if s.srsFromErr != nil {
		return "", replySRSTooLong
	}
	return s.srsFrom, nil
}

// reverseSRS decodes a bounce to our SRS domain. Only a valid, unexpired
// address is accepted, and then only for the address it decodes to: this
// is the one way mail for a foreign domain gets through us, so it is
// verified before anything else, and SRSReversePolicy bounds what a valid
// address may carry. Failures are counted per client and in all; past the
// limits each one closes the connection. A valid address is never refused
// for failures before it (a bounce is not lost to someone else's guessing).
func (s *session) reverseSRS(ctx context.Context, to string) ([]string, error) {
	pol := s.p.cfg.SRSReverse
	if s.from != "" && !pol.AnySender {
		s.log.Info("reject: SRS address from a non-null sender", "from", s.from, "to", to)
		return nil, replySRSNotBounce
	}
	if s.srsRcpts >= pol.MaxRecipients {
		s.log.Info("defer: SRS recipients per transaction", "to", to, "max", pol.MaxRecipients)
		return nil, replyTooManyRcpt
	}
	orig, err := s.p.cfg.SRS.Reverse(ctx, to)
	switch {
	case errors.Is(err, srs.ErrStore):
		s.log.Warn("defer: SRS store unavailable", "to", to, "err", err)
		return nil, replySRSStoreDown
	case err != nil:
		n := s.b.srsFails.add(clientKeyOf(s.clientIP, s.p.cfg.IPv6Prefix))
		all := s.b.srsFails.add("")
		if n > s.p.cfg.SRSFailureLimit || all > s.p.cfg.SRSFailureBudget {
			// a guesser: this answer ends the connection
			s.log.Warn("defer: SRS failure limit reached; closing", "to", to, "client_failures", n, "all_failures", all)
			return nil, replySRSLimited
		}
		s.log.Info("reject: invalid SRS address", "from", s.from, "to", to, "err", err)
		return nil, replyBadSRS
	}
	orig = routing.WireForm(orig)
	if s.isLocal(orig) && routedLocal(orig) {
		// signed, but it routes onwards from one of our domains (policy.go)
		s.log.Info("reject: sender-specified routing", "from", s.from, "to", to, "orig", orig)
		return nil, replyRelayDenied
	}
	if n := s.b.srsRate.add(strings.ToLower(orig)); n > pol.Rate {
		s.log.Warn("defer: too many bounces to one SRS address", "to", to, "orig", orig, "count", n)
		return nil, replySRSRate
	}
	s.srsRcpts++
	s.log.Info("srs: bounce address decoded", "to", to, "orig", orig)
	if s.isLocal(orig) {
		// The original sender is one of ours: route it as usual.
		finals, err := s.p.expander.Expand(ctx, orig)
		if err == nil || !errors.Is(err, routing.ErrNotFound) {
			return finals, s.rcptError(to, err)
		}
	}
	return []string{orig}, nil
}
