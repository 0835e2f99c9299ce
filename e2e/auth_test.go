//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mailfwd/auth"
)

// Interop of mailfwd's message authentication (package auth) with an
// independent implementation: Debian's python3-dkim (dkimpy), driven by
// testdata/dkimcheck.py with every key served from a JSON "DNS" the test
// writes. Shown:
//  1. a message DKIM-signed by dkimpy (the original sender) still verifies
//     after mailfwd's forwarding path (we only prepend header fields);
//  2. mailfwd's own DKIM signatures (RSA and Ed25519) verify with dkimpy;
//  3. mailfwd's ARC set verifies with dkimpy: i=1 cv=none on a message
//     without chain, and i=2 cv=pass extending a chain dkimpy sealed (i=1);
//  4. negative control: one changed body byte makes dkimpy fail the DKIM
//     signatures and the ARC chain.
//
// The bytes checked are those delivery sends for an external forward:
// Verdict.ForwardHeader + Verdict.Header + the spool file (our Received
// field, then the client's data after StripForged).

// authDNS is both the Resolver for package auth and the JSON file for
// dkimcheck.py.
type authDNS map[string][]string

func (d authDNS) LookupTXT(_ context.Context, name string) ([]string, error) {
	if t, ok := d[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
		return t, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (d authDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (d authDNS) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}
func (d authDNS) LookupAddr(_ context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

type dkimpyResult struct {
	DKIM []struct {
		D   string `json:"d"`
		OK  bool   `json:"ok"`
		Err string `json:"err"`
	} `json:"dkim"`
	ARC struct {
		CV        string `json:"cv"`
		Reason    string `json:"reason"`
		Instances int    `json:"instances"`
	} `json:"arc"`
}

type dkimpy struct {
	t      *testing.T
	dir    string
	script string
	keys   string
	dns    authDNS
}

func newDkimpy(t *testing.T) *dkimpy {
	t.Helper()
	const py = "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import dkim, authres, nacl").CombinedOutput(); err != nil {
		t.Fatalf("%s cannot import dkim/authres (e2e/scripts/install-deps.sh installs python3-dkim python3-authres): %v\n%s", py, err, out)
	}
	script, err := filepath.Abs("testdata/dkimcheck.py")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &dkimpy{t: t, dir: dir, script: script, keys: filepath.Join(dir, "keys.json"), dns: authDNS{}}
}

func (p *dkimpy) publish(name, rec string) {
	p.dns[name] = []string{rec}
	b, _ := json.Marshal(map[string]any{"dns": func() map[string]string {
		m := map[string]string{}
		for k, v := range p.dns {
			m[k] = v[0]
		}
		return m
	}()})
	if err := os.WriteFile(p.keys, b, 0o600); err != nil {
		p.t.Fatal(err)
	}
}

func (p *dkimpy) run(args ...string) []byte {
	p.t.Helper()
	cmd := exec.Command("/usr/bin/python3", append([]string{p.script}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("dkimcheck.py %s: %v\n%s", args[0], err, stderr.String())
	}
	return out
}

func (p *dkimpy) file(name, content string) string {
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return f
}

// rsaKey makes an RSA key, publishes it and writes its PKCS#1 PEM.
func (p *dkimpy) rsaKey(domain, sel string) (*auth.Key, string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		p.t.Fatal(err)
	}
	pemFile := p.file(sel+"."+domain+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})))
	key, err := auth.LoadKey(domain, sel, pemFile)
	if err != nil {
		p.t.Fatal(err)
	}
	p.publish(key.DNSName(), key.DNSRecord())
	return key, pemFile
}

func (p *dkimpy) verify(name, msg string) dkimpyResult {
	p.t.Helper()
	var r dkimpyResult
	if err := json.Unmarshal(p.run("verify", p.keys, p.file(name, msg)), &r); err != nil {
		p.t.Fatal(err)
	}
	return r
}

// forward runs msg through mailfwd's inbound path the way the relay does
// (client data → StripForged → spool and auth.Check) and returns the bytes
// delivery sends to an external next hop.
func forward(t *testing.T, a *auth.Authenticator, msg string) (string, *auth.Verdict) {
	t.Helper()
	var spool bytes.Buffer
	spool.WriteString("Received: from mail.example.org ([192.0.2.10])\r\n\tby mx.relay.example.net (mailfwd) with ESMTP id 0123ABC; Mon, 1 Jan 2024 10:00:01 +0000\r\n")
	c := a.Start(auth.Inbound{ClientIP: net.ParseIP("192.0.2.10"), Helo: "mail.example.org", MailFrom: "alice@example.org", Forward: true})
	defer c.Abort()
	// odd-sized reads, as from a network connection
	src := io.TeeReader(auth.StripForged(&chunky{r: strings.NewReader(msg), n: 777}, a.AuthServID()), c)
	if _, err := io.Copy(&spool, src); err != nil {
		t.Fatal(err)
	}
	v := c.Finish()
	if v.Err != nil {
		t.Fatalf("auth: %v", v.Err)
	}
	if v.Action != auth.Accept {
		t.Fatalf("auth verdict %v %s", v.Action, v.Message)
	}
	return v.ForwardHeader + v.Header + spool.String(), v
}

type chunky struct {
	r io.Reader
	n int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func TestAuthInteropDkimpy(t *testing.T) {
	py := newDkimpy(t)
	_, origPEM := py.rsaKey("example.org", "s2024")      // the original sender
	_, pyArcPEM := py.rsaKey("python.example", "arc")    // a forwarder before us (dkimpy)
	relayKey, _ := py.rsaKey("relay.example.net", "fwd") // mailfwd: DKIM and ARC
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edKey := &auth.Key{Domain: "relay.example.net", Selector: "ed", Signer: edPriv}
	py.publish(edKey.DNSName(), edKey.DNSRecord())
	py.publish("example.org", "v=spf1 ip4:192.0.2.10 -all")
	py.publish("_dmarc.example.org", "v=DMARC1; p=reject")

	newAuth := func(dkimKey *auth.Key) *auth.Authenticator {
		a, err := auth.New(auth.Config{AuthServID: "mx.relay.example.net", Resolver: py.dns,
			LookupTimeout: 2 * time.Second, Timeout: 15 * time.Second, DKIMKey: dkimKey, ARCKey: relayKey,
			SPFFail: auth.Reject, DMARCReject: auth.Reject})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := newAuth(relayKey)

	orig := "From: Alice <alice@example.org>\r\n" +
		"To: list@company.com\r\n" +
		"Subject: quarterly   numbers\r\n" +
		"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n" +
		"Message-ID: <q1@example.org>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" +
		"Hello,\r\n" +
		"the numbers are   attached.  \r\n" +
		"..a line starting with a dot\r\n" +
		strings.Repeat("lorem ipsum dolor sit amet\r\n", 200)
	// the original sender signs with dkimpy
	signed := string(py.run("sign", py.keys, py.file("orig.eml", orig), "s2024", "example.org", origPEM)) + orig
	if r := py.verify("signed.eml", signed); len(r.DKIM) != 1 || !r.DKIM[0].OK {
		t.Fatalf("dkimpy does not verify its own signature: %+v", r)
	}
	// a forged Authentication-Results claiming our authserv-id comes in too
	inbound := "Authentication-Results: mx.relay.example.net; dkim=pass header.d=bank.example\r\n" + signed

	t.Run("no chain: DKIM kept, our DKIM and ARC i=1 verify", func(t *testing.T) {
		out, v := forward(t, a, inbound)
		if res := v.Results; res.SPF.Result != "pass" || res.DMARC.Result != "pass" || len(res.DKIM) != 1 || res.DKIM[0].Result != "pass" {
			t.Fatalf("mailfwd results: %+v", res)
		}
		if strings.Contains(out, "header.d=bank.example") {
			t.Fatal("forged Authentication-Results was delivered")
		}
		if !strings.Contains(out, "ARC-Seal: i=1; a=rsa-sha256; cv=none;") {
			t.Fatalf("no ARC set i=1:\n%s", v.ForwardHeader)
		}
		r := py.verify("fwd1.eml", out)
		t.Logf("dkimpy: %+v", r)
		expectDKIM(t, r, map[string]bool{"example.org": true, "relay.example.net": true})
		if r.ARC.CV != "pass" || r.ARC.Instances != 1 {
			t.Errorf("dkimpy ARC: %+v", r.ARC)
		}
		// (4) negative control
		bad := py.verify("fwd1-bad.eml", strings.Replace(out, "numbers are   attached", "numbers are   attacked", 1))
		t.Logf("dkimpy, one body byte changed: %+v", bad)
		expectDKIM(t, bad, map[string]bool{"example.org": false, "relay.example.net": false})
		if bad.ARC.CV != "fail" {
			t.Errorf("dkimpy ARC after a body change: %+v", bad.ARC)
		}
	})

	t.Run("chain sealed by dkimpy: ARC i=2 cv=pass", func(t *testing.T) {
		// the forwarder before us: its Authentication-Results, then dkimpy's arc_sign (i=1)
		prev := "Authentication-Results: python.example; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org\r\n" + signed
		set1 := string(py.run("arcsign", py.keys, py.file("prev.eml", prev), "arc", "python.example", pyArcPEM, "python.example"))
		chained := set1 + prev
		if r := py.verify("chained.eml", chained); r.ARC.CV != "pass" {
			t.Fatalf("dkimpy does not verify its own ARC set: %+v", r.ARC)
		}
		out, v := forward(t, a, chained)
		if v.Results.ARC.Result != "pass" || v.Results.ARC.Instances != 1 {
			t.Fatalf("mailfwd validation of dkimpy's chain: %+v", v.Results.ARC)
		}
		if !strings.Contains(out, "ARC-Seal: i=2; a=rsa-sha256; cv=pass;") {
			t.Fatalf("no ARC set i=2:\n%s", v.ForwardHeader)
		}
		r := py.verify("fwd2.eml", out)
		t.Logf("dkimpy: %+v", r)
		expectDKIM(t, r, map[string]bool{"example.org": true, "relay.example.net": true})
		if r.ARC.CV != "pass" || r.ARC.Instances != 2 {
			t.Errorf("dkimpy ARC: %+v", r.ARC)
		}
		bad := py.verify("fwd2-bad.eml", strings.Replace(out, "lorem ipsum", "lorem ipsun", 1))
		t.Logf("dkimpy, one body byte changed: %+v", bad)
		if bad.ARC.CV != "fail" {
			t.Errorf("dkimpy ARC after a body change: %+v", bad.ARC)
		}
	})

	t.Run("Ed25519 DKIM signature", func(t *testing.T) {
		out, _ := forward(t, newAuth(edKey), inbound)
		if !strings.Contains(out, "a=ed25519-sha256") {
			t.Fatal("no Ed25519 signature")
		}
		r := py.verify("fwd-ed.eml", out)
		t.Logf("dkimpy: %+v", r)
		expectDKIM(t, r, map[string]bool{"example.org": true, "relay.example.net": true})
		if r.ARC.CV != "pass" {
			t.Errorf("dkimpy ARC: %+v", r.ARC)
		}
	})

	t.Run("DSN signature", func(t *testing.T) {
		dsn := "From: Mail Delivery System <MAILER-DAEMON@relay.example.net>\r\nTo: alice@example.org\r\n" +
			"Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nThe message could not be delivered.\r\n"
		for _, k := range []*auth.Key{relayKey, edKey} {
			sig, err := auth.Sign(k, strings.NewReader(dsn))
			if err != nil {
				t.Fatal(err)
			}
			r := py.verify("dsn.eml", sig+dsn)
			if len(r.DKIM) != 1 || !r.DKIM[0].OK {
				t.Errorf("%s: dkimpy: %+v", k.Algorithm(), r)
			}
		}
	})
}

func expectDKIM(t *testing.T, r dkimpyResult, want map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	for _, d := range r.DKIM {
		got[d.D] = d.OK
	}
	if len(got) != len(want) {
		t.Errorf("dkimpy saw signatures %+v, want %v", r.DKIM, want)
	}
	for d, ok := range want {
		if v, seen := got[d]; !seen || v != ok {
			t.Errorf("dkimpy DKIM d=%s: ok=%v (seen %v), want %v", d, v, seen, ok)
		}
	}
}

// The same interop through a running relay: a message signed by dkimpy
// goes in over SMTP to an address that forwards outside, and what the sink
// received (smtp-sink, the stand-in for the outside MX) is verified by
// dkimpy: the sender's signature survives, ours and our ARC set verify.
// The relay's own DNS checks see no records for these test domains
// (temperror or none): they only decide its Authentication-Results.
func TestAuthRelayDkimpy(t *testing.T) {
	py := newDkimpy(t)
	_, origPEM := py.rsaKey("example.org", "s2024")
	_, relayPEM := py.rsaKey("relay.example.net", "fwd")

	dir := t.TempDir()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, filepath.Join(dir, "mailfwd.yaml"), "auth/mailfwd.yaml", vars{"Listen": addr,
		"NextHop": suite.servers["PF_SMTP"], "ExternalNextHop": suite.servers["SINK_ADDR"], "KeyFile": relayPEM})
	p, err := suite.startRelayConfig(dir, cfg, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop()

	tok := suite.token(t)
	orig := "From: Alice <alice@example.org>\r\n" +
		"To: internal.user@company.com\r\n" +
		"Subject: " + tok + "\r\n" +
		"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n" +
		"Message-ID: <" + tok + "@example.org>\r\n" +
		"\r\n" +
		"Hello,\r\n" +
		"..a line starting with a dot, and one with only one:\r\n" +
		".\r\n" +
		strings.Repeat("lorem ipsum dolor sit amet\r\n", 100)
	signed := string(py.run("sign", py.keys, py.file("orig.eml", orig), "s2024", "example.org", origPEM)) + orig
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("alice@example.org", []string{"internal.user@company.com"}, strings.NewReader(signed)); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	d := suite.arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)
	got := strings.ReplaceAll(string(d[0].Raw), "\n", "\r\n") // smtp-sink stores LF line ends
	if !strings.Contains(got, "ARC-Seal: i=1;") || !strings.Contains(got, "Authentication-Results: mx.relay.example.net;") {
		t.Fatalf("no ARC set or Authentication-Results of ours:\n%s", d[0].RawHeader)
	}
	r := py.verify("relayed.eml", got)
	t.Logf("dkimpy on what the sink received: %+v", r)
	expectDKIM(t, r, map[string]bool{"example.org": true, "relay.example.net": true})
	if r.ARC.CV != "pass" || r.ARC.Instances != 1 {
		t.Errorf("dkimpy ARC: %+v", r.ARC)
	}
	bad := py.verify("relayed-bad.eml", strings.Replace(got, "lorem ipsum", "lorem ipsun", 1))
	expectDKIM(t, bad, map[string]bool{"example.org": false, "relay.example.net": false})
	if bad.ARC.CV != "fail" {
		t.Errorf("dkimpy ARC after a body change: %+v", bad.ARC)
	}
}
