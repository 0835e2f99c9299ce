package mtasts

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNoRecord means the domain publishes no MTA-STS TXT record. A
	// TXT lookup function given to the Cache wraps it when the name does
	// not exist or has no TXT records (NXDOMAIN, NODATA); ParseTXT
	// returns it when no record starts with v=STSv1.
	ErrNoRecord = errors.New("no MTA-STS TXT record")
	// ErrInvalidTXT is wrapped by ParseTXT when the v=STSv1 records are
	// unusable: more than one, or one that does not parse.
	ErrInvalidTXT = errors.New("invalid MTA-STS TXT record")
)

// ParseTXT picks the MTA-STS record out of the TXT records of
// _mta-sts.DOMAIN (one string per record, its character-strings joined)
// and returns its id, as RFC 8461 §3.1 says: records other than v=STSv1
// are discarded; none left is ErrNoRecord; more than one, or one that
// does not parse, wraps ErrInvalidTXT. Either way the sender must behave
// as if there were no policy to fetch (a cached one stays in force).
func ParseTXT(records []string) (id string, err error) {
	var rec string
	n := 0
	for _, r := range records {
		if isSTSv1(r) {
			rec = r
			n++
		}
	}
	switch {
	case n == 0:
		return "", ErrNoRecord
	case n > 1:
		return "", fmt.Errorf("%w: %d v=STSv1 records", ErrInvalidTXT, n)
	}
	fields := strings.Split(rec[len("v=STSv1"):], ";")
	// fields[0] is what stood between v=STSv1 and the first ";": only
	// blanks, isSTSv1 made sure.
	for _, f := range fields[1:] {
		f = strings.Trim(f, " \t")
		if f == "" {
			continue // the optional trailing ";" (and, leniently, ";;")
		}
		name, value, ok := strings.Cut(f, "=")
		if !ok || !validFieldName(name) {
			return "", fmt.Errorf("%w: bad field %q", ErrInvalidTXT, truncate(f))
		}
		if name == "id" {
			if id != "" {
				return "", fmt.Errorf("%w: id repeated", ErrInvalidTXT)
			}
			if !validID(value) {
				return "", fmt.Errorf("%w: id %q is not 1 to 32 letters and digits", ErrInvalidTXT, truncate(value))
			}
			id = value
		} else if !validExtValue(value) {
			return "", fmt.Errorf("%w: bad value in %q", ErrInvalidTXT, truncate(f))
		}
	}
	if id == "" {
		return "", fmt.Errorf("%w: no id", ErrInvalidTXT)
	}
	return id, nil
}

// isSTSv1 reports whether a TXT record claims to be MTA-STS: "v=STSv1"
// followed by the end or, after blanks, a ";". "v=STSv10;..." is not.
func isSTSv1(r string) bool {
	rest, ok := strings.CutPrefix(r, "v=STSv1")
	if !ok {
		return false
	}
	rest = strings.TrimLeft(rest, " \t")
	return rest == "" || rest[0] == ';'
}

// validID is sts-id's value: 1*32(ALPHA / DIGIT).
func validID(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// validExtValue is sts-ext-value: 1*(%x21-3A / %x3C / %x3E-7E), visible
// characters but ";" and "=".
func validExtValue(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e || c == ';' || c == '=' {
			return false
		}
	}
	return true
}
