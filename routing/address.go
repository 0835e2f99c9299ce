package routing

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadAddress marks an envelope address that is not a usable mailbox.
var ErrBadAddress = errors.New("bad address")

// Address is an envelope mailbox. Local keeps the client's spelling (the
// directory decides how it matches); Domain is lower-case A-label form, so
// that domains compare as DNS compares them.
type Address struct {
	Local  string
	Domain string
}

// idnaProfile converts U-labels to A-labels and rejects what DNS would not
// resolve, so look-alike and malformed domains never reach a lookup.
var idnaProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.ValidateLabels(true), idna.StrictDomainName(false))

// ParseAddress parses "local@domain" as go-smtp hands it over (angle
// brackets and quoting already removed). The domain is the part after the
// last '@'.
func ParseAddress(s string) (Address, error) {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i == len(s)-1 {
		return Address{}, fmt.Errorf("%w: %q is not local@domain", ErrBadAddress, s)
	}
	local, domain := s[:i], s[i+1:]
	if len(local) > 64*4 { // generous for UTF-8; RFC 5321 caps octets at 64, Postfix does not enforce it
		return Address{}, fmt.Errorf("%w: local part too long", ErrBadAddress)
	}
	for _, r := range local {
		if r < 0x20 || r == 0x7f {
			return Address{}, fmt.Errorf("%w: control character in local part", ErrBadAddress)
		}
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Address{}, err
	}
	return Address{Local: local, Domain: d}, nil
}

// NormalizeDomain returns the lower-case A-label form of a domain, or an
// error for a domain that DNS could not hold (empty labels, a trailing dot,
// bytes outside hostname rules, IP literals, which we never relay for).
func NormalizeDomain(domain string) (string, error) {
	// Invalid UTF-8 is refused here: idna would read it as U+FFFD and
	// encode that, turning garbage into a well-formed-looking A-label.
	if domain == "" || strings.HasSuffix(domain, ".") || strings.HasPrefix(domain, "[") || !utf8.ValidString(domain) {
		return "", fmt.Errorf("%w: domain %q", ErrBadAddress, domain)
	}
	a, err := idnaProfile.ToASCII(domain)
	if err != nil {
		return "", fmt.Errorf("%w: domain %q: %v", ErrBadAddress, domain, err)
	}
	a = strings.ToLower(a)
	for _, label := range strings.Split(a, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%w: domain %q", ErrBadAddress, domain)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fmt.Errorf("%w: domain %q", ErrBadAddress, domain)
			}
		}
	}
	return a, nil
}

func (a Address) String() string { return a.Local + "@" + a.Domain }

// Key is the form in which two addresses are the same recipient: Postfix
// de-duplicates recipients case-insensitively, and so do we.
func (a Address) Key() string { return strings.ToLower(a.Local) + "@" + a.Domain }
