// Package dane verifies an SMTP server's certificate against its TLSA
// records as RFC 7672 (SMTP security via opportunistic DANE TLS) says,
// with RFC 6698/7671 matching. The caller does the DNS (and decides that
// the records are DNSSEC-secure) and the SMTP; this package says which
// records are usable and builds the handshake's verification.
//
// Decisions (RFC 7672):
//   - only DANE-TA(2) and DANE-EE(3) are usable for SMTP (§3.1.3): PKIX
//     usages, unknown selectors or matching types, and digests of the
//     wrong length are not;
//   - secure TLSA records of which none is usable still make TLS mandatory,
//     without authentication (§2.2, Postfix "encrypt"): that is the
//     caller's choice of policy, Usable returning none tells it;
//   - DANE-EE matches the leaf certificate only, with no name or expiry
//     check (§3.1.1);
//   - DANE-TA matches a certificate the server sent (the chain must hold
//     the trust anchor: §3.1.2 requires servers to include it), and the
//     leaf must chain to it and carry one of the reference names, the MX
//     host name (after CNAME expansion) or the next-hop domain (§3.2.2);
//     a trust anchor published as a bare public key is not supported;
//   - SNI is the MX host name (§8.1).
package dane

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
)

// Record is one TLSA record.
type Record struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// The usages, selectors and matching types SMTP DANE uses.
const (
	UsageDANETA = 2
	UsageDANEEE = 3

	SelectorCert = 0
	SelectorSPKI = 1

	MatchFull   = 0
	MatchSHA256 = 1
	MatchSHA512 = 2
)

func (r Record) String() string {
	return fmt.Sprintf("%d %d %d", r.Usage, r.Selector, r.MatchingType)
}

// Usable returns the records usable for SMTP (RFC 7672 §3.1).
func Usable(records []Record) []Record {
	var out []Record
	for _, r := range records {
		if r.Usage != UsageDANETA && r.Usage != UsageDANEEE {
			continue
		}
		if r.Selector != SelectorCert && r.Selector != SelectorSPKI {
			continue
		}
		switch r.MatchingType {
		case MatchFull:
			if len(r.Data) == 0 {
				continue
			}
		case MatchSHA256:
			if len(r.Data) != sha256.Size {
				continue
			}
		case MatchSHA512:
			if len(r.Data) != sha512.Size {
				continue
			}
		default:
			continue
		}
		out = append(out, r)
	}
	return out
}

// matches reports whether cert matches r's selector and matching type.
func (r Record) matches(cert *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case SelectorCert:
		data = cert.Raw
	case SelectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case MatchFull:
		return bytes.Equal(data, r.Data)
	case MatchSHA256:
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], r.Data)
	case MatchSHA512:
		sum := sha512.Sum512(data)
		return bytes.Equal(sum[:], r.Data)
	}
	return false
}

// ErrNoMatch: no usable TLSA record matched the server's certificates.
var ErrNoMatch = errors.New("DANE: no TLSA record matched")

// Verify checks a server's chain (leaf first) against the usable records
// and the reference names.
func Verify(chain []*x509.Certificate, records []Record, names []string) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: the server sent no certificate", ErrNoMatch)
	}
	leaf := chain[0]
	var taErrs []string
	for _, r := range records {
		switch r.Usage {
		case UsageDANEEE:
			if r.matches(leaf) {
				return nil
			}
		case UsageDANETA:
			for _, ta := range chain {
				if !r.matches(ta) {
					continue
				}
				if err := chainsTo(leaf, chain, ta, names); err != nil {
					taErrs = append(taErrs, err.Error())
					continue
				}
				return nil
			}
		}
	}
	if len(taErrs) > 0 {
		return fmt.Errorf("%w: a DANE-TA record matched, but %s", ErrNoMatch, strings.Join(taErrs, "; "))
	}
	var recs []string
	for _, r := range records {
		recs = append(recs, r.String())
	}
	return fmt.Errorf("%w the certificate of %s (records %s)", ErrNoMatch, strings.Join(names, "/"), strings.Join(recs, ", "))
}

// chainsTo verifies leaf up to the trust anchor ta (the only root), with
// the rest of the chain as intermediates, and its name against names.
func chainsTo(leaf *x509.Certificate, chain []*x509.Certificate, ta *x509.Certificate, names []string) error {
	roots := x509.NewCertPool()
	roots.AddCert(ta)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if leaf != ta {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("the chain does not verify to it: %v", err)
		}
	}
	for _, n := range names {
		if n != "" && leaf.VerifyHostname(n) == nil {
			return nil
		}
	}
	return fmt.Errorf("the certificate names none of %s", strings.Join(names, ", "))
}

// Config is base for a handshake verified by DANE: the usual verification
// off, the records' instead (VerifyConnection), SNI the first name.
func Config(base *tls.Config, records []Record, names []string) *tls.Config {
	cfg := &tls.Config{}
	if base != nil {
		cfg = base.Clone()
	}
	if cfg.ServerName == "" && len(names) > 0 {
		cfg.ServerName = names[0]
	}
	cfg.InsecureSkipVerify = true
	recs := append([]Record(nil), records...)
	ns := append([]string(nil), names...)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		return Verify(cs.PeerCertificates, recs, ns)
	}
	return cfg
}

// Describe is the records for logs and lookup -v.
func Describe(records []Record) string {
	var s []string
	for _, r := range records {
		s = append(s, r.String())
	}
	return fmt.Sprintf("DANE: %d usable TLSA records (%s)", len(records), strings.Join(s, ", "))
}
