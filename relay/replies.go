package relay

import "github.com/emersion/go-smtp"

// Replies the relay gives, one place for every code so they are reviewed
// (and tested) together. Temporary trouble on our side is always 4xx.
var (
	replyRelayDenied = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "relay access denied"}
	replyBadRcpt     = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "bad recipient address syntax"}
	replyBadSender   = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "bad sender address syntax"}
	// A recipient outside a transaction. go-smtp answers RCPT before any
	// MAIL itself (502 5.5.1), but after a refused MAIL it still holds the
	// earlier, accepted one while our session was reset (checkRecipient).
	replyNeedMail = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "need MAIL command"}
	// RFC 6531 3.4: a non-ASCII address only in a transaction that
	// announced SMTPUTF8 (the next hop must then be able to take it).
	replyNeedUTF8    = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "non-ASCII address without SMTPUTF8"}
	replyUnknownUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "recipient address rejected: user unknown"}
	replyDirDown     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary lookup failure, try again later"}
	replyExpansion   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 6, 0}, Message: "alias expansion error, try again later"}
	replyTooManyRcpt = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "too many recipients"}
	replyNoRcpt      = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "no valid recipients"}
	replySpoolFull   = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "insufficient system storage, try again later"}
	replyNoMemory    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "too many messages in transfer, try again later"}
	replyLocalError  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "local error in processing, try again later"}
	replyTooBig      = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "message size exceeds fixed limit"}
	replyTooManyErrs = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many errors, closing connection"}
	replyTooManyCmds = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "too many commands, closing connection"}
	replyLoop        = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6}, Message: "too many hops (Received headers): mail forwarding loop"}
	replyDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "timeout reading the message, closing connection"}
	replyBadSRS      = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "invalid or expired SRS address"}
	// A guesser of SRS hashes pays a connection per guess (421 closes).
	replySRSLimited = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "too many invalid SRS addresses from your address, closing connection"}
	// A sender too long for SRS (only without an srs store) is refused for
	// external forwards only: the condition is permanent, so a 4xx would
	// only delay the bounce by days.
	replySRSTooLong = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "sender address too long to forward with SRS"}
	// The sender store (database-form SRS) cannot answer: temporary.
	replySRSStoreDown = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "temporary failure of the SRS sender store, try again later"}
	// SRSReversePolicy: SRS addresses take bounces, and not too many.
	replySRSNotBounce = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "SRS addresses accept only bounces (MAIL FROM:<>)"}
	replySRSRate      = &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "too many bounces to this address, try again later"}
)

func replyQueued(id string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}
