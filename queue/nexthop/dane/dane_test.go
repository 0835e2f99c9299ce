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
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

type pki struct {
	root, inter, leaf *x509.Certificate
	leafKey           *ecdsa.PrivateKey
}

func mkCert(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
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

// newPKI: root → intermediate → leaf for names, valid or expired.
func newPKI(t *testing.T, names []string, expired bool) pki {
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	root, rootKey := mkCert(t, ca, nil, nil)
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "inter"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	inter, interKey := mkCert(t, it, root, rootKey)
	lt := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if expired {
		lt.NotBefore, lt.NotAfter = now.Add(-48*time.Hour), now.Add(-24*time.Hour)
	}
	leaf, leafKey := mkCert(t, lt, inter, interKey)
	return pki{root, inter, leaf, leafKey}
}

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

// handshake runs a real TLS handshake: the server sends chain, the client
// uses Config(records, names). It returns the SNI the server saw and the
// client's error.
func handshake(t *testing.T, p pki, chain []*x509.Certificate, records []Record, names []string) (string, error) {
	t.Helper()
	var raw [][]byte
	for _, c := range chain {
		raw = append(raw, c.Raw)
	}
	sni := make(chan string, 1)
	srvCfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: raw, PrivateKey: p.leafKey}},
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni <- h.ServerName; return nil, nil }}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		s := tls.Server(a, srvCfg)
		s.Handshake()
		s.Close()
	}()
	c := tls.Client(b, Config(&tls.Config{MinVersion: tls.VersionTLS12}, records, names))
	c.SetDeadline(time.Now().Add(5 * time.Second))
	err := c.Handshake()
	select {
	case s := <-sni:
		return s, err
	case <-time.After(time.Second):
		return "", err
	}
}

func TestVerify(t *testing.T) {
	names := []string{"mx1.example.net", "example.net"}
	p := newPKI(t, []string{"mx1.example.net"}, false)
	old := newPKI(t, []string{"mx1.example.net"}, true)
	wild := newPKI(t, []string{"*.example.net"}, false)
	other := newPKI(t, []string{"mx.elsewhere.test"}, false)
	full := []*x509.Certificate{p.leaf, p.inter, p.root}
	tests := []struct {
		name    string
		p       pki
		chain   []*x509.Certificate
		records []Record
		ok      bool
	}{
		{"DANE-EE 3 1 1", p, full, []Record{rec(3, 1, 1, p.leaf)}, true},
		{"DANE-EE 3 0 1", p, full, []Record{rec(3, 0, 1, p.leaf)}, true},
		{"DANE-EE 3 1 2", p, full, []Record{rec(3, 1, 2, p.leaf)}, true},
		{"DANE-EE 3 1 0", p, full, []Record{rec(3, 1, 0, p.leaf)}, true},
		{"DANE-EE mismatch", p, full, []Record{rec(3, 1, 1, other.leaf)}, false},
		{"DANE-EE ignores expiry", old, []*x509.Certificate{old.leaf, old.inter, old.root}, []Record{rec(3, 1, 1, old.leaf)}, true},
		{"DANE-TA on the root", p, full, []Record{rec(2, 0, 1, p.root)}, true},
		{"DANE-TA on the intermediate", p, full, []Record{rec(2, 1, 1, p.inter)}, true},
		{"DANE-TA checks expiry", old, []*x509.Certificate{old.leaf, old.inter, old.root}, []Record{rec(2, 0, 1, old.root)}, false},
		{"DANE-TA, leaf names neither name", other, []*x509.Certificate{other.leaf, other.inter, other.root}, []Record{rec(2, 0, 1, other.root)}, false},
		{"DANE-TA, wildcard leaf", wild, []*x509.Certificate{wild.leaf, wild.inter, wild.root}, []Record{rec(2, 0, 1, wild.root)}, true},
		{"DANE-TA, anchor not in the chain", p, []*x509.Certificate{p.leaf, p.inter}, []Record{rec(2, 0, 1, p.root)}, false},
		{"one usable matching, one not", p, full, []Record{rec(3, 1, 1, other.leaf), rec(3, 1, 1, p.leaf)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sni, err := handshake(t, tt.p, tt.chain, Usable(tt.records), names)
			if (err == nil) != tt.ok {
				t.Errorf("handshake: %v, want ok=%v", err, tt.ok)
			}
			if sni != "mx1.example.net" {
				t.Errorf("SNI %q, want the MX host", sni)
			}
			if err := Verify(tt.chain, Usable(tt.records), names); (err == nil) != tt.ok || err != nil && !errors.Is(err, ErrNoMatch) {
				t.Errorf("Verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestUsable(t *testing.T) {
	p := newPKI(t, []string{"mx.example.net"}, false)
	good := rec(3, 1, 1, p.leaf)
	in := []Record{
		rec(0, 0, 1, p.root), rec(1, 1, 1, p.leaf), // PKIX usages: not for SMTP
		{3, 1, 1, good.Data[:31]}, {3, 1, 2, good.Data}, // digests of the wrong length
		{3, 2, 1, good.Data}, {3, 1, 3, good.Data}, // unknown selector, matching type
		good, rec(2, 0, 2, p.root),
	}
	got := Usable(in)
	if len(got) != 2 || got[0].Usage != 3 || got[1].Usage != 2 {
		t.Errorf("Usable = %v, want the 3 1 1 and 2 0 2 records", got)
	}
	if d := Describe(got); d != "DANE: 2 usable TLSA records (3 1 1, 2 0 2)" {
		t.Errorf("Describe = %q", d)
	}
}
