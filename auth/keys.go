package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Key is a signing key published at Selector._domainkey.Domain.
type Key struct {
	Domain   string
	Selector string
	Signer   crypto.Signer // *rsa.PrivateKey or ed25519.PrivateKey
}

// LoadKey reads a PEM private key: "RSA PRIVATE KEY" (PKCS#1) or
// "PRIVATE KEY" (PKCS#8, RSA or Ed25519). RSA keys must have at least 1024
// bits (2048 recommended).
func LoadKey(domain, selector, path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if domain == "" || selector == "" {
		return nil, errors.New("dkim key: domain and selector are required")
	}
	return &Key{Domain: strings.ToLower(strings.TrimSuffix(domain, ".")), Selector: selector, Signer: s}, nil
}

// ParsePrivateKey parses a PEM private key (see LoadKey).
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, errors.New("no PEM block found")
	}
	var k any
	var err error
	switch blk.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 1024 {
			return nil, fmt.Errorf("RSA key of %d bits is too short", k.N.BitLen())
		}
		return k, nil
	case ed25519.PrivateKey:
		return k, nil
	}
	return nil, fmt.Errorf("unsupported key type %T", k)
}

// Algorithm is the key's a= value: "rsa-sha256" or "ed25519-sha256".
func (k *Key) Algorithm() string {
	if _, ok := k.Signer.(ed25519.PrivateKey); ok {
		return "ed25519-sha256"
	}
	return "rsa-sha256"
}

// DNSRecord is the TXT record to publish at k.DNSName().
func (k *Key) DNSRecord() string {
	switch pub := k.Signer.Public().(type) {
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		der, _ := x509.MarshalPKIXPublicKey(pub)
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	}
}

// DNSName is where the key's record is published.
func (k *Key) DNSName() string { return k.Selector + "._domainkey." + k.Domain }

// sign signs a SHA-256 digest of data (RSA: PKCS#1 v1.5 over the digest;
// Ed25519: over the digest, RFC 8463).
func (k *Key) sign(data []byte) ([]byte, error) {
	sum := sha256.Sum256(data)
	if _, ok := k.Signer.(ed25519.PrivateKey); ok {
		return k.Signer.Sign(rand.Reader, sum[:], crypto.Hash(0))
	}
	return k.Signer.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// pubKey is a key found in DNS.
type pubKey struct {
	rsa     *rsa.PublicKey
	ed      ed25519.PublicKey
	hashes  []string
	revoked bool
}

// parseKeyRecord parses a DKIM key record (RFC 6376 §3.6.1).
func parseKeyRecord(txt string) (*pubKey, error) {
	t, ok := tags(txt)
	if !ok {
		return nil, errors.New("malformed key record")
	}
	if v, ok := t["v"]; ok && v != "DKIM1" {
		return nil, errors.New("unsupported key record version")
	}
	p, ok := t["p"]
	if !ok {
		return nil, errors.New("key record without p=")
	}
	p = stripWS(p)
	if p == "" {
		return &pubKey{revoked: true}, nil
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, errors.New("key record: bad base64")
	}
	pk := &pubKey{}
	if h, ok := t["h"]; ok {
		for _, x := range strings.Split(h, ":") {
			pk.hashes = append(pk.hashes, strings.TrimSpace(x))
		}
	}
	switch k := t["k"]; k {
	case "", "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			if pub, err = x509.ParsePKCS1PublicKey(der); err != nil {
				return nil, errors.New("key record: bad RSA key")
			}
		}
		r, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("key record: not an RSA key")
		}
		if r.N.BitLen() < 1024 {
			return nil, errors.New("key record: RSA key too short")
		}
		pk.rsa = r
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, errors.New("key record: bad Ed25519 key")
		}
		pk.ed = ed25519.PublicKey(der)
	default:
		return nil, fmt.Errorf("key record: unsupported key type %q", k)
	}
	return pk, nil
}

func (pk *pubKey) verify(algo string, data, sig []byte) error {
	sum := sha256.Sum256(data)
	switch algo {
	case "rsa-sha256":
		if pk.rsa == nil {
			return errors.New("key type does not match a=")
		}
		return rsa.VerifyPKCS1v15(pk.rsa, crypto.SHA256, sum[:], sig)
	case "ed25519-sha256":
		if pk.ed == nil {
			return errors.New("key type does not match a=")
		}
		if !ed25519.Verify(pk.ed, sum[:], sig) {
			return errors.New("ed25519 signature did not verify")
		}
		return nil
	}
	return fmt.Errorf("unsupported algorithm %q", algo)
}

// Keys are signing keys, one selector per domain.
type Keys []*Key

// For returns the key for domain: the key of the domain itself, else of
// its nearest parent domain; nil if none.
func (ks Keys) For(domain string) *Key {
	d := strings.ToLower(strings.TrimSuffix(domain, "."))
	for d != "" {
		for _, k := range ks {
			if k.Domain == d {
				return k
			}
		}
		_, rest, ok := strings.Cut(d, ".")
		if !ok {
			break
		}
		d = rest
	}
	return nil
}
