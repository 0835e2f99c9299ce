package mtasts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testPKI is a CA of the test's own, to give the policy host a
// certificate for whatever name a test needs.
type testPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mtasts test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testPKI{cert: cert, key: key, pool: pool}
}

// leaf is a server certificate whose only SANs are names.
func (p *testPKI) leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// policyServer serves h over TLS with cert and returns a client that
// trusts pki and reaches the server whatever name it dials, as the e2e
// suite's would.
func policyServer(t testing.TB, pki *testPKI, cert tls.Certificate, h http.Handler) *http.Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pki.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

const goodPolicy = "version: STSv1\r\nmode: enforce\r\nmx: *.example.com\r\nmax_age: 86400\r\n"

func servePolicy(status int, contentType, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/mta-sts.txt" || r.Host != "mta-sts.example.com" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		w.Write([]byte(body))
	}
}

func TestFetch(t *testing.T) {
	pki := newPKI(t)
	good := pki.leaf(t, "mta-sts.example.com")
	var redirected atomic.Bool
	redirect := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			redirected.Store(true)
			servePolicy(200, "text/plain", goodPolicy)(w, r)
			return
		}
		http.Redirect(w, r, "https://mta-sts.example.com/elsewhere", http.StatusMovedPermanently)
	})
	tests := []struct {
		name    string
		cert    tls.Certificate
		handler http.Handler
		client  func(*http.Client) // adjusts the client
		kind    error              // nil: success
	}{
		{"ok", good, servePolicy(200, "text/plain; charset=utf-8", goodPolicy), nil, nil},
		{"ok, content type case", good, servePolicy(200, "Text/Plain", goodPolicy), nil, nil},
		{"redirect refused", good, redirect, nil, ErrFetch},
		{"wrong content type", good, servePolicy(200, "text/html", goodPolicy), nil, ErrFetch},
		{"bad content type", good, servePolicy(200, "text/plain; ;", goodPolicy), nil, ErrFetch},
		{"404", good, servePolicy(404, "text/plain", "not here\n"), nil, ErrFetch},
		{"500", good, servePolicy(500, "text/plain", goodPolicy), nil, ErrFetch},
		{"oversized body", good, servePolicy(200, "text/plain", goodPolicy+strings.Repeat("x: y\r\n", MaxPolicySize/6+1)), nil, ErrInvalidPolicy},
		{"invalid policy", good, servePolicy(200, "text/plain", "version: STSv1\r\nmode: enforce\r\n"), nil, ErrInvalidPolicy},
		{"certificate for another name", pki.leaf(t, "mail.example.com", "example.com"), servePolicy(200, "text/plain", goodPolicy), nil, ErrWebPKI},
		{"certificate from another CA", newPKI(t).leaf(t, "mta-sts.example.com"), servePolicy(200, "text/plain", goodPolicy), nil, ErrWebPKI},
		{"verification skipped by the transport", pki.leaf(t, "mail.example.com"), servePolicy(200, "text/plain", goodPolicy),
			func(c *http.Client) { c.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true }, ErrWebPKI},
		{"transport verifying another ServerName", pki.leaf(t, "mail.example.com"), servePolicy(200, "text/plain", goodPolicy),
			func(c *http.Client) { c.Transport.(*http.Transport).TLSClientConfig.ServerName = "mail.example.com" }, ErrWebPKI},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			redirected.Store(false)
			client := policyServer(t, pki, tt.cert, tt.handler)
			if tt.client != nil {
				tt.client(client)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			p, err := Fetch(ctx, client, "example.com")
			if redirected.Load() {
				t.Error("redirect followed")
			}
			if client.CheckRedirect != nil {
				t.Error("caller's client modified")
			}
			if tt.kind == nil {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if p.Mode != ModeEnforce || !p.MatchMX("mx1.example.com") {
					t.Fatalf("Fetch = %+v", p)
				}
				return
			}
			var fe *FetchError
			if !errors.As(err, &fe) || !errors.Is(err, tt.kind) || p != nil {
				t.Fatalf("Fetch = %v, %v; want a FetchError of kind %v", p, err, tt.kind)
			}
			t.Logf("%s: %v", fe.ResultType(), err)
		})
	}
}

func TestFetchTimeout(t *testing.T) {
	pki := newPKI(t)
	client := policyServer(t, pki, pki.leaf(t, "mta-sts.example.com"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Fetch(ctx, client, "example.com")
	if !errors.Is(err, ErrFetch) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Fetch = %v, want a deadline exceeded ErrFetch", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Fetch took %v", d)
	}
}

func TestFetchBadDomain(t *testing.T) {
	for _, d := range []string{"", "example.com/x", "exa mple.com", "[127.0.0.1]", "example.com:8443"} {
		if _, err := Fetch(context.Background(), nil, d); !errors.Is(err, ErrFetch) {
			t.Errorf("Fetch(%q) = %v, want ErrFetch", d, err)
		}
	}
}
