package tlsrpt

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
)

// Errors of ParseTXT. Every one of them means the same thing to a
// sender: the domain does not take TLS reports (RFC 8460 §3).
var (
	ErrNoRecord        = errors.New("tlsrpt: no v=TLSRPTv1 record")
	ErrMultipleRecords = errors.New("tlsrpt: more than one v=TLSRPTv1 record")
	ErrSyntax          = errors.New("tlsrpt: invalid record")
	ErrNoSupportedRUA  = errors.New("tlsrpt: no mailto: or https: rua")
)

// Record is a parsed _smtp._tls TXT record.
type Record struct {
	// RUA lists the destinations we can deliver to, in published order;
	// URIs of other schemes are left out, as §3 says to ignore them.
	RUA []URI
}

// URI is one rua destination.
type URI struct {
	Scheme string // "mailto" or "https"
	// Address is the mailbox of a mailto: URI (percent-decoded,
	// without its ?hfields); empty for https.
	Address string
	// URL is the URI as published. It identifies the destination in the
	// recorder's "already delivered" bookkeeping.
	URL string
}

// TXTName is the DNS name whose TXT records hold domain's TLSRPT policy.
func TXTName(domain string) string {
	return "_smtp._tls." + strings.TrimSuffix(domain, ".")
}

const version = "v=TLSRPTv1"

// ParseTXT picks the TLSRPT record out of the TXT records at
// _smtp._tls.DOMAIN (each element one record, its strings already
// concatenated, as net.LookupTXT returns them) and parses it.
// Records not starting with v=TLSRPTv1 are ignored; several such
// records, as §3 says, mean the domain has none.
func ParseTXT(records []string) (*Record, error) {
	var found []string
	for _, r := range records {
		if rest, ok := strings.CutPrefix(r, version); ok {
			if t := strings.TrimLeft(rest, " \t"); strings.HasPrefix(t, ";") {
				found = append(found, t[1:])
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, ErrNoRecord
	case 1:
	default:
		return nil, ErrMultipleRecords
	}
	return parseFields(found[0])
}

// parseFields parses what follows "v=TLSRPTv1;": 1*(field-delim field)
// [field-delim] in the ABNF of §3, the first delimiter already consumed.
func parseFields(s string) (*Record, error) {
	fields := strings.Split(s, ";")
	var rec *Record
	for i, f := range fields {
		f = strings.Trim(f, " \t")
		if f == "" {
			// Only a trailing delimiter may leave an empty field, and
			// at least one field must precede it.
			if i == len(fields)-1 && i > 0 {
				continue
			}
			return nil, fmt.Errorf("%w: empty field", ErrSyntax)
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("%w: field %q has no '='", ErrSyntax, f)
		}
		if name == "rua" {
			if rec != nil {
				return nil, fmt.Errorf("%w: duplicate rua", ErrSyntax)
			}
			r, err := parseRUA(value)
			if err != nil {
				return nil, err
			}
			rec = r
			continue
		}
		if !validExtName(name) || !validExtValue(value) {
			return nil, fmt.Errorf("%w: bad extension %q", ErrSyntax, f)
		}
	}
	if rec == nil {
		return nil, fmt.Errorf("%w: no rua", ErrSyntax)
	}
	if len(rec.RUA) == 0 {
		return nil, ErrNoSupportedRUA
	}
	return rec, nil
}

// parseRUA parses tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri). A comma inside
// a URI must be percent-encoded, so splitting on ',' is exact.
func parseRUA(v string) (*Record, error) {
	rec := &Record{}
	for _, raw := range strings.Split(v, ",") {
		raw = strings.Trim(raw, " \t")
		if raw == "" || strings.ContainsAny(raw, " \t") {
			return nil, fmt.Errorf("%w: bad rua URI %q", ErrSyntax, raw)
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "" {
			return nil, fmt.Errorf("%w: bad rua URI %q", ErrSyntax, raw)
		}
		switch strings.ToLower(u.Scheme) {
		case "mailto":
			addr, err := mailtoAddress(u)
			if err != nil {
				return nil, fmt.Errorf("%w: rua %q: %v", ErrSyntax, raw, err)
			}
			rec.RUA = append(rec.RUA, URI{Scheme: "mailto", Address: addr, URL: raw})
		case "https":
			if u.Host == "" || u.User != nil {
				return nil, fmt.Errorf("%w: bad https rua %q", ErrSyntax, raw)
			}
			rec.RUA = append(rec.RUA, URI{Scheme: "https", URL: raw})
		default:
			// §3: URIs the reporter does not support are ignored.
		}
	}
	return rec, nil
}

// mailtoAddress extracts the single addr-spec of a mailto: URI
// (RFC 6068). The address later goes into a To: header and an SMTP
// envelope, so it must parse as a bare address.
func mailtoAddress(u *url.URL) (string, error) {
	if u.Opaque == "" {
		return "", errors.New("no address")
	}
	s, err := url.PathUnescape(u.Opaque)
	if err != nil {
		return "", err
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", err
	}
	if a.Name != "" || a.Address != s || strings.ContainsAny(s, "\r\n") {
		return "", errors.New("not a bare address")
	}
	return s, nil
}

// validExtName: (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".").
func validExtName(s string) bool {
	if s == "" || len(s) > 32 || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// validExtValue: 1*(%x21-3A / %x3C / %x3E-7E).
func validExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ';' || c == '=' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
