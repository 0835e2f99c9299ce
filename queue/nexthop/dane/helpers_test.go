package dane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// pki is a root CA, an intermediate it signed and a leaf the
// intermediate signed, ECDSA P-256 throughout.
type pki struct {
	root, inter, leaf *x509.Certificate
	leafKey           *ecdsa.PrivateKey
}

// chain is what the server sends: the leaf, the intermediate, the root.
func (p pki) chain() []*x509.Certificate { return []*x509.Certificate{p.leaf, p.inter, p.root} }

// noRoot is the chain without the root, as most servers send it.
func (p pki) noRoot() []*x509.Certificate { return []*x509.Certificate{p.leaf, p.inter} }

var serial int64

func mkCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// newPKI makes a pki whose leaf has DNS SANs dnsNames (none: only the
// subject CN cn) and, if expired, validity that ended a day ago.
func newPKI(t *testing.T, cn string, dnsNames []string, expired bool) pki {
	t.Helper()
	now := time.Now()
	ca := func(name string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-72 * time.Hour), NotAfter: now.Add(72 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	}
	root, rootKey := mkCert(t, ca("Test Root "+cn), nil, nil)
	inter, interKey := mkCert(t, ca("Test Intermediate "+cn), root, rootKey)
	lt := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dnsNames,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if expired {
		lt.NotBefore, lt.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	}
	leaf, leafKey := mkCert(t, lt, inter, interKey)
	return pki{root, inter, leaf, leafKey}
}

// rec is the TLSA record usage sel mt for c.
func rec(usage, sel, mt uint8, c *x509.Certificate) Record {
	data := c.Raw
	if sel == SelectorSPKI {
		data = c.RawSubjectPublicKeyInfo
	}
	switch mt {
	case MatchSHA256:
		s := sha256.Sum256(data)
		data = s[:]
	case MatchSHA512:
		s := sha512.Sum512(data)
		data = s[:]
	}
	return Record{usage, sel, mt, data}
}

// handshake runs a real TLS handshake over a pipe: the server sends
// chain, the client uses cfg. It returns the SNI the server saw and the
// client's error.
func handshake(t *testing.T, key *ecdsa.PrivateKey, chain []*x509.Certificate, cfg *tls.Config) (string, error) {
	t.Helper()
	var raw [][]byte
	for _, c := range chain {
		raw = append(raw, c.Raw)
	}
	sni := make(chan string, 1)
	srvCfg := &tls.Config{
		Certificates: []tls.Certificate{{Certificate: raw, PrivateKey: key}},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			sni <- h.ServerName
			return nil, nil
		},
	}
	a, b := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer a.Close()
		s := tls.Server(a, srvCfg)
		s.SetDeadline(deadline)
		s.Handshake() // its error is the client's doing
	}()
	c := tls.Client(b, cfg)
	c.SetDeadline(deadline)
	err := c.Handshake()
	b.Close()
	<-done
	select {
	case s := <-sni:
		return s, err
	default:
		return "", err
	}
}
