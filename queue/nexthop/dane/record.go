package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"fmt"
)

// Record is one TLSA record: the caller converts its DNS records to it.
type Record struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// The TLSA parameters (RFC 6698 §2.1, names from RFC 7218).
const (
	UsagePKIXTA = 0 // not usable for SMTP
	UsagePKIXEE = 1 // not usable for SMTP
	UsageDANETA = 2
	UsageDANEEE = 3

	SelectorCert = 0 // the full certificate, DER
	SelectorSPKI = 1 // its SubjectPublicKeyInfo, DER

	MatchFull   = 0
	MatchSHA256 = 1
	MatchSHA512 = 2
)

// String is the record's parameters, "3 1 1", as logs show them.
func (r Record) String() string {
	return fmt.Sprintf("%d %d %d", r.Usage, r.Selector, r.MatchingType)
}

// Usable returns the records usable for SMTP (RFC 7672 §3.1), in order.
func Usable(records []Record) []Record {
	var out []Record
	for _, r := range records {
		if unusable(r) == "" {
			out = append(out, r)
		}
	}
	return out
}

// unusable says why r cannot be used for SMTP, "" if it can.
func unusable(r Record) string {
	switch r.Usage {
	case UsageDANETA, UsageDANEEE:
	case UsagePKIXTA, UsagePKIXEE:
		// §3.1.3: SMTP has no agreed WebPKI trust store to apply them.
		return "PKIX usage"
	default:
		return "unknown usage"
	}
	if r.Selector != SelectorCert && r.Selector != SelectorSPKI {
		return "unknown selector"
	}
	want := 0
	switch r.MatchingType {
	case MatchFull:
		if len(r.Data) == 0 {
			return "no data"
		}
		return ""
	case MatchSHA256:
		want = sha256.Size
	case MatchSHA512:
		want = sha512.Size
	default:
		return "unknown matching type"
	}
	if len(r.Data) != want {
		// A truncated or mistyped digest can never match: treating it as
		// usable would fail delivery instead of degrading to encryption.
		return fmt.Sprintf("%d-byte digest, want %d", len(r.Data), want)
	}
	return ""
}

// selected is the part of cert that r's selector picks.
func (r Record) selected(cert *x509.Certificate) []byte {
	if r.Selector == SelectorSPKI {
		return cert.RawSubjectPublicKeyInfo
	}
	return cert.Raw
}

// matches reports whether cert matches r's selector, matching type and
// data; records not usable never match.
func (r Record) matches(cert *x509.Certificate) bool {
	if unusable(r) != "" {
		return false
	}
	data := r.selected(cert)
	switch r.MatchingType {
	case MatchSHA256:
		sum := sha256.Sum256(data)
		data = sum[:]
	case MatchSHA512:
		sum := sha512.Sum512(data)
		data = sum[:]
	}
	return bytes.Equal(data, r.Data)
}
