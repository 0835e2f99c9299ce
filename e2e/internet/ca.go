//go:build e2e

package internet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// CertKind says what certificate a server presents.
type CertKind int

const (
	// CertValid: issued by the suite CA for the server's name, valid now.
	CertValid CertKind = iota
	// CertSelfSigned: right name and dates, but self-signed (no CA).
	CertSelfSigned
	// CertWrongName: issued by the suite CA, valid now, for
	// "wrong-name.nic.test" only.
	CertWrongName
	// CertExpired: issued by the suite CA for the right name, expired a
	// day ago.
	CertExpired
)

func (k CertKind) String() string {
	switch k {
	case CertValid:
		return "valid"
	case CertSelfSigned:
		return "self-signed"
	case CertWrongName:
		return "wrong-name"
	case CertExpired:
		return "expired"
	}
	return "unknown"
}

// WrongName is the only name of a CertWrongName certificate.
const WrongName = "wrong-name.nic.test"

// CA is the suite's certificate authority (ECDSA P-256).
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // the CA certificate
	File string // PEM file of the CA certificate
	Pool *x509.CertPool

	dir    string
	mu     sync.Mutex
	serial int64
}

func newCA(t testing.TB, dir string) *CA {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mfwnet test CA", Organization: []string{"mailfwd e2e"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Cert: cert, Key: key, dir: dir, serial: 1, Pool: x509.NewCertPool()}
	ca.Pool.AddCert(cert)
	ca.PEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	ca.File = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca.File, ca.PEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return ca
}

// Cert is an issued certificate with its key, on disk.
type Cert struct {
	Leaf     *x509.Certificate
	Key      *ecdsa.PrivateKey
	CertFile string // PEM: leaf only (the CA is the trust anchor, never sent)
	KeyFile  string // PEM: PKCS#8 private key (mode 0600)
	Kind     CertKind
}

// SPKISHA256 is the hex SHA-256 of the leaf's SubjectPublicKeyInfo: the
// data of a "3 1 1" (DANE-EE SPKI SHA2-256) TLSA record.
func (c *Cert) SPKISHA256() string {
	s := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(s[:])
}

// Issue makes a server certificate of kind for names (DNS SANs; the first
// is the CN) and writes it under the CA's directory as base.crt/base.key.
func (ca *CA) Issue(t testing.TB, base string, kind CertKind, names ...string) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	now := time.Now()
	if kind == CertWrongName {
		names = []string{WrongName}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	parent, signer := ca.Cert, ca.Key
	switch kind {
	case CertExpired:
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-10*24*time.Hour), now.Add(-24*time.Hour)
	case CertSelfSigned:
		tmpl.Subject.Organization = []string{"self-signed"}
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{Leaf: leaf, Key: key, Kind: kind,
		CertFile: filepath.Join(ca.dir, base+".crt"), KeyFile: filepath.Join(ca.dir, base+".key")}
	if err := os.WriteFile(c.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}
