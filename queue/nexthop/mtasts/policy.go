package mtasts

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode is a policy's mode (RFC 8461 §5).
type Mode string

const (
	// ModeEnforce: deliver only to MX hosts that match the policy and
	// present a valid certificate over TLS.
	ModeEnforce Mode = "enforce"
	// ModeTesting: deliver as usual, report what enforce would refuse.
	ModeTesting Mode = "testing"
	// ModeNone: the domain has withdrawn its policy (§8.3).
	ModeNone Mode = "none"
)

const (
	// MaxPolicySize caps the policy body read and parsed. RFC 8461 sets
	// no limit; 64 KiB is far above any real policy and bounds memory.
	MaxPolicySize = 64 << 10
	// MaxMaxAge is the largest max_age RFC 8461 §3.2 allows (a year).
	MaxMaxAge = 31557600 * time.Second
)

// ErrInvalidPolicy is wrapped by every ParsePolicy error.
var ErrInvalidPolicy = errors.New("invalid MTA-STS policy")

// Policy is a parsed policy file. ParsePolicy only returns valid ones:
// Mode is one of the three, MX holds lower-case patterns without
// trailing dot (at least one unless Mode is none), MaxAge is at most
// MaxMaxAge.
type Policy struct {
	Mode   Mode
	MX     []string      // "mx.example.com" or "*.example.com"
	MaxAge time.Duration // whole seconds
}

// ParsePolicy parses a policy body as RFC 8461 §3.2 defines it: lines
// "key: value" ending in LF or CRLF (the last one may end without), keys
// and values case-sensitive. Unknown keys are ignored, as the RFC wants
// for extensions; version, mode and max_age must appear exactly once, mx
// at least once (unless mode is none, where it means nothing and
// withdrawing domains often leave it out). Blank lines and a leading
// UTF-8 byte order mark are tolerated: the ABNF does not allow them, but
// they are harmless and rejecting the policy over them would drop the
// domain's protection. A max_age above MaxMaxAge is read as MaxMaxAge,
// for the same reason.
func ParsePolicy(body []byte) (*Policy, error) {
	if len(body) > MaxPolicySize {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalidPolicy, MaxPolicySize)
	}
	s := strings.TrimPrefix(string(body), "\uFEFF")
	p := &Policy{}
	var haveVersion, haveMode, haveMaxAge bool
	for n := 1; s != ""; n++ {
		var line string
		line, s, _ = strings.Cut(s, "\n")
		line = strings.TrimSuffix(line, "\r")
		if strings.Trim(line, " \t") == "" {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: line %d: %s", ErrInvalidPolicy, n, fmt.Sprintf(format, args...))
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, bad("no colon")
		}
		if !validFieldName(key) {
			return nil, bad("bad key %q", truncate(key))
		}
		value = strings.Trim(value, " \t")
		switch key {
		case "version":
			if haveVersion {
				return nil, bad("version repeated")
			}
			if value != "STSv1" {
				return nil, bad("version %q, want STSv1", truncate(value))
			}
			haveVersion = true
		case "mode":
			if haveMode {
				return nil, bad("mode repeated")
			}
			switch m := Mode(value); m {
			case ModeEnforce, ModeTesting, ModeNone:
				p.Mode = m
			default:
				return nil, bad("unknown mode %q", truncate(value))
			}
			haveMode = true
		case "max_age":
			if haveMaxAge {
				return nil, bad("max_age repeated")
			}
			if len(value) == 0 || len(value) > 10 || strings.Trim(value, "0123456789") != "" {
				return nil, bad("max_age %q is not 1 to 10 digits", truncate(value))
			}
			secs, _ := strconv.ParseInt(value, 10, 64) // 10 digits always fit
			p.MaxAge = time.Duration(min(secs, int64(MaxMaxAge/time.Second))) * time.Second
			haveMaxAge = true
		case "mx":
			pat, err := normalizePattern(value)
			if err != nil {
				return nil, bad("mx %q: %v", truncate(value), err)
			}
			p.MX = append(p.MX, pat)
		default:
			// An extension (§3.2): ignored, whatever its value.
		}
	}
	switch {
	case !haveVersion:
		return nil, fmt.Errorf("%w: no version", ErrInvalidPolicy)
	case !haveMode:
		return nil, fmt.Errorf("%w: no mode", ErrInvalidPolicy)
	case !haveMaxAge:
		return nil, fmt.Errorf("%w: no max_age", ErrInvalidPolicy)
	case len(p.MX) == 0 && p.Mode != ModeNone:
		return nil, fmt.Errorf("%w: no mx", ErrInvalidPolicy)
	}
	return p, nil
}

// MatchMX reports whether host is one of the policy's MX patterns
// (RFC 8461 §4.1): equal to an exact pattern, or one label in front of a
// wildcard's suffix ("*.example.com" matches "mx1.example.com", not
// "a.b.example.com" nor "example.com"). Case and a trailing dot are
// ignored. It says nothing of the mode: with ModeNone or ModeTesting a
// mismatch is no reason to refuse the host.
func (p *Policy) MatchMX(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "" {
		return false
	}
	for _, pat := range p.MX {
		if suffix, ok := strings.CutPrefix(pat, "*"); ok {
			label, ok := strings.CutSuffix(h, suffix)
			if ok && label != "" && !strings.Contains(label, ".") {
				return true
			}
		} else if h == pat {
			return true
		}
	}
	return false
}

// String is the policy in the file format, with LF line ends; ParsePolicy
// reads it back to an equal policy.
func (p *Policy) String() string {
	var b strings.Builder
	b.WriteString("version: STSv1\nmode: ")
	b.WriteString(string(p.Mode))
	b.WriteByte('\n')
	for _, mx := range p.MX {
		b.WriteString("mx: ")
		b.WriteString(mx)
		b.WriteByte('\n')
	}
	b.WriteString("max_age: ")
	b.WriteString(strconv.FormatInt(int64(p.MaxAge/time.Second), 10))
	b.WriteByte('\n')
	return b.String()
}

// validate checks a policy that did not come from ParsePolicy (the cache
// file) against the same rules.
func (p *Policy) validate() error {
	switch p.Mode {
	case ModeEnforce, ModeTesting, ModeNone:
	default:
		return fmt.Errorf("%w: unknown mode %q", ErrInvalidPolicy, truncate(string(p.Mode)))
	}
	if p.MaxAge < 0 || p.MaxAge > MaxMaxAge {
		return fmt.Errorf("%w: max_age %v out of range", ErrInvalidPolicy, p.MaxAge)
	}
	if len(p.MX) == 0 && p.Mode != ModeNone {
		return fmt.Errorf("%w: no mx", ErrInvalidPolicy)
	}
	for _, mx := range p.MX {
		if n, err := normalizePattern(mx); err != nil || n != mx {
			return fmt.Errorf("%w: mx %q", ErrInvalidPolicy, truncate(mx))
		}
	}
	return nil
}

// normalizePattern checks an mx value, ["*."] Domain (RFC 8461 §3.2, the
// wildcard a whole leftmost label), and returns it lower case without a
// trailing dot.
func normalizePattern(v string) (string, error) {
	v = strings.ToLower(strings.TrimSuffix(v, "."))
	if err := checkDomain(strings.TrimPrefix(v, "*.")); err != nil {
		return "", err
	}
	return v, nil
}

// checkDomain checks a lower-case domain name without trailing dot for
// RFC 5321 syntax: LDH labels of 1–63 characters, none starting or
// ending with a hyphen, 253 characters at most. Internationalized names
// must come as A-labels.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty domain")
	}
	if len(d) > 253 {
		return errors.New("domain too long")
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("bad label length")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("label starts or ends with a hyphen")
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return fmt.Errorf("bad character %q", c)
			}
		}
	}
	return nil
}

// validFieldName is sts-policy-ext-name and sts-ext-name of RFC 8461:
// (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validFieldName(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			return false
		}
	}
	return true
}

// truncate keeps error messages about hostile input short.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
