// Package srs is the Sender Rewriting Scheme codec: it rewrites envelope
// senders and decodes bounce addresses, in the format of postsrsd (1.10 and 2.x)
// and Mail::SRS 0.31 (Guarded), with a hash that cannot be re-split.
//
// Format, with <s> the configured initial separator (=, + or -)
// and every other separator =:
//
//	SRS0<s>HHHH=TT=orig-host=orig-local@srs-domain
//	SRS1<s>HHHH=fwd-host=<s0>rest@srs-domain    (re-forwarding SRS0<s0>rest@fwd-host)
//	SRS0<s>HHHH=TT=1=KEY@srs-domain             (database form: KEY names a stored sender)
//
// TT is the day number (Unix time / 86400) mod 1024 in two RFC 4648 base32
// characters. Nothing is quoted or escaped: the local part and host are
// copied byte for byte. HHHH is a prefix of a base64 HMAC-SHA1 over the
// fields (TT, orig-host, orig-local for SRS0; fwd-host, rest for SRS1), each
// folded to ASCII lower case. Two hashes are in use:
//
//   - v2, which we mint: the fields are each preceded by a NUL byte after a
//     version label, so every field boundary is fixed by the hash. Emitted in
//     base64url (A-Za-z0-9-_), as postsrsd 2.2.6 and later emit theirs.
//   - legacy (postsrsd 1.x/2.x, Mail::SRS): the fields concatenated with no
//     delimiter. Whoever holds one valid legacy address can move a boundary
//     (SRS0=h=TT=victim.examplejohn=_doe becomes SRS0=h=TT=victim.example=
//     john_doe, which verifies) and, since they chose the sender, aim the
//     decoded address anywhere. Reverse accepts a legacy hash only for SRS0
//     stamps minted on or before the cut-over day (LegacyUntil) and for SRS1
//     until MaxAgeDays after it: the bounces still in flight from postsrsd or
//     from mailfwd before v2, and never an address minted later.
//
// Reverse compares hashes as postsrsd 2.4.0 does: case-insensitively, with
// + equal to - and / equal to _, so addresses minted in either base64
// alphabet, and in any case, verify.
//
// A sender whose SRS0 (or SRS1) form would not fit RFC 5321 (a 64-octet local
// part, a 254-octet address) or would need quotes, or that SRS cannot embed
// so that it splits back the same (two @, an empty part, = in the host), is
// stored in Store under a
// keyed hash of itself and replaced by the database form, as postsrsd 2.x
// does in its database mode: a 47-octet local part for any sender. Its key
// is an HMAC of the sender, not postsrsd's plain SHA-1, so the form does not
// reveal which address was forwarded. The form of postsrsd's own database
// mode (host 1, 32 base32hex characters) reverses through Store too, so
// bounces to addresses a postsrsd 2.x minted are found where it stored them
// (Redis, same key layout).
//
// This package only encodes and decodes. Which sender a forward carries
// (forwardSender), and what a bounce to a decoded address may do
// (recipients, rate, failure budget), is decided in relay/srs.go; whether a
// recipient is a forward at all, in relay/forward.go. The stores are in
// routing/srsstore.
package srs

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"mailfwd/routing"
)

// SRS errors. Reverse distinguishes "not ours / not SRS" (ErrNotSRS: the
// address is an ordinary address and passes through) from "ours but
// invalid" (ErrBadHash, ErrExpired, ErrMalformed, ErrUnknownKey:
// the relay answers 550 5.7.1 at RCPT, and never relays such an address
// anywhere) and from a store that cannot answer now (ErrStore: 4xx).
var (
	// ErrNotSRS: the address is not an SRS address, or not one in our SRS
	// domain. It is an ordinary address.
	ErrNotSRS = errors.New("srs: not an SRS address of our domain")
	// ErrBadHash: the hash is too short, too long or does not match any secret.
	ErrBadHash = errors.New("srs: invalid hash")
	// ErrExpired: the time stamp is older than MaxAgeDays or in the future.
	ErrExpired = errors.New("srs: time stamp expired or in the future")
	// ErrMalformed: an SRS address of our domain whose fields cannot be
	// parsed (Reverse), or a sender that cannot be rewritten into an address
	// Reverse would decode back to it, with no Store to keep it (Forward).
	ErrMalformed = errors.New("srs: malformed address")
	// ErrTooLong: the rewritten address would exceed the SMTP limits (local
	// part over 64 octets or address over 254 octets) and there is no Store.
	ErrTooLong = errors.New("srs: rewritten address too long")
	// ErrUnknownKey: a validly signed database-form address whose key the
	// store does not hold (expired, never stored, or the store was lost).
	ErrUnknownKey = errors.New("srs: unknown database key")
	// ErrStore: the store failed (wrapped with its error); temporary.
	ErrStore = errors.New("srs: sender store unavailable")
)

const (
	srsMaxHashLength = 27 // base64 characters that cover the 20-byte SHA-1 digest
	srsTimeSlots     = 1024
	srsMaxLocal      = 64  // RFC 5321 4.5.3.1.1
	srsMaxAddress    = 254 // RFC 5321 4.5.3.1.3: a path is 256 octets with its brackets
	srsMaxSecretLine = 1022
	srsKeyLen        = 32 // base32hex characters of a database key (160 bits)
	srsKeyHost       = "1"
)

const srsBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// srsV2Label starts the v2 HMAC input; it never starts a legacy one,
// whose first field is a stamp or a host.
const srsV2Label = "mailfwd-srs-v2"

var srsKeyEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

// Store keeps the senders behind database-form addresses. day is the
// minting day (Unix time / 86400, not mod 1024): a store may expire what it
// holds after MaxAgeDays+1 days. Get returns ErrUnknownKey for a key it
// does not hold; any other error means it could not answer (temporary).
type Store interface {
	Put(ctx context.Context, key, sender string, day int64) error
	Get(ctx context.Context, key string, day int64) (string, error)
}

// Rewriter rewrites envelope senders (Forward) and decodes bounces to rewritten
// senders (Reverse). Separator, HashLength, HashMin and MaxAgeDays are
// required (the configuration's defaults are postsrsd's: '=', 4, 4, 21).
//
// Security notes:
//
//   - Field-boundary re-splits: prevented for what we mint (the v2 hash),
//     accepted only inside the legacy window (see the package comment).
//   - Replay: an SRS0 address is valid for MaxAgeDays+1 days (today and
//     MaxAgeDays back), and again for the same window every 1024 days,
//     because the stamp is a day number mod 1024; a database-form address
//     only while Store holds its key. An SRS1 address carries no stamp and
//     never expires; it only leads back to the first forwarder, which checks
//     its own SRS0. What a valid address may be used for (bounces only, how
//     many recipients, how often) is the relay's policy.
//   - The hash is compared case-insensitively, as the other implementations
//     do, so each character carries about 5.2 bits: a 4-character hash is
//     about 2^21 guesses per address and day. The relay rate-limits failed
//     verifications.
//   - Reverse accepts only addresses in Domain (postsrsd and Mail::SRS ignore
//     the domain), so a valid SRS address of another host cannot turn us
//     into an open relay.
type Rewriter struct {
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
	// LegacyUntil is the cut-over day (UTC): legacy hashes verify for SRS0
	// stamps minted on or before it, and for SRS1 until MaxAgeDays after it.
	// Zero: no legacy hash verifies.
	LegacyUntil time.Time
	// Store keeps the senders of database-form addresses. Nil: no database
	// form; a sender that does not fit is refused (ErrTooLong).
	Store Store
	// DatabaseAlways puts every ordinary sender in Store (postsrsd's
	// original-envelope = database), not only those that do not fit.
	DatabaseAlways bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Observe, if set, hears the outcome of every Forward and Reverse (see
	// Result).
	Observe func(op, result string)
}

// LoadSecrets reads a secrets file as postsrsd does: one secret per line,
// a line is cut at its first CR or LF, empty lines are skipped and spaces are
// kept. The first secret signs; all of them verify. A file without any
// secret, or with a NUL byte or a line over 1022 bytes (which postsrsd would
// read differently), is an error.
func LoadSecrets(path string) ([][]byte, error) {
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
func (s *Rewriter) Validate() error {
	_, err := s.params()
	return err
}

type srsParams struct {
	sep                      byte
	hashLen, hashMin, maxAge int
}

func (s *Rewriter) params() (srsParams, error) {
	p := srsParams{sep: s.Separator, hashLen: s.HashLength, hashMin: s.HashMin, maxAge: s.MaxAgeDays}
	switch {
	case len(s.Secrets) == 0:
		return p, errors.New("srs: no secrets")
	case s.Domain == "" || strings.ContainsAny(s.Domain, "@= \t\r\n"):
		return p, fmt.Errorf("srs: bad domain %q", s.Domain)
	case len(s.Domain) > srsMaxAddress-1-(9+srsKeyLen+srsMaxHashLength):
		// the database form must always fit, whatever the hash length
		return p, fmt.Errorf("srs: domain %q longer than %d octets", s.Domain, srsMaxAddress-1-(9+srsKeyLen+srsMaxHashLength))
	case !isSRSSep(p.sep):
		return p, fmt.Errorf("srs: separator %q is not one of = + -", p.sep)
	case p.hashLen < 1 || p.hashLen > srsMaxHashLength:
		return p, fmt.Errorf("srs: hash length %d not in 1..%d", p.hashLen, srsMaxHashLength)
	case p.hashMin < 1 || p.hashMin > p.hashLen:
		return p, fmt.Errorf("srs: minimum hash length %d not in 1..%d (the hash length)", p.hashMin, p.hashLen)
	case p.maxAge < 1 || p.maxAge > 1000:
		// Beyond 1022 a stamp from tomorrow would count as old, not future.
		return p, fmt.Errorf("srs: max age %d days not in 1..1000", p.maxAge)
	case s.DatabaseAlways && s.Store == nil:
		return p, errors.New("srs: database mode for every sender needs a store")
	}
	for _, k := range s.Secrets {
		if len(k) == 0 {
			return p, errors.New("srs: empty secret")
		}
	}
	return p, nil
}

func isSRSSep(c byte) bool { return c == '=' || c == '+' || c == '-' }

func (s *Rewriter) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// unixDay is the UTC day number of t (floor).
func unixDay(t time.Time) int64 {
	d := t.Unix() / 86400
	if t.Unix() < 0 && t.Unix()%86400 != 0 {
		d--
	}
	return d
}

// srsDay is the UTC day number of t mod 1024.
func srsDay(t time.Time) int {
	return int(((unixDay(t) % srsTimeSlots) + srsTimeSlots) % srsTimeSlots)
}

func srsStamp(day int) string {
	return string([]byte{srsBase32[day>>5&31], srsBase32[day&31]})
}

// srsDigest is the full 27-character standard base64 HMAC-SHA1 of the
// fields concatenated, each folded to ASCII lower case: the legacy hash.
func srsDigest(k []byte, fields ...string) string {
	m := hmac.New(sha1.New, k)
	for _, f := range fields {
		m.Write([]byte(asciiLower(f)))
	}
	return base64.RawStdEncoding.EncodeToString(m.Sum(nil))
}

// srsDigestV2 is the v2 hash: HMAC-SHA1 over the version label and each
// lower-cased field after a NUL (no field holds one: control characters
// are refused both ways), in base64url.
func srsDigestV2(k []byte, fields ...string) string {
	m := hmac.New(sha1.New, k)
	m.Write([]byte(srsV2Label))
	for _, f := range fields {
		m.Write([]byte{0})
		m.Write([]byte(asciiLower(f)))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// srsKey is the database key of sender: 160 bits of an HMAC of its exact
// bytes (case kept: the bounce must go back to the sender as given).
func srsKey(k []byte, sender string) string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("mailfwd-srs-key\x00"))
	m.Write([]byte(sender))
	return srsKeyEncoding.EncodeToString(m.Sum(nil)[:20])
}

// isSRSKey reports whether the user field of a host-1 SRS0 is a database
// key (ours or postsrsd 2.x's): 32 base32hex characters, any case.
func isSRSKey(host, user string) bool {
	if host != srsKeyHost || len(user) != srsKeyLen {
		return false
	}
	for i := 0; i < len(user); i++ {
		c := user[i] | 0x20
		if !('0' <= user[i] && user[i] <= '9') && !('a' <= c && c <= 'v') {
			return false
		}
	}
	return true
}

// hashClass maps a hash character to its class under postsrsd 2.4.0's
// base64_equivalent: letters fold to lower case, + and - are one, / and _
// are one; 0 for a character outside both alphabets.
func hashClass(c byte) byte {
	switch {
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		return c
	case c == '+' || c == '-':
		return '-'
	case c == '/' || c == '_':
		return '_'
	}
	return 0
}

// hashEqual compares a given hash with a digest prefix of the same length,
// class by class, in constant time for that length.
func hashEqual(given, digest string) bool {
	if len(given) != len(digest) {
		return false
	}
	a, b := make([]byte, len(given)), make([]byte, len(given))
	bad := byte(0)
	for i := range len(given) {
		a[i], b[i] = hashClass(given[i]), hashClass(digest[i])
		if a[i] == 0 {
			bad = 1
		}
	}
	return hmac.Equal(a, b) && bad == 0
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

// Forward rewrites the envelope sender, or returns it unchanged with a nil
// error when no rewrite applies: the null sender, a sender in Domain, and
// an address that already verifies under our secrets (at any host, as
// postsrsd 1.10's "Already rewritten").
//
// An SRS0 sender of another forwarder becomes SRS1; an SRS1 sender is
// re-hashed for our domain, not nested; any other sender becomes SRS0 with
// today's stamp, in the format postsrsd emits (with the v2 hash).
//
// A sender whose form would exceed the SMTP limits or need quoting, or that
// cannot be embedded so that Reverse splits it back into the same fields (two @, an
// empty local part or host, = in the host, a malformed SRS1 sender), is
// stored in Store and gets the database form; without a Store, Forward
// returns ErrTooLong or ErrMalformed, never a truncated or invalid
// address. A store failure is ErrStore (temporary). Control characters
// are always ErrMalformed.
func (s *Rewriter) Forward(ctx context.Context, sender string) (res string, err error) {
	how := ""
	defer func() { s.observe("forward", res != sender, err, how) }()
	p, err := s.params()
	if err != nil {
		return "", err
	}
	if sender == "" {
		return sender, nil // the null sender is never rewritten
	}
	if hasControl(sender) {
		return "", ErrMalformed
	}
	if at := strings.LastIndexByte(sender, '@'); at >= 0 {
		if asciiEqualFold(sender[at+1:], s.Domain) {
			return sender, nil
		}
		if _, err := s.verify(sender[:at], p); err == nil {
			return sender, nil // already rewritten by us
		}
	}
	var want srsFields
	embeddable := false
	at := strings.IndexByte(sender, '@')
	if at > 0 && at < len(sender)-1 && strings.IndexByte(sender[at+1:], '@') < 0 {
		local, host := sender[:at], sender[at+1:]
		switch {
		case hasSRSTag(local, '1'):
			// SRS1<s>hash=fwd-host=rest: keep fwd-host and rest, new hash.
			f := strings.SplitN(local[5:], "=", 3)
			if len(f) == 3 && f[1] != "" && f[2] != "" {
				want, embeddable = srsFields{srs1: true, host: f[1], user: f[2]}, true
			}
		case hasSRSTag(local, '0'):
			// SRS0<s0>rest@fwd-host: rest keeps its separator.
			want, embeddable = srsFields{srs1: true, host: host, user: local[4:]}, true
		default:
			want, embeddable = srsFields{stamp: srsStamp(srsDay(s.now())), host: host, user: local}, !s.DatabaseAlways
		}
	}
	if embeddable {
		out := s.mint(want, p)
		// Emit only what Reverse splits back into the same fields.
		if got, err := parseSRS(out); err == nil && got.sameFields(want) {
			// A local part that needs quotes on the wire ("john doe",
			// trail.) is stored too when it can be: receivers and the
			// MTAs between mangle quoted bounce addresses.
			if q := routing.QuoteLocal(out); fits(q, s.Domain) && (s.Store == nil || q == out) {
				return out + "@" + s.Domain, nil
			}
			if s.Store == nil {
				return "", ErrTooLong
			}
		}
	}
	if s.Store == nil {
		return "", ErrMalformed
	}
	how = "database"
	return s.forwardStored(ctx, sender, p)
}

// forwardStored puts sender in the store and returns its database form.
func (s *Rewriter) forwardStored(ctx context.Context, sender string, p srsParams) (string, error) {
	now := s.now()
	key := srsKey(s.Secrets[0], sender)
	if err := s.Store.Put(ctx, key, sender, unixDay(now)); err != nil {
		return "", fmt.Errorf("%w: %w", ErrStore, err)
	}
	out := s.mint(srsFields{stamp: srsStamp(srsDay(now)), host: srsKeyHost, user: key}, p)
	return out + "@" + s.Domain, nil
}

// mint builds the local part for f with a v2 hash.
func (s *Rewriter) mint(f srsFields, p srsParams) string {
	if f.srs1 {
		h := srsDigestV2(s.Secrets[0], f.host, f.user)[:p.hashLen]
		return "SRS1" + string(p.sep) + h + "=" + f.host + "=" + f.user
	}
	h := srsDigestV2(s.Secrets[0], f.stamp, f.host, f.user)[:p.hashLen]
	return "SRS0" + string(p.sep) + h + "=" + f.stamp + "=" + f.host + "=" + f.user
}

func fits(local, domain string) bool {
	return len(local) <= srsMaxLocal && len(local)+1+len(domain) <= srsMaxAddress
}

type srsFields struct {
	srs1                    bool
	hash, stamp, host, user string // SRS1: user is rest, with its leading separator
}

func (f srsFields) sameFields(g srsFields) bool {
	return f.srs1 == g.srs1 && f.stamp == g.stamp && f.host == g.host && f.user == g.user
}

// parseSRS splits an SRS local part (tag already checked) into its fields at
// the first = signs, as the other implementations do: SRS0 into hash, stamp,
// host, user (the user keeps further =), SRS1 into hash, host, rest.
func parseSRS(local string) (srsFields, error) {
	var f srsFields
	if hasSRSTag(local, '1') {
		p := strings.SplitN(local[5:], "=", 3)
		if len(p) < 3 {
			return f, ErrMalformed
		}
		f = srsFields{srs1: true, hash: p[0], host: p[1], user: p[2]}
	} else {
		p := strings.SplitN(local[5:], "=", 4)
		if len(p) < 4 {
			return f, ErrMalformed
		}
		f = srsFields{hash: p[0], stamp: p[1], host: p[2], user: p[3]}
	}
	if f.host == "" || f.user == "" {
		return f, ErrMalformed
	}
	return f, nil
}

// Reverse decodes a bounce address in our SRS domain: SRS0 to the original
// sender (keeping the case of its fields), SRS1 to the first forwarder's SRS0
// address, the database form to the sender Store holds. It returns ErrNotSRS
// for an address that is not SRS or not in Domain (an ordinary address: pass
// it through), ErrBadHash, ErrExpired, ErrMalformed or
// ErrUnknownKey for an SRS address of ours that must be refused (550
// 5.7.1), and ErrStore when the store cannot answer (temporary).
//
// It accepts only what postsrsd and Mail::SRS 0.31 both accept: exactly
// one @; a stamp of exactly 2 base32 characters (any case) within MaxAgeDays
// (checked before the hash, as postsrsd does); a hash of HashMin..27
// characters of which every one must match (case- and alphabet-
// insensitively) the v2 digest of one of the secrets, or within the legacy
// window the legacy digest; non-empty user and host.
func (s *Rewriter) Reverse(ctx context.Context, addr string) (res string, err error) {
	how := ""
	defer func() { s.observe("reverse", true, err, how) }()
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
		return "", ErrMalformed // postsrsd would split at the first @, Mail::SRS at the last
	}
	v, err := s.verify(local, p)
	if err != nil {
		return "", err
	}
	if v.legacy {
		how = "legacy"
	}
	if v.srs1 {
		return "SRS0" + v.user + "@" + v.host, nil
	}
	if !isSRSKey(v.host, v.user) {
		return v.user + "@" + v.host, nil
	}
	if s.Store == nil {
		return "", ErrUnknownKey
	}
	orig, err := s.Store.Get(ctx, strings.ToUpper(v.user), v.day)
	switch {
	case errors.Is(err, ErrUnknownKey):
		return "", err
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrStore, err)
	case orig == "" || hasControl(orig):
		return "", ErrUnknownKey
	}
	how = "database"
	return orig, nil
}

// verified is an SRS local part whose stamp and hash checked out.
type verified struct {
	srsFields
	day    int64 // SRS0: the minting day
	legacy bool
}

// verify checks an SRS local part (tag not yet checked): fields, stamp,
// then hash.
func (s *Rewriter) verify(local string, p srsParams) (verified, error) {
	if !hasSRSTag(local, '0') && !hasSRSTag(local, '1') {
		return verified{}, ErrNotSRS
	}
	if hasControl(local) {
		return verified{}, ErrMalformed
	}
	f, err := parseSRS(local)
	if err != nil {
		return verified{}, err
	}
	v := verified{srsFields: f}
	if len(f.hash) < p.hashMin || len(f.hash) > srsMaxHashLength {
		return v, ErrBadHash
	}
	today := unixDay(s.now())
	legacyUntil := int64(-1 << 62)
	if !s.LegacyUntil.IsZero() {
		legacyUntil = unixDay(s.LegacyUntil)
	}
	fields := []string{f.host, f.user}
	legacyOK := today <= legacyUntil+int64(p.maxAge) // SRS1: a window after the cut-over
	if !f.srs1 {
		if len(f.stamp) != 2 {
			return v, ErrMalformed
		}
		then := 0
		for i := 0; i < 2; i++ {
			c := f.stamp[i]
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			x := strings.IndexByte(srsBase32, c)
			if x < 0 {
				return v, ErrMalformed
			}
			then = then<<5 | x
		}
		now := srsDay(s.now())
		for now < then {
			now += srsTimeSlots
		}
		age := now - then
		if age > p.maxAge {
			return v, ErrExpired
		}
		v.day = today - int64(age)
		legacyOK = v.day <= legacyUntil
		fields = []string{f.stamp, f.host, f.user}
	}
	ok := false
	for _, k := range s.Secrets {
		ok = hashEqual(f.hash, srsDigestV2(k, fields...)[:len(f.hash)]) || ok
	}
	if !ok && legacyOK {
		for _, k := range s.Secrets {
			v.legacy = hashEqual(f.hash, srsDigest(k, fields...)[:len(f.hash)]) || v.legacy
		}
		ok = v.legacy
	}
	if !ok {
		return v, ErrBadHash
	}
	return v, nil
}
