// Package auth does one job: message authentication for forwarded mail.
//
// Inbound, it evaluates SPF, DKIM, DMARC and an existing ARC chain for a
// message while the relay streams it into the spool (a Check is an
// io.Writer fed the same bytes as the spool file), and returns the header
// lines to prepend — Authentication-Results for every recipient; for
// external forwards also an ARC set (RFC 8617) and a DKIM signature of the
// relay's domain — plus the configured policy verdict (accept, tag,
// reject). It never changes the message itself: everything it adds is a
// header prepended at delivery time, so the original DKIM signatures still
// verify after forwarding.
//
// StripForged removes inbound Authentication-Results claiming our
// authserv-id while the message is received. SignStream DKIM-signs mail we
// write ourselves (DSNs).
//
// DNS goes through an injectable Resolver with per-lookup timeouts; a DNS
// failure gives a temperror result, never an error, a crash or a hang.
package auth
