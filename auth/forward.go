package auth

// DMARC-aware forwarding: the one place that decides whether an external
// forward keeps its From or leaves with ours.
//
// A forward keeps the sender's DKIM signature intact (we add header fields,
// never change signed ones or the body), so a message whose From domain
// signed it still passes DMARC at the receiver. One that passed DMARC here
// only through SPF loses that at the receiver (the connecting IP is now
// ours), and if its domain says p=reject or p=quarantine, Gmail answers
// 550 5.7.26 and Outlook files it as junk. ARC is being retired, so that
// mail leaves with a From of ours (DKIM-signed by us, or aligned with our
// SRS envelope domain), the original in Reply-To (unless it has one) and
// X-Original-From. Mail that failed DMARC here keeps its From and fails at
// the receiver as it should: rewriting never launders a spoofed message.

import (
	"encoding/base64"
	"fmt"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"time"
)

// FromRewriting configures DMARC-aware forwarding (Config.FromRewrite).
type FromRewriting struct {
	// Address is the From address rewritten mail carries: a domain of
	// ours that passes DMARC at the receiver (DKIM-signed by DKIMKey, or
	// the organizational domain of the SRS envelope domain).
	Address string
	// Via names us in the display name ("Alice via company.com").
	Via string
}

// FromRewrite is how a message leaves when its From must be rewritten:
// Fields replace the From field at Offset (Length bytes, its line end
// included) of the message as checked, and ForwardHeader replaces
// Verdict.ForwardHeader (the ARC set and DKIM signature are over the
// rewritten header).
type FromRewrite struct {
	Offset, Length int64
	Fields         string
	ForwardHeader  string
}

// Forwarding outcomes (Verdict.Forwarding; metrics and logs).
const (
	ForwardRewritten   = "rewritten"      // From rewritten, signed by us
	ForwardAlignedDKIM = "kept_dkim"      // an aligned DKIM signature survives
	ForwardNoPolicy    = "kept_no_policy" // p=none, t=y, pct=0, no record or no DMARC pass needed
	ForwardFailed      = "kept_failed"    // failed DMARC here: not dressed up to pass
	ForwardTemp        = "kept_temperror" // DMARC could not be evaluated
	ForwardOff         = "kept_off"       // not configured
)

// forwarding decides for a message that is forwarded outside (the SPF and
// DMARC results are in r, the header fields in fields) and returns the
// outcome and, when rewritten, the new fields.
func (c *Check) forwarding(r *Results) (string, *FromRewrite) {
	cfg := c.a.cfg.FromRewrite
	d := r.DMARC
	switch {
	case cfg == nil:
		return ForwardOff, nil
	case d.Result == "fail":
		return ForwardFailed, nil
	case d.Result == "temperror":
		return ForwardTemp, nil
	case d.Result != "pass":
		return ForwardNoPolicy, nil
	case d.DKIMAligned:
		return ForwardAlignedDKIM, nil
	case d.Policy != "reject" && d.Policy != "quarantine", d.Percent == 0, c.dmarcTesting:
		return ForwardNoPolicy, nil
	}
	idx, off := -1, int64(0)
	for i, f := range c.fields {
		if f.lower() == "from" {
			idx = i
			break
		}
		off += int64(len(f.Raw))
	}
	if idx < 0 {
		return ForwardNoPolicy, nil
	}
	orig := c.fields[idx].value()
	eol := "\r\n"
	if !strings.HasSuffix(c.fields[idx].Raw, "\r\n") {
		eol = "\n"
	}
	hasReplyTo := false
	for _, f := range c.fields {
		hasReplyTo = hasReplyTo || f.lower() == "reply-to"
	}
	newFrom := field{Name: "From", Raw: "From: " + rewrittenFrom(orig, cfg) + eol}
	add := []field{newFrom}
	if !hasReplyTo {
		add = append(add, field{Name: "Reply-To", Raw: "Reply-To: " + orig + eol})
	}
	add = append(add, field{Name: "X-Original-From", Raw: "X-Original-From: " + orig + eol})
	fields := append(append(append([]field(nil), c.fields[:idx]...), add...), c.fields[idx+1:]...)
	rw := &FromRewrite{Offset: off, Length: int64(len(c.fields[idx].Raw))}
	for _, f := range add {
		rw.Fields += f.Raw
	}
	rw.ForwardHeader, c.rewriteErr = c.forwardHeader(fields, r)
	return ForwardRewritten, rw
}

// rewrittenFrom is our From for a message from orig: the sender's name
// (or address, spelled without @) "via" us, at our address.
func rewrittenFrom(orig string, cfg *FromRewriting) string {
	name := ""
	if a, err := (&mail.AddressParser{WordDecoder: &mime.WordDecoder{}}).Parse(orig); err == nil {
		name = a.Name
		if name == "" {
			name = strings.Replace(a.Address, "@", " at ", 1)
		}
	} else {
		name = strings.Replace(strings.Trim(orig, "<> "), "@", " at ", 1)
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, name)
	display := name + " via " + cfg.Via
	return (&mail.Address{Name: display, Address: cfg.Address}).String()
}

// forwardHeader is the ARC set and DKIM signature for header fields
// (which differ from what arrived: the rewritten From).
func (c *Check) forwardHeader(fields []field, r *Results) (string, error) {
	a := c.a
	var out strings.Builder
	var first error
	if a.cfg.ARCKey != nil && c.chain != nil {
		s, err := seal(a.cfg.ARCKey, a.cfg.Now(), fields, c.chain, c.arcVerdict, r.payload(a.cfg.AuthServID), c.relaxedSum())
		if err != nil {
			first = err
		}
		out.WriteString(s)
	}
	if a.cfg.DKIMKey != nil {
		s, err := dkimSignFields(a.cfg.DKIMKey, a.cfg.Now(), fields, c.relaxedSum())
		if err != nil && first == nil {
			first = err
		}
		out.WriteString(s)
	}
	return out.String(), first
}

// dkimSignFields is a DKIM-Signature (relaxed/relaxed, RFC 6376) over
// fields, with bh the relaxed body hash: the one signer of forwards (as
// received or with their From rewritten) and of our DSNs (SignStream).
func dkimSignFields(key *Key, now time.Time, fields []field, bh []byte) (string, error) {
	h := headerList(fields)
	noB := fmt.Sprintf("DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=%s; s=%s;\r\n\tt=%s; h=%s;\r\n\tbh=%s; b=",
		key.Algorithm(), key.Domain, key.Selector, strconv.FormatInt(now.Unix(), 10), strings.Join(h, ":"), b64(bh))
	sig, err := key.sign(sigData(fields, h, "relaxed", noB+"\r\n"))
	if err != nil {
		return "", fmt.Errorf("dkim sign: %w", err)
	}
	return noB + foldB(b64(sig)) + "\r\n", nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
