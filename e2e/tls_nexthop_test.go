//go:build e2e

package e2e

// STARTTLS towards the next hop, against a real Postfix with TLS on (its
// own instance, smtpd_tls_security_level = may, relaying to the sink): what
// each delivery.tls_policy does with a certificate that verifies, one that
// does not, and a next hop that offers no STARTTLS at all.

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// hopCert writes a self-signed certificate (its own CA) for 127.0.0.1 and
// its key into dir, as name.pem and name.key.
func hopCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	cert, key := selfSignedCA(t, name, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, cert, 0o600)
	os.WriteFile(keyFile, key, 0o600)
	return certFile, keyFile
}

func TestStartTLSToPostfix(t *testing.T) {
	dir := t.TempDir()
	cert, key := hopCert(t, dir, "postfix-tls")
	otherCA, _ := hopCert(t, dir, "someone-else")

	pfAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, pfPort, _ := net.SplitHostPort(pfAddr)
	_, sinkPort, _ := net.SplitHostPort(suite.servers["SINK_ADDR"])
	pf := suite.startFreshPostfix(t, suite.serverDir("postfix-tls"), pfPort, "postfix-tls.test",
		"smtpd_tls_cert_file = "+cert+"\nsmtpd_tls_key_file = "+key+
			"\nsmtpd_tls_security_level = may\nsmtpd_tls_received_header = yes\nsmtpd_tls_loglevel = 1",
		"SINK_PORT="+sinkPort)
	pfLog := pf["PF_LOG"]
	if pfLog == "" {
		t.Fatalf("start-postfix.sh printed no PF_LOG: %v", pf)
	}

	for _, tc := range []struct {
		name, policy, ca, hop string
		tls                   bool // delivered, and over TLS
		logWant               string
	}{
		{name: "require, certificate verifies", policy: "require", ca: cert, hop: pfAddr, tls: true},
		{name: "opportunistic, certificate not verifiable", policy: "opportunistic", ca: otherCA, hop: pfAddr, tls: true},
		{name: "require, certificate from another CA", policy: "require", ca: otherCA, hop: pfAddr, logWant: "certificate"},
		{name: "require, next hop without STARTTLS", policy: "require", ca: cert, hop: suite.servers["PF_SMTP"], logWant: "not offered"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdir := t.TempDir()
			addr, err := freePort()
			if err != nil {
				t.Fatal(err)
			}
			cfg := writeConfig(t, filepath.Join(rdir, "mailfwd.yaml"), "tlsnexthop/mailfwd.yaml", vars{"Listen": addr, "NextHop": tc.hop,
				"ExternalNextHop": suite.servers["SINK_ADDR"], "TLSPolicy": tc.policy, "CAFile": tc.ca})
			p, err := suite.startRelayConfig(rdir, cfg, addr, "")
			if err != nil {
				t.Fatal(err)
			}
			defer p.stop()
			p.spool = filepath.Join(rdir, "spool", "msg")
			tok := suite.token(t)
			if err := sendGo(addr, tok, []string{"sales@company.com"}); err != nil {
				t.Fatal(err)
			}
			if !tc.tls {
				// Deferred, never sent in clear or to an unverified server.
				line := logHas(t, p, 10*time.Second, "status=deferred", tc.logWant)
				t.Logf("deferred: %s", line)
				time.Sleep(2 * time.Second) // a few retries
				dumps, err := ReadSinkDumps(suite.servers["SINK_DIR"])
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range dumps {
					if strings.Contains(string(d.Raw), tok) {
						t.Fatalf("delivered although the policy forbids it: %s", d.File)
					}
				}
				if p.spooled(t) != 1 {
					t.Fatalf("the deferred message is not in the spool (%d messages)", p.spooled(t))
				}
				return
			}
			d := suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 20*time.Second)
			// Postfix records the TLS session in its Received header
			// (smtpd_tls_received_header) and its log (smtpd_tls_loglevel).
			re := regexp.MustCompile(`(?s)Received: from mailfwd-tls\.e2e\.test \(localhost \[127\.0\.0\.1\]\)\s+\(using (TLSv1\.[23]) with cipher \S+`)
			m := re.FindSubmatch(d[0].Raw)
			if m == nil {
				t.Fatalf("no TLS Received header of Postfix's in:\n%s", d[0].RawHeader)
			}
			t.Logf("Postfix's Received header: using %s", m[1])
			b, _ := os.ReadFile(pfLog)
			if !regexp.MustCompile(`TLS connection established from localhost\[127\.0\.0\.1\]: TLSv1\.[23]`).Match(b) {
				t.Fatalf("Postfix's log (%s) has no TLS connection from us", pfLog)
			}
		})
	}
}
