package dane

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"
)

// A failed verification wraps exactly one of these, so that the caller
// can pick its TLS-RPT result type; ErrNotTrusted also wraps the x509
// error (errors.As finds an x509.CertificateInvalidError for an expired
// certificate). The message itself names the host and the records.
var (
	// ErrNoMatch: no usable record matched a certificate the server
	// sent, or it sent none, or there was no usable record.
	ErrNoMatch = errors.New("DANE: no TLSA record matched")
	// ErrNotTrusted: a DANE-TA record matched, but the server's
	// certificate does not chain to that trust anchor.
	ErrNotTrusted = errors.New("DANE: the certificate does not chain to the DANE-TA trust anchor")
	// ErrHostMismatch: a DANE-TA record matched and the chain verified,
	// but the certificate names none of the reference identifiers.
	ErrHostMismatch = errors.New("DANE: the certificate names none of the reference identifiers")
)

// verifyError is a failure whose message is for deferral texts and logs,
// and which unwraps to its kind (one of the Err values) and cause.
type verifyError struct {
	msg       string
	kind, err error
}

func (e *verifyError) Error() string { return e.msg }

func (e *verifyError) Unwrap() []error {
	if e.err == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.err}
}

// Verify checks chain, the certificates the server sent (leaf first),
// against the usable ones of records and the reference identifiers names
// (see the package doc), at the current time. Config runs it in the
// handshake; it is exported for callers that hold a connection's state.
func Verify(chain []*x509.Certificate, records []Record, names []string) error {
	host := ""
	if len(names) > 0 {
		host = names[0]
	}
	return verify(chain, Usable(records), names, host, time.Time{})
}

// verify is Verify with host, the server's name for the messages, and
// now, the time of the DANE-TA checks (zero: the current time). records
// must be usable.
func verify(chain []*x509.Certificate, records []Record, names []string, host string, now time.Time) error {
	host = strings.TrimSuffix(host, ".")
	if host == "" {
		host = "the server"
	}
	if len(records) == 0 {
		return &verifyError{msg: fmt.Sprintf("DANE: no usable TLSA record to verify %s with", host), kind: ErrNoMatch}
	}
	if len(chain) == 0 {
		return &verifyError{msg: fmt.Sprintf("DANE: %s sent no certificate", host), kind: ErrNoMatch}
	}
	leaf := chain[0]
	var best *verifyError // the DANE-TA failure that got furthest
	for _, r := range records {
		switch r.Usage {
		case UsageDANEEE:
			// §3.1.1: the key or certificate is the authentication;
			// its names and dates are the server operator's business.
			if r.matches(leaf) {
				return nil
			}
		case UsageDANETA:
			ok, err := verifyTA(r, chain, names, host, now)
			if ok {
				return nil
			}
			if err != nil && (best == nil || best.kind == ErrNotTrusted && err.kind == ErrHostMismatch) {
				best = err
			}
		}
	}
	if best != nil {
		return best
	}
	return &verifyError{msg: fmt.Sprintf("DANE: no TLSA record matched the certificate of %s (records %s)", host, list(records, false)), kind: ErrNoMatch}
}

// verifyTA checks chain against one DANE-TA record. Not ok with a nil
// error: the record matched no anchor.
func verifyTA(r Record, chain []*x509.Certificate, names []string, host string, now time.Time) (ok bool, _ *verifyError) {
	var notTrusted *verifyError
	for _, ta := range anchors(r, chain) {
		if err := chainsTo(chain, ta, now); err != nil {
			if notTrusted == nil {
				notTrusted = &verifyError{
					msg:  fmt.Sprintf("DANE: TLSA record %s matched an issuer of the certificate of %s, but the certificate does not chain to it: %v", r, host, err),
					kind: ErrNotTrusted, err: err,
				}
			}
			continue
		}
		// The name does not depend on the anchor: one verified chain
		// settles this record.
		if namesMatch(chain[0], names) {
			return true, nil
		}
		msg := fmt.Sprintf("DANE: TLSA record %s matched, but the certificate of %s names none of %s", r, host, nameList(names))
		if nameList(names) == "" {
			msg = fmt.Sprintf("DANE: TLSA record %s matched, but there is no name to check the certificate of %s against", r, host)
		}
		return false, &verifyError{msg: msg, kind: ErrHostMismatch}
	}
	return false, notTrusted
}

// anchors are the trust anchors a DANE-TA record stands for: the
// certificates above the leaf that match it or, when none does and the
// record holds the full data, the anchor the data itself describes.
// Never the leaf: a DANE-TA record names an issuer (RFC 7671 §5.2, as
// OpenSSL checks), and a leaf as its own root would skip path validation.
func anchors(r Record, chain []*x509.Certificate) []*x509.Certificate {
	leaf := chain[0]
	var out []*x509.Certificate
	for _, c := range chain[1:] {
		if r.matches(c) && !bytes.Equal(c.Raw, leaf.Raw) {
			out = append(out, c)
		}
	}
	if len(out) > 0 || r.MatchingType != MatchFull {
		// A digest of an anchor the server did not send cannot be
		// used: RFC 7672 §3.1.2 has servers send it.
		return out
	}
	switch r.Selector {
	case SelectorCert:
		// RFC 7671 §5.2: a full certificate in DNS is usable as it is.
		c, err := x509.ParseCertificate(r.Data)
		if err == nil && !bytes.Equal(c.Raw, leaf.Raw) {
			out = append(out, c)
		}
	case SelectorSPKI:
		// A bare public key: whichever certificate it signed is the one
		// below the anchor, and the anchor's name is that issuer name.
		if bytes.Equal(r.Data, leaf.RawSubjectPublicKeyInfo) {
			return nil
		}
		pub, err := x509.ParsePKIXPublicKey(r.Data)
		if err != nil {
			return nil
		}
		signer := &x509.Certificate{PublicKey: pub}
		seen := map[string]bool{}
		for _, c := range chain {
			if seen[string(c.RawIssuer)] || signer.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) != nil {
				continue
			}
			seen[string(c.RawIssuer)] = true
			if ta, err := keyAnchor(pub, c.RawIssuer); err == nil {
				out = append(out, ta)
			}
		}
	}
	return out
}

// anchorSigner signs the stand-in certificates of bare-key anchors. Path
// validation never checks a root's own signature, so any key will do.
var anchorSigner = sync.OnceValues(func() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
})

// keyAnchor is a stand-in root for the bare public key pub named
// subject, so that x509 path validation can use the key: a CA with no
// constraints and no expiry, as a trust anchor given as a key has none.
func keyAnchor(pub any, subject []byte) (*x509.Certificate, error) {
	key, err := anchorSigner()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		RawSubject:            subject,
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// chainsTo validates the path from the leaf to the trust anchor ta, its
// only root, with the rest of the chain as intermediates. Any extended
// key usage will do: RFC 7672 asks for none, and SMTP servers' private
// CAs often set none or an odd one.
func chainsTo(chain []*x509.Certificate, ta *x509.Certificate, now time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ta)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	return err
}

// namesMatch reports whether leaf names one of names (RFC 7672 §3.2.3):
// its DNS SANs, wildcards as RFC 6125 has them (x509.VerifyHostname), or
// its subject CN when it has no DNS SAN (RFC 6125 §6.4.4; OpenSSL, hence
// Postfix, accepts those too, Go no longer does).
func namesMatch(leaf *x509.Certificate, names []string) bool {
	var cn *x509.Certificate
	if len(leaf.DNSNames) == 0 && leaf.Subject.CommonName != "" {
		cn = &x509.Certificate{DNSNames: []string{leaf.Subject.CommonName}}
	}
	for _, n := range names {
		n = strings.TrimSuffix(n, ".")
		if n == "" {
			continue
		}
		if leaf.VerifyHostname(n) == nil || cn != nil && cn.VerifyHostname(n) == nil {
			return true
		}
	}
	return false
}

// nameList is names for a message.
func nameList(names []string) string {
	var out []string
	for _, n := range names {
		if n = strings.TrimSuffix(n, "."); n != "" {
			out = append(out, n)
		}
	}
	return strings.Join(out, ", ")
}
