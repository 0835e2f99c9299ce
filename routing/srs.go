package routing

// Sender Rewriting Scheme (SRS), byte-compatible with postsrsd 1.10 (libsrs2)
// and Mail::SRS 0.31 (Guarded) wherever those two agree.
//
// Format, with <s> the configured initial separator (= by default, or + or -)
// and every other separator =:
//
//	SRS0<s>HHHH=TT=orig-host=orig-local@srs-domain
//	SRS1<s>HHHH=fwd-host=<s0>rest@srs-domain    (re-forwarding SRS0<s0>rest@fwd-host)
//
// HHHH is the standard base64 (A-Za-z0-9+/, no padding) of
// HMAC-SHA1(secret, fields...), cut to HashLength characters. The fields are
// concatenated without a delimiter after folding ASCII A-Z to lower case
// (bytes >= 0x80 are not folded): TT, orig-host, orig-local for SRS0;
// fwd-host, rest (with its leading separator) for SRS1. The initial
// separator is not hashed. TT is the day number (Unix time / 86400) mod 1024
// in two RFC 4648 base32 characters. Nothing is quoted or escaped: the local
// part and host are copied byte for byte.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// SRS errors. Reverse distinguishes "not ours / not SRS" (ErrNotSRS: the
// address is an ordinary address and passes through) from "ours but
// invalid" (every other error: the relay answers 550 5.7.1 at RCPT, and never
// relays such an address anywhere).
var (
	// ErrNotSRS: the address is not an SRS address, or not one in our SRS
	// domain. It is an ordinary address.
	ErrNotSRS = errors.New("srs: not an SRS address of our domain")
	// ErrSRSBadHash: the hash is too short, too long or does not match any secret.
	ErrSRSBadHash = errors.New("srs: invalid hash")
	// ErrSRSExpired: the time stamp is older than MaxAgeDays or in the future.
	ErrSRSExpired = errors.New("srs: time stamp expired or in the future")
	// ErrSRSMalformed: an SRS address of our domain whose fields cannot be
	// parsed (Reverse), or a sender that cannot be rewritten into an address
	// Reverse would decode back to it (Forward).
	ErrSRSMalformed = errors.New("srs: malformed address")
	// ErrSRSTooLong: the rewritten address would exceed the SMTP limits (local
	// part over 64 octets or address over 254 octets). See Forward.
	ErrSRSTooLong = errors.New("srs: rewritten address too long")
)

// Defaults, as in postsrsd 1.10 and Mail::SRS 0.31.
const (
	DefaultSRSHashLength = 4
	DefaultSRSHashMin    = 4
	DefaultSRSMaxAgeDays = 21
	DefaultSRSSeparator  = '='

	srsMaxHashLength = 27 // base64 characters that cover the 20-byte SHA-1 digest
	srsTimeSlots     = 1024
	srsMaxLocal      = 64  // RFC 5321 4.5.3.1.1
	srsMaxAddress    = 254 // RFC 5321 4.5.3.1.3: a path is 256 octets with its brackets
	srsMaxSecretLine = 1022
)

const srsBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// SRS rewrites envelope senders (Forward) and decodes bounces to rewritten
// senders (Reverse). Zero fields take the defaults of postsrsd and Mail::SRS.
//
// Security notes, which follow from staying compatible with the other
// implementations and cannot be fixed here:
//
//   - Field-boundary ambiguity: the HMAC input is the fields concatenated with
//     no delimiter, so anyone holding a valid SRS0=gfkj=KH=example.com=alice@D
//     can move the boundary between host and user and get
//     SRS0=gfkj=KH=example.co=malice@D, which verifies and decodes to
//     malice@example.co (the same holds for SRS1 host/rest). postsrsd and
//     Mail::SRS accept it too. The exposure is limited to re-splits of an
//     address that already went through us, within its validity window.
//   - Replay: an SRS0 address is valid for MaxAgeDays+1 days (today and 21
//     days back by default), and again for the same window every 1024 days,
//     because the stamp is a day number mod 1024. An SRS1 address carries no
//     stamp and never expires; it only leads back to the first forwarder,
//     which checks its own SRS0.
//   - The hash is compared case-insensitively, as both other implementations
//     do, so each character carries about 5 bits: a 4-character hash is about
//     2^20 guesses per address and day. Rate-limit failed verifications.
//   - Reverse accepts only addresses in Domain (postsrsd and Mail::SRS ignore
//     the domain), so a valid SRS address of another host cannot turn us
//     into an open relay.
type SRS struct {
	// Secrets: the first signs, all verify (rotation: put the new secret
	// first and keep the old one for at least MaxAgeDays+1 days).
	Secrets [][]byte
	// Domain is the SRS domain; rewritten senders are in it, and Reverse
	// decodes only addresses in it (ASCII case-insensitive, no subdomains).
	Domain string
	// Separator is the initial separator after SRS0/SRS1: '=', '+' or '-'.
	Separator byte
	// HashLength is the number of hash characters Forward emits (1..27),
	// HashMin the fewest Reverse accepts (1..HashLength).
	HashLength, HashMin int
	// MaxAgeDays is how many days back a stamp is still valid (1..1000).
	MaxAgeDays int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Observe, if set, hears the outcome of every Forward and Reverse (see
	// SRSResult).
	Observe func(op, result string)
}

// LoadSRSSecrets reads a secrets file as postsrsd does: one secret per line,
// a line is cut at its first CR or LF, empty lines are skipped and spaces are
// kept. The first secret signs; all of them verify. A file without any
// secret, or with a NUL byte or a line over 1022 bytes (which postsrsd would
// read differently), is an error.
func LoadSRSSecrets(path string) ([][]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, fmt.Errorf("srs secrets %s: contains a NUL byte", path)
	}
	var secrets [][]byte
	for n, line := range bytes.Split(data, []byte("\n")) {
		if i := bytes.IndexByte(line, '\r'); i >= 0 {
			line = line[:i]
		}
		if len(line) > srsMaxSecretLine {
			return nil, fmt.Errorf("srs secrets %s:%d: line longer than %d bytes", path, n+1, srsMaxSecretLine)
		}
		if len(line) > 0 {
			secrets = append(secrets, bytes.Clone(line))
		}
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("srs secrets %s: no secret", path)
	}
	return secrets, nil
}

// Validate reports a configuration error (no secrets, an empty secret or
// domain, or a parameter out of range).
func (s *SRS) Validate() error {
	_, err := s.params()
	return err
}

type srsParams struct {
	sep                      byte
	hashLen, hashMin, maxAge int
}

func (s *SRS) params() (srsParams, error) {
	p := srsParams{sep: s.Separator, hashLen: s.HashLength, hashMin: s.HashMin, maxAge: s.MaxAgeDays}
	if p.sep == 0 {
		p.sep = DefaultSRSSeparator
	}
	if p.hashLen == 0 {
		p.hashLen = DefaultSRSHashLength
	}
	if p.hashMin == 0 {
		p.hashMin = min(DefaultSRSHashMin, p.hashLen)
	}
	if p.maxAge == 0 {
		p.maxAge = DefaultSRSMaxAgeDays
	}
	switch {
	case len(s.Secrets) == 0:
		return p, errors.New("srs: no secrets")
	case s.Domain == "" || strings.ContainsAny(s.Domain, "@= \t\r\n"):
		return p, fmt.Errorf("srs: bad domain %q", s.Domain)
	case !isSRSSep(p.sep):
		return p, fmt.Errorf("srs: separator %q is not one of = + -", p.sep)
	case p.hashLen < 1 || p.hashLen > srsMaxHashLength:
		return p, fmt.Errorf("srs: hash length %d not in 1..%d", p.hashLen, srsMaxHashLength)
	case p.hashMin < 1 || p.hashMin > p.hashLen:
		return p, fmt.Errorf("srs: minimum hash length %d not in 1..%d (the hash length)", p.hashMin, p.hashLen)
	case p.maxAge < 1 || p.maxAge > 1000:
		// Beyond 1022 a stamp from tomorrow would count as old, not future.
		return p, fmt.Errorf("srs: max age %d days not in 1..1000", p.maxAge)
	}
	for _, k := range s.Secrets {
		if len(k) == 0 {
			return p, errors.New("srs: empty secret")
		}
	}
	return p, nil
}

func isSRSSep(c byte) bool { return c == '=' || c == '+' || c == '-' }

func (s *SRS) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// srsDay is the UTC day number of t mod 1024.
func srsDay(t time.Time) int {
	d := t.Unix() / 86400
	if t.Unix() < 0 && t.Unix()%86400 != 0 {
		d--
	}
	return int(((d % srsTimeSlots) + srsTimeSlots) % srsTimeSlots)
}

func srsStamp(day int) string {
	return string([]byte{srsBase32[day>>5&31], srsBase32[day&31]})
}

// srsDigest is the full 27-character base64 HMAC-SHA1 of the fields, each
// folded to ASCII lower case, with secret k.
func srsDigest(k []byte, fields ...string) string {
	m := hmac.New(sha1.New, k)
	for _, f := range fields {
		m.Write([]byte(asciiLower(f)))
	}
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func asciiEqualFold(a, b string) bool {
	return len(a) == len(b) && asciiLower(a) == asciiLower(b)
}

// hasSRSTag reports whether local starts with SRS<n> (any case) and one of
// the three separators.
func hasSRSTag(local string, n byte) bool {
	return len(local) >= 5 && (local[0]|0x20) == 's' && (local[1]|0x20) == 'r' && (local[2]|0x20) == 's' &&
		local[3] == n && isSRSSep(local[4])
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// Forward rewrites the envelope sender as postsrsd 1.10 does, or returns it
// unchanged with a nil error when no rewrite applies: the null sender, a
// sender in Domain, and an address that already verifies under our secrets
// (at any host, as postsrsd's "Already rewritten").
//
// An SRS0 sender of another forwarder becomes SRS1; an SRS1 sender is
// re-hashed for our domain, not nested; any other sender becomes SRS0 with
// today's stamp.
//
// Forward refuses with ErrSRSMalformed, leaving the decision (keep the
// sender) to the caller, where postsrsd would emit an address it or we could
// not decode back to the sender: no @ or more than one @ (postsrsd splits at
// the first, Reverse at the last), an empty local part or host, control
// characters, a malformed SRS1 sender, or a host containing = (the fields
// would re-split differently).
//
// When the rewritten local part would exceed 64 octets or the address 254,
// Forward returns ErrSRSTooLong and never a truncated or invalid address. The
// relay defers such a message with a 4xx and a log line rather than sending
// it with the original sender, which SPF at the recipient could reject, or
// with an address that breaks RFC 5321.
func (s *SRS) Forward(sender string) (res string, err error) {
	defer func() { s.observe("forward", res != sender, err) }()
	p, err := s.params()
	if err != nil {
		return "", err
	}
	if sender == "" {
		return sender, nil // the null sender is never rewritten
	}
	at := strings.IndexByte(sender, '@')
	if at < 0 || strings.IndexByte(sender[at+1:], '@') >= 0 || hasControl(sender) {
		return "", ErrSRSMalformed
	}
	local, host := sender[:at], sender[at+1:]
	if local == "" || host == "" {
		return "", ErrSRSMalformed
	}
	if asciiEqualFold(host, s.Domain) {
		return sender, nil
	}
	if _, err := s.decode(local, p); err == nil {
		return sender, nil // already rewritten by us (postsrsd: "Already rewritten")
	}
	var out string
	var want srsFields
	switch {
	case hasSRSTag(local, '1'):
		// SRS1<s>hash=fwd-host=rest: keep fwd-host and rest, new hash.
		f := strings.SplitN(local[5:], "=", 3)
		if len(f) < 3 || f[1] == "" || f[2] == "" {
			return "", ErrSRSMalformed
		}
		want = srsFields{srs1: true, host: f[1], user: f[2]}
	case hasSRSTag(local, '0'):
		// SRS0<s0>rest@fwd-host: rest keeps its separator.
		want = srsFields{srs1: true, host: host, user: local[4:]}
	default:
		want = srsFields{stamp: srsStamp(srsDay(s.now())), host: host, user: local}
	}
	if want.srs1 {
		want.hash = srsDigest(s.Secrets[0], want.host, want.user)[:p.hashLen]
		out = "SRS1" + string(p.sep) + want.hash + "=" + want.host + "=" + want.user
	} else {
		want.hash = srsDigest(s.Secrets[0], want.stamp, want.host, want.user)[:p.hashLen]
		out = "SRS0" + string(p.sep) + want.hash + "=" + want.stamp + "=" + want.host + "=" + want.user
	}
	// Emit only what Reverse splits back into the same fields.
	if got, err := parseSRS(out); err != nil || got != want {
		return "", ErrSRSMalformed
	}
	if len(out) > srsMaxLocal || len(out)+1+len(s.Domain) > srsMaxAddress {
		return "", ErrSRSTooLong
	}
	return out + "@" + s.Domain, nil
}

type srsFields struct {
	srs1                    bool
	hash, stamp, host, user string // SRS1: user is rest, with its leading separator
}

// parseSRS splits an SRS local part (tag already checked) into its fields at
// the first = signs, as both other implementations do: SRS0 into hash, stamp,
// host, user (the user keeps further =), SRS1 into hash, host, rest.
func parseSRS(local string) (srsFields, error) {
	var f srsFields
	if hasSRSTag(local, '1') {
		p := strings.SplitN(local[5:], "=", 3)
		if len(p) < 3 {
			return f, ErrSRSMalformed
		}
		f = srsFields{srs1: true, hash: p[0], host: p[1], user: p[2]}
	} else {
		p := strings.SplitN(local[5:], "=", 4)
		if len(p) < 4 {
			return f, ErrSRSMalformed
		}
		f = srsFields{hash: p[0], stamp: p[1], host: p[2], user: p[3]}
	}
	if f.host == "" || f.user == "" {
		return f, ErrSRSMalformed
	}
	return f, nil
}

// Reverse decodes a bounce address in our SRS domain: SRS0 to the original
// sender (keeping the case of its fields), SRS1 to the first forwarder's SRS0
// address. It returns ErrNotSRS for an address that is not SRS or not in
// Domain (an ordinary address: pass it through), and ErrSRSBadHash,
// ErrSRSExpired or ErrSRSMalformed for an SRS address of ours that must be
// refused (550 5.7.1).
//
// It accepts only what both postsrsd 1.10 and Mail::SRS 0.31 accept: exactly
// one @; a stamp of exactly 2 base32 characters (any case) within MaxAgeDays
// (checked before the hash, as postsrsd does); a hash of HashMin..27
// characters of which every one must match (case-insensitively) the digest
// of one of the secrets; non-empty user and host.
func (s *SRS) Reverse(addr string) (res string, err error) {
	defer func() { s.observe("reverse", true, err) }()
	p, err := s.params()
	if err != nil {
		return "", err
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !asciiEqualFold(addr[at+1:], s.Domain) {
		return "", ErrNotSRS
	}
	local := addr[:at]
	if !hasSRSTag(local, '0') && !hasSRSTag(local, '1') {
		return "", ErrNotSRS
	}
	if strings.IndexByte(local, '@') >= 0 {
		return "", ErrSRSMalformed // postsrsd would split at the first @, Mail::SRS at the last
	}
	return s.decode(local, p)
}

// decode verifies an SRS local part (tag not yet checked) and returns the
// address it stands for.
func (s *SRS) decode(local string, p srsParams) (string, error) {
	if !hasSRSTag(local, '0') && !hasSRSTag(local, '1') {
		return "", ErrNotSRS
	}
	if hasControl(local) {
		return "", ErrSRSMalformed
	}
	f, err := parseSRS(local)
	if err != nil {
		return "", err
	}
	if len(f.hash) < p.hashMin || len(f.hash) > srsMaxHashLength {
		return "", ErrSRSBadHash
	}
	fields := []string{f.host, f.user}
	if !f.srs1 {
		if len(f.stamp) != 2 {
			return "", ErrSRSMalformed
		}
		then := 0
		for i := 0; i < 2; i++ {
			c := f.stamp[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			v := strings.IndexByte(srsBase32, c)
			if v < 0 {
				return "", ErrSRSMalformed
			}
			then = then<<5 | v
		}
		now := srsDay(s.now())
		for now < then {
			now += srsTimeSlots
		}
		if now-then > p.maxAge {
			return "", ErrSRSExpired
		}
		fields = []string{f.stamp, f.host, f.user}
	}
	given := []byte(asciiLower(f.hash))
	ok := 0
	for _, k := range s.Secrets {
		want := []byte(asciiLower(srsDigest(k, fields...)[:len(f.hash)]))
		if hmac.Equal(given, want) {
			ok = 1
		}
	}
	if ok == 0 {
		return "", ErrSRSBadHash
	}
	if f.srs1 {
		return "SRS0" + f.user + "@" + f.host, nil
	}
	return f.user + "@" + f.host, nil
}
