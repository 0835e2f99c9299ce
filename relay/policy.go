package relay

import (
	"strings"

	"mailfwd/routing"
)

// routingChars are the characters that make a local part a route to
// another host: user@host (also quoted: "user@host"@relay.domain, which
// go-smtp hands over unquoted), the percent hack user%host and the UUCP
// bang path host!user.
const routingChars = "@%!"

// checkRecipient is the relay policy applied to every RCPT address once it
// parsed, before any lookup: raw is the address as go-smtp hands it over
// (unquoted), addr its parsed form. It returns nil when the address may be
// looked up, or the reply refusing it.
//
// A local part carrying sender-specified routing is refused as a relay
// attempt (554 5.7.1), as Postfix's smtpd does for its relay domains with
// allow_untrusted_routing = no (its default). Our directory would not know
// such an address, but the routing rules around it can carry it to the next
// hop intact: a recipient delimiter with propagated extensions
// (sales+x%evil.test@company.com becomes central+x%evil.test@company.com),
// a domain rewrite or catch-all (user@evil.test@domain.com becomes
// "user@evil.test"@domain.ro), and the Postfix behind us, which by default
// resolves inside quotes (resolve_dequoted_address = yes) and applies the
// percent hack and bang paths for its local domains, may route those to
// evil.test on our behalf, as a trusted client.
//
// Addresses in the SRS domain are let through to reverseSRS, which admits
// only a valid, unexpired signature; a bounce to the SRS form of a sender
// such as a%b@example.com (which we forwarded) still reaches it, at its
// own domain. But a signed address is no proof against routing: any client
// can claim MAIL FROM:<x%evil.test@company.com>, we sign it when we forward
// the message, and whoever sees that copy holds a valid bounce address that
// decodes into one of our domains, where it is routed like any recipient
// (and, unknown to the directory, handed to the next hop unchanged). So an
// SRS address that decodes into our domains gets the same rule, in
// reverseSRS once it is decoded.
//
// It also refuses any recipient while the session has no sender: after
// MAIL FROM:<a> (250) and MAIL FROM:<bad> (501), go-smtp keeps the first
// transaction open but our session was reset by the second MAIL, and the
// message would be queued with a null sender the client never gave.
func (s *session) checkRecipient(raw string, addr routing.Address) error {
	if !s.hasFrom {
		s.log.Info("reject: RCPT without a sender", "to", raw)
		return replyNeedMail
	}
	if s.p.srsDom != "" && addr.Domain == s.p.srsDom {
		return nil // reverseSRS decodes it, then applies the same rule
	}
	if !strings.ContainsAny(addr.Local, routingChars) {
		return nil
	}
	s.log.Info("reject: sender-specified routing", "from", s.from, "to", raw)
	return replyRelayDenied
}

// routedLocal reports whether the local part of addr (internal form, split
// at the last @) carries a route.
func routedLocal(addr string) bool {
	i := strings.LastIndexByte(addr, '@')
	return i > 0 && strings.ContainsAny(addr[:i], routingChars)
}
