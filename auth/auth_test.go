package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
)

// fakeDNS serves TXT records from a map; names in fail give a temporary
// error, names in hang never answer (until the context ends, or never
// when ignoreCtx).
type fakeDNS struct {
	mu        sync.Mutex
	txt       map[string][]string
	fail      map[string]bool
	hang      map[string]bool
	ignoreCtx bool
	queries   []string
}

func newDNS() *fakeDNS {
	return &fakeDNS{txt: map[string][]string{}, fail: map[string]bool{}, hang: map[string]bool{}}
}

func (d *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	d.mu.Lock()
	d.queries = append(d.queries, name)
	t, ok := d.txt[name]
	fail, hang := d.fail[name] || d.fail["*"], d.hang[name] || d.hang["*"]
	d.mu.Unlock()
	if hang {
		if d.ignoreCtx {
			select {}
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if fail {
		return nil, &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
	}
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return t, nil
}
func (d *fakeDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (d *fakeDNS) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}
func (d *fakeDNS) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
}

func (d *fakeDNS) publish(k *Key) { d.txt[k.DNSName()] = []string{k.DNSRecord()} }

var (
	keyOnce sync.Once
	rsaA    *rsa.PrivateKey // the original sender
	rsaB    *rsa.PrivateKey // the relay
	edA     ed25519.PrivateKey
)

func keys(t testing.TB) {
	t.Helper()
	keyOnce.Do(func() {
		rsaA, _ = rsa.GenerateKey(rand.Reader, 2048)
		rsaB, _ = rsa.GenerateKey(rand.Reader, 2048)
		_, edA, _ = ed25519.GenerateKey(rand.Reader)
	})
}

const origMsg = "From: Alice <alice@example.org>\r\n" +
	"To: bob@company.com\r\n" +
	"Subject: hello  there\r\n" +
	"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n" +
	"Message-ID: <1@example.org>\r\n" +
	"\r\n" +
	"Hi Bob,\r\n" +
	"this is  a test.  \r\n" +
	"\r\n\r\n"

// signed signs msg as example.org would.
func signed(t *testing.T, msg string, signer crypto.Signer, sel string) string {
	t.Helper()
	var b bytes.Buffer
	err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: "example.org", Selector: sel, Signer: signer,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationSimple,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"}})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

type env struct {
	dns         *fakeDNS
	a           *Authenticator
	orig, relay *Key
	origEd      *Key
	client      net.IP
}

func setup(t *testing.T, mod func(*Config)) *env {
	keys(t)
	e := &env{dns: newDNS(), client: net.ParseIP("192.0.2.10")}
	e.orig = &Key{Domain: "example.org", Selector: "s1", Signer: rsaA}
	e.origEd = &Key{Domain: "example.org", Selector: "ed", Signer: edA}
	e.relay = &Key{Domain: "relay.example.net", Selector: "fwd", Signer: rsaB}
	e.dns.publish(e.orig)
	e.dns.publish(e.origEd)
	e.dns.publish(e.relay)
	e.dns.txt["example.org"] = []string{"v=spf1 ip4:192.0.2.10 -all"}
	e.dns.txt["_dmarc.example.org"] = []string{"v=DMARC1; p=reject"}
	cfg := Config{AuthServID: "mx.relay.example.net", Resolver: e.dns, LookupTimeout: time.Second,
		Timeout: 3 * time.Second, ARCKey: e.relay, DKIMKey: e.relay,
		Now: func() time.Time { return time.Unix(1700000000, 0) }}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e
}

func (e *env) check(in Inbound, msg string, chunk int) *Verdict {
	c := e.a.Start(in)
	b := []byte(msg)
	if chunk <= 0 {
		chunk = len(b) + 1
	}
	for len(b) > 0 {
		n := min(chunk, len(b))
		c.Write(b[:n])
		b = b[n:]
	}
	return c.Finish()
}

func (e *env) in(from string) Inbound {
	return Inbound{ClientIP: e.client, Helo: "mail.example.org", MailFrom: from, Forward: true}
}

// parseAR parses our Authentication-Results back with go-msgauth.
func parseAR(t *testing.T, header string) (string, map[string]authres.Result) {
	t.Helper()
	var line string
	for _, f := range parseHeader([]byte(header)) {
		if f.lower() == "authentication-results" {
			line = f.value()
		}
	}
	if line == "" {
		t.Fatalf("no Authentication-Results in %q", header)
	}
	id, res, err := authres.Parse(line)
	if err != nil {
		t.Fatalf("authres.Parse(%q): %v", line, err)
	}
	m := map[string]authres.Result{}
	for _, r := range res {
		switch r := r.(type) {
		case *authres.SPFResult:
			m["spf"] = r
		case *authres.DKIMResult:
			if _, dup := m["dkim"]; !dup {
				m["dkim"] = r
			}
		case *authres.DMARCResult:
			m["dmarc"] = r
		case *authres.ARCResult:
			m["arc"] = r
		}
	}
	return id, m
}

func value(r authres.Result) string {
	switch r := r.(type) {
	case *authres.SPFResult:
		return string(r.Value)
	case *authres.DKIMResult:
		return string(r.Value)
	case *authres.DMARCResult:
		return string(r.Value)
	case *authres.ARCResult:
		return string(r.Value)
	case nil:
		return "<missing>"
	}
	return "?"
}

// delivered is what the queue sends for an external forward.
func delivered(v *Verdict, msg string) string {
	return v.ForwardHeader + v.Header + "Received: from mail.example.org by mx.relay.example.net; Mon, 1 Jan 2024\r\n" + msg
}

func verifyAll(t *testing.T, d *fakeDNS, msg string) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{
		LookupTXT: func(n string) ([]string, error) { return d.LookupTXT(context.Background(), n) }})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}
