package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ARC (RFC 8617). go-msgauth has none; this is the hand-written part.

const (
	arcMaxInstance = 50
	hdrAAR         = "ARC-Authentication-Results"
	hdrAMS         = "ARC-Message-Signature"
	hdrAS          = "ARC-Seal"
)

// ARC chain validation states (the cv= values).
const (
	CVNone = "none"
	CVPass = "pass"
	CVFail = "fail"
)

type arcSet struct {
	aar, ams, as *field
	amsTags      map[string]string
	asTags       map[string]string
}

// arcChain is the ARC sets found in a message's header.
type arcChain struct {
	sets []*arcSet // sets[i-1] is instance i
	err  string    // structural failure, "" if none
}

func isARC(lower string) bool {
	return lower == "arc-authentication-results" || lower == "arc-message-signature" || lower == "arc-seal"
}

// parseChain collects the ARC sets of a header and checks their structure
// (RFC 8617 §5.2 steps 1-3 except the signatures).
func parseChain(fields []field) *arcChain {
	c := &arcChain{}
	byInst := map[int]*arcSet{}
	max := 0
	for i := range fields {
		f := &fields[i]
		name := f.lower()
		if !isARC(name) {
			continue
		}
		v := f.value()
		var inst int
		var tg map[string]string
		if name == "arc-authentication-results" {
			first, _, _ := strings.Cut(v, ";")
			k, n, ok := strings.Cut(first, "=")
			if !ok || strings.TrimSpace(k) != "i" {
				c.err = "ARC-Authentication-Results without i="
				return c
			}
			inst, _ = strconv.Atoi(strings.TrimSpace(n))
		} else {
			var ok bool
			if tg, ok = tags(v); !ok {
				c.err = "malformed " + f.Name
				return c
			}
			inst, _ = strconv.Atoi(tg["i"])
		}
		if inst < 1 || inst > arcMaxInstance {
			c.err = "ARC instance out of range"
			return c
		}
		s := byInst[inst]
		if s == nil {
			s = &arcSet{}
			byInst[inst] = s
		}
		var slot **field
		switch name {
		case "arc-authentication-results":
			slot = &s.aar
		case "arc-message-signature":
			slot, s.amsTags = &s.ams, tg
		default:
			slot, s.asTags = &s.as, tg
		}
		if *slot != nil {
			c.err = fmt.Sprintf("duplicate %s for instance %d", f.Name, inst)
			return c
		}
		*slot = f
		if inst > max {
			max = inst
		}
	}
	for i := 1; i <= max; i++ {
		s := byInst[i]
		if s == nil || s.aar == nil || s.ams == nil || s.as == nil {
			c.err = fmt.Sprintf("incomplete ARC set %d", i)
			return c
		}
		c.sets = append(c.sets, s)
	}
	return c
}

// keyCache looks DKIM/ARC keys up once per check.
type keyCache struct {
	ctx context.Context
	g   guard
	mu  sync.Mutex
	m   map[string]*keyResult
}

type keyResult struct {
	done chan struct{}
	key  *pubKey
	err  error
	temp bool
}

func (kc *keyCache) get(domain, selector string) (*pubKey, error, bool) {
	name := selector + "._domainkey." + domain
	kc.mu.Lock()
	r, ok := kc.m[name]
	if !ok {
		r = &keyResult{done: make(chan struct{})}
		kc.m[name] = r
	}
	kc.mu.Unlock()
	if !ok {
		txts, err := kc.g.LookupTXT(kc.ctx, name)
		switch {
		case err != nil && !isNotFound(err):
			r.err, r.temp = fmt.Errorf("key %s: %v", name, err), true
		case err != nil || len(txts) == 0:
			r.err = fmt.Errorf("no key at %s", name)
		case len(txts) > 1:
			r.err = fmt.Errorf("several key records at %s", name)
		default:
			r.key, r.err = parseKeyRecord(txts[0])
			if r.err == nil && r.key.revoked {
				r.key, r.err = nil, fmt.Errorf("key %s revoked", name)
			}
		}
		close(r.done)
	}
	select {
	case <-r.done:
		return r.key, r.err, r.temp
	case <-kc.ctx.Done():
		return nil, errors.New("key lookup: " + kc.ctx.Err().Error()), true
	}
}

// sealData is what ARC-Seal i=n signs (RFC 8617 §5.1.1): the ARC sets
// 1..n in order (AAR, AMS, AS each), relaxed, the last AS without b= and
// without its final CRLF. With only set true, just set n (a failed chain).
func sealData(sets []*arcSet, n int, only bool) []byte {
	var b strings.Builder
	from := 1
	if only {
		from = n
	}
	for i := from; i <= n; i++ {
		s := sets[i-1]
		b.WriteString(relaxedHeader(s.aar.Raw))
		b.WriteString(relaxedHeader(s.ams.Raw))
		if i < n {
			b.WriteString(relaxedHeader(s.as.Raw))
		} else {
			b.WriteString(strings.TrimSuffix(relaxedHeader(removeB(s.as.Raw)), "\r\n"))
		}
	}
	return []byte(b.String())
}

// sigData is what a DKIM-style signature field signs: the fields named in
// h= picked bottom-up, then the signature field without b= and its CRLF.
func sigData(fields []field, h []string, canon string, sig string) []byte {
	var b strings.Builder
	for _, f := range pickHeaders(fields, h) {
		b.WriteString(canonHeader(canon, f.Raw))
	}
	b.WriteString(strings.TrimSuffix(canonHeader(canon, removeB(sig)), "\r\n"))
	return []byte(b.String())
}

func splitH(h string) []string {
	var out []string
	for _, x := range strings.Split(h, ":") {
		if x = strings.TrimSpace(stripWS(x)); x != "" {
			out = append(out, strings.ToLower(x))
		}
	}
	return out
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(stripWS(s)) }

// arcVerdict is the outcome of validating a chain.
type arcVerdict struct {
	cv         string // none, pass, fail
	reason     string
	temp       bool // a DNS failure caused the fail
	terminated bool // the latest seal already says cv=fail: add no set
	instances  int
}

// validateSeals checks everything that does not need the body: the
// structure and all ARC-Seals. amsLatest still has to be checked.
func validateSeals(kc *keyCache, c *arcChain) arcVerdict {
	v := arcVerdict{cv: CVNone, instances: len(c.sets)}
	if c.err != "" {
		v.cv, v.reason = CVFail, c.err
		return v
	}
	n := len(c.sets)
	if n == 0 {
		return v
	}
	if c.sets[n-1].asTags["cv"] == CVFail {
		v.cv, v.reason, v.terminated = CVFail, "latest ARC-Seal reports cv=fail", true
		return v
	}
	for i := n; i >= 1; i-- {
		s := c.sets[i-1]
		cv := s.asTags["cv"]
		if (i == 1 && cv != CVNone) || (i > 1 && cv != CVPass) {
			v.cv, v.reason = CVFail, fmt.Sprintf("ARC-Seal i=%d has cv=%s", i, cv)
			return v
		}
		if _, bad := s.asTags["h"]; bad {
			v.cv, v.reason = CVFail, fmt.Sprintf("ARC-Seal i=%d has h=", i)
			return v
		}
		if err, temp := verifyTagSig(kc, s.asTags, sealData(c.sets, i, false)); err != nil {
			v.cv, v.reason, v.temp = CVFail, fmt.Sprintf("ARC-Seal i=%d: %v", i, err), temp
			return v
		}
	}
	v.cv = CVPass
	return v
}

// verifyAMS checks the ARC-Message-Signature of the latest set against the
// header fields and the body hashes (by body canonicalization).
func verifyAMS(kc *keyCache, fields []field, s *arcSet, bodyHash func(relaxed bool) []byte) (error, bool) {
	t := s.amsTags
	for _, k := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := t[k]; !ok {
			return fmt.Errorf("ARC-Message-Signature without %s=", k), false
		}
	}
	if _, ok := t["l"]; ok {
		return errors.New("ARC-Message-Signature with l= is not accepted"), false
	}
	h := splitH(t["h"])
	for _, x := range h {
		if x == "arc-seal" {
			return errors.New("ARC-Message-Signature signs ARC-Seal"), false
		}
	}
	hc, bc := "simple", "simple"
	if c, ok := t["c"]; ok {
		hc, bc, _ = strings.Cut(stripWS(c), "/")
		if bc == "" {
			bc = "simple"
		}
	}
	if (hc != "simple" && hc != "relaxed") || (bc != "simple" && bc != "relaxed") {
		return errors.New("unsupported canonicalization"), false
	}
	bh, err := decodeB64(t["bh"])
	if err != nil || string(bh) != string(bodyHash(bc == "relaxed")) {
		return errors.New("body hash did not verify"), false
	}
	return verifyTagSig(kc, t, sigData(fields, h, hc, s.ams.Raw))
}

func verifyTagSig(kc *keyCache, t map[string]string, data []byte) (error, bool) {
	algo := stripWS(t["a"])
	if algo != "rsa-sha256" && algo != "ed25519-sha256" {
		return fmt.Errorf("unsupported algorithm %q", algo), false
	}
	sig, err := decodeB64(t["b"])
	if err != nil {
		return errors.New("malformed b="), false
	}
	d, sel := strings.ToLower(stripWS(t["d"])), stripWS(t["s"])
	if d == "" || sel == "" {
		return errors.New("missing d= or s="), false
	}
	key, err, temp := kc.get(d, sel)
	if err != nil {
		return err, temp
	}
	if len(key.hashes) > 0 && !contains(key.hashes, "sha256") {
		return errors.New("key does not allow sha256"), false
	}
	if err := key.verify(algo, data, sig); err != nil {
		return fmt.Errorf("signature did not verify (d=%s s=%s)", d, sel), false
	}
	return nil, false
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// signHeaders are the fields our ARC-Message-Signature and DKIM-Signature
// cover when present (RFC 6376 §5.4.1). None of them is ever added by us,
// so prepending our fields cannot break the signatures.
var signHeaders = []string{
	"from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
	"mime-version", "content-type", "content-transfer-encoding", "content-id",
	"content-description", "resent-date", "resent-from", "resent-sender",
	"resent-to", "resent-cc", "resent-message-id", "in-reply-to", "references",
	"list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post",
	"list-owner", "list-archive",
}

// headerList is h= for a message: each present field of signHeaders once
// per occurrence; From always (it is required).
func headerList(fields []field) []string {
	count := map[string]int{}
	for _, f := range fields {
		count[f.lower()]++
	}
	var h []string
	for _, n := range signHeaders {
		c := count[n]
		if n == "from" && c == 0 {
			c = 1
		}
		for i := 0; i < c; i++ {
			h = append(h, n)
		}
	}
	return h
}

// foldB folds a base64 value into 72-character lines.
func foldB(b string) string {
	var s strings.Builder
	for len(b) > 72 {
		s.WriteString(b[:72])
		s.WriteString("\r\n\t ")
		b = b[72:]
	}
	s.WriteString(b)
	return s.String()
}

// seal builds the next ARC set (RFC 8617 §5.1) for a message with header
// fields and relaxed body hash bh, given the chain's validation verdict
// and the Authentication-Results payload (authserv-id; results).
// It returns the three fields, ARC-Seal first, CRLF-terminated, or "" when
// no set may be added (chain terminated by an earlier fail, or the
// instance limit).
func seal(key *Key, now time.Time, fields []field, chain *arcChain, v arcVerdict, arPayload string, bh []byte) (string, error) {
	if key == nil || v.terminated {
		return "", nil
	}
	n := len(chain.sets) + 1
	if chain.err != "" {
		n = 1
		for i := range fields {
			if isARC(fields[i].lower()) {
				if t, ok := tags(fields[i].value()); ok {
					if x, _ := strconv.Atoi(t["i"]); x >= n {
						n = x + 1
					}
				}
			}
		}
	}
	if n > arcMaxInstance {
		return "", nil
	}
	cv := v.cv
	if n == 1 {
		cv = CVNone
	}
	if key.Algorithm() != "rsa-sha256" {
		return "", errors.New("arc: only rsa-sha256 keys can seal")
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	aar := field{Name: hdrAAR, Raw: fmt.Sprintf("%s: i=%d; %s\r\n", hdrAAR, n, foldAR(arPayload))}

	h := headerList(fields)
	amsNoB := fmt.Sprintf("%s: i=%d; a=rsa-sha256; c=relaxed/relaxed; d=%s; s=%s; t=%s;\r\n\th=%s;\r\n\tbh=%s; b=",
		hdrAMS, n, key.Domain, key.Selector, ts, strings.Join(h, ":"), base64.StdEncoding.EncodeToString(bh))
	sig, err := key.sign(sigData(fields, h, "relaxed", amsNoB+"\r\n"))
	if err != nil {
		return "", err
	}
	ams := field{Name: hdrAMS, Raw: amsNoB + foldB(base64.StdEncoding.EncodeToString(sig)) + "\r\n"}

	asNoB := fmt.Sprintf("%s: i=%d; a=rsa-sha256; cv=%s; d=%s; s=%s; t=%s; b=", hdrAS, n, cv, key.Domain, key.Selector, ts)
	sets := append([]*arcSet(nil), chain.sets...)
	if chain.err != "" {
		sets = make([]*arcSet, n-1)
	}
	sets = append(sets, &arcSet{aar: &aar, ams: &ams, as: &field{Name: hdrAS, Raw: asNoB + "\r\n"}})
	sig, err = key.sign(sealData(sets, n, cv == CVFail))
	if err != nil {
		return "", err
	}
	as := asNoB + foldB(base64.StdEncoding.EncodeToString(sig)) + "\r\n"
	return as + ams.Raw + aar.Raw, nil
}

// foldAR folds an Authentication-Results payload after each ";".
func foldAR(p string) string {
	return strings.ReplaceAll(p, "; ", ";\r\n\t")
}
