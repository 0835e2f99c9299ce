// Package envelope is a queued message's envelope: its sender, each final
// recipient with its delivery state, and what the relay learned about the
// message when it took it. The spool stores it, the scheduler updates it,
// next hops and DSNs read it.
package envelope

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Status is a recipient's delivery state.
type Status string

const (
	// Pending recipients are still to be delivered (never tried, or
	// deferred by a 4xx or a connection failure).
	Pending Status = "pending"
	// Sent recipients were accepted by the next hop (2xx).
	Sent Status = "sent"
	// Failed recipients were refused permanently (5xx); never retried.
	Failed Status = "failed"
)

// Recipient is one final envelope recipient.
type Recipient struct {
	Addr string `json:"addr"`
	// OrigTo is the address the client gave at RCPT, before rewriting.
	OrigTo    string `json:"orig_to,omitempty"`
	Status    Status `json:"status"`
	LastReply string `json:"last_reply,omitempty"`
	// Forward marks an external forward: a recipient in a domain that is
	// not ours (relay/forward.go decides), delivered to the Internet with
	// MailFrom as its sender. (Its JSON name is from before the rename:
	// queue files on disk keep it.)
	Forward bool `json:"external,omitempty"`
	// MailFrom is this recipient's envelope sender when it differs from
	// the message's (the SRS-rewritten sender of an external forward).
	MailFrom string `json:"mail_from,omitempty"`
	// DSNNotify is the client's RCPT NOTIFY= ("NEVER", or a comma list of
	// SUCCESS, FAILURE, DELAY); empty: the default (failure and delay).
	DSNNotify string `json:"dsn_notify,omitempty"`
	// ORcpt is the client's RCPT ORCPT= ("rfc822;addr"), passed on and
	// reported in DSNs.
	ORcpt string `json:"orcpt,omitempty"`
	// Attempts counts this recipient's delivery attempts; NextAttempt is
	// when it is due again (after the backoff of its destination's class:
	// a message's local recipients do not wait on the Internet's).
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// DelayNotified: a delay DSN went out for this recipient already.
	DelayNotified bool `json:"delay_notified,omitempty"`
	// Bounced: its failure was reported (DSN queued, or not wanted).
	Bounced bool `json:"bounced,omitempty"`
	// RewriteFrom: this external forward leaves with Envelope.FromRewrite
	// when the message has one (DMARC-aware forwarding is on for it).
	RewriteFrom bool `json:"rewrite_from,omitempty"`

	// Expired: failed by expiry in this attempt (not persisted).
	Expired bool `json:"-"`
}

// Wants reports whether the client asked for a DSN of this kind
// ("SUCCESS", "FAILURE", "DELAY"). Without NOTIFY, failures and delays are
// reported (RFC 3461 §4.1).
func (r *Recipient) Wants(kind string) bool {
	if r.DSNNotify == "" {
		return kind != "SUCCESS"
	}
	for _, n := range strings.Split(strings.ToUpper(r.DSNNotify), ",") {
		if n == kind {
			return true
		}
	}
	return false
}

// Sender is the envelope sender to use for r in a message from env.
func (r *Recipient) Sender(env *Envelope) string {
	if r.MailFrom != "" {
		return r.MailFrom
	}
	return env.From
}

// Envelope is everything about a message except its bytes.
type Envelope struct {
	ID         string      `json:"id"`
	From       string      `json:"from"` // "" is the null sender <>
	Recipients []Recipient `json:"recipients"`
	Received   time.Time   `json:"received"`
	ClientAddr string      `json:"client_addr,omitempty"`
	ClientHelo string      `json:"client_helo,omitempty"`
	// SMTPUTF8: the client asked for it; UTF8Header: the header carries
	// non-ASCII bytes (with ASCII addresses, the message can go without
	// SMTPUTF8 to a server that lacks it).
	SMTPUTF8   bool `json:"smtputf8,omitempty"`
	UTF8Header bool `json:"utf8_header,omitempty"`
	Body8Bit   bool `json:"body_8bit,omitempty"`
	// DSNRet ("FULL" or "HDRS") and DSNEnvID are the client's MAIL RET= and
	// ENVID=, honoured in our DSNs and passed on.
	DSNRet   string `json:"dsn_ret,omitempty"`
	DSNEnvID string `json:"dsn_envid,omitempty"`
	// Held messages are not delivered until released (mailfwd queue hold).
	Held bool `json:"held,omitempty"`
	// SenderAuth says how the envelope sender was authenticated at our
	// edge: "spf" (SPF pass for its domain), "dkim" (a passing DKIM
	// signature of its organizational domain), or "" (not: it may be
	// forged, so a DSN about a failed forward would be backscatter).
	SenderAuth string `json:"sender_auth,omitempty"`
	// AuthHeader (Authentication-Results) goes before the body for every
	// recipient, ForwardHeader (ARC set, our DKIM-Signature) before that for
	// external forwards only: kept here, not in the body file, so the
	// client's bytes are spooled once and never altered.
	AuthHeader    string `json:"auth_header,omitempty"`
	ForwardHeader string `json:"forward_header,omitempty"`
	// FromRewrite is how external forwards with RewriteFrom leave (DMARC-
	// aware forwarding, auth/forward.go); nil: as everyone else.
	FromRewrite *FromRewrite `json:"from_rewrite,omitempty"`
	Size        int64        `json:"size"`
	// BodyCRC is the CRC-32C (Castagnoli) of the body's Size bytes, as
	// received: recovery and delivery check it, so a body the disk lost
	// (zeroed pages after a writeback error) is quarantined, never sent.
	// HasCRC: the envelope has one (envelopes of earlier versions do not).
	BodyCRC uint32 `json:"body_crc32c,omitempty"`
	HasCRC  bool   `json:"has_crc,omitempty"`
	// Attempts counts delivery attempts started. NextAttempt is written
	// before an attempt starts, so a crash during it cannot cause a hot
	// retry loop on restart.
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt"`
}

// FromRewrite replaces the From field of a message as it leaves: Length
// bytes at Offset of the body file become Fields, and ForwardHeader goes
// before it in place of Envelope.ForwardHeader (signatures over the
// rewritten header).
type FromRewrite struct {
	Offset        int64  `json:"offset"`
	Length        int64  `json:"length"`
	Fields        string `json:"fields"`
	ForwardHeader string `json:"forward_header,omitempty"`
}

// RewritesFrom reports whether r leaves with env's rewritten From.
func (r *Recipient) RewritesFrom(env *Envelope) bool {
	return r.Forward && r.RewriteFrom && env.FromRewrite != nil
}

// Pending returns the recipients still to deliver.
func (e *Envelope) Pending() []*Recipient {
	var out []*Recipient
	for i := range e.Recipients {
		if e.Recipients[i].Status == Pending {
			out = append(out, &e.Recipients[i])
		}
	}
	return out
}

// Marshal is the envelope as the spool stores it.
func (e *Envelope) Marshal() ([]byte, error) { return json.MarshalIndent(e, "", "  ") }

// Unmarshal reads a stored envelope.
func Unmarshal(b []byte) (*Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	if e.ID == "" || len(e.Recipients) == 0 {
		return nil, fmt.Errorf("envelope without id or recipients")
	}
	return &e, nil
}
