//go:build e2e

package e2e

// Forwards judged by a receiver that enforces DMARC as a big mailbox
// provider does: Debian's Postfix with OpenDKIM and OpenDMARC (its own SPF
// check, p=reject refused with 550), in a network namespace, resolving
// through the suite's DNS server, on which every sender domain publishes
// SPF, DKIM and DMARC records. mailfwd forwards to it over the veth, asks
// the same DNS (dns.servers), signs with a key published there, and the
// receiver sees it at 10.99.1.1, which srs.e2e.test's SPF names.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
)

func rsaKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return k, "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// receiver is the DMARC-enforcing MX in namespace "rcv".
type receiver struct {
	addr    string // 10.99.1.2:25
	sinkDir string
	pf      map[string]string
}

func startReceiver(t *testing.T, n *simNet, domains []string) *receiver {
	t.Helper()
	ip := n.addHost("rcv", 1)
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dkimConf := write("opendkim.conf", `Mode v
Socket inet:8891@127.0.0.1
AuthservID mx.gmail.example
Syslog no
UserID opendkim
AlwaysAddARHeader yes
Nameservers `+simDNSIP+`
`)
	dmarcConf := write("opendmarc.conf", `Socket inet:8893@127.0.0.1
AuthservID mx.gmail.example
TrustedAuthservIDs mx.gmail.example
RejectFailures true
SPFSelfValidate true
SPFIgnoreResults true
RequiredHeaders false
FailureReports false
Syslog false
UserID opendmarc
PublicSuffixList /usr/share/publicsuffix/public_suffix_list.dat
`)
	for _, c := range [][]string{{"opendkim", "-f", "-x", dkimConf}, {"opendmarc", "-f", "-c", dmarcConf}} {
		cmd := n.in("rcv", c[0], c[1:]...)
		logf, _ := os.Create(filepath.Join(dir, c[0]+".log"))
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	waitPort := func(port string) {
		for i := 0; ; i++ {
			if n.in("rcv", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+port).Run() == nil {
				return
			}
			if i > 100 {
				b1, _ := os.ReadFile(filepath.Join(dir, "opendkim.log"))
				b2, _ := os.ReadFile(filepath.Join(dir, "opendmarc.log"))
				t.Fatalf("milter on %s does not listen:\n%s\n%s", port, b1, b2)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitPort("8891")
	waitPort("8893")
	r := &receiver{addr: ip + ":25"}
	sinkRoot := suite.serverDir("sink-rcv")
	sink := n.in("rcv", scriptPath("start-sink.sh"))
	sink.Env = suite.scriptEnv("SINK_ROOT="+sinkRoot, "SINK_PORT=10099", "SINK_HOSTNAME=store.gmail.example")
	if out, err := sink.CombinedOutput(); err != nil {
		t.Fatalf("sink in rcv: %v\n%s", err, out)
	}
	r.sinkDir = filepath.Join(sinkRoot, "dump")
	t.Cleanup(func() {
		c := n.in("rcv", scriptPath("stop-sink.sh"))
		c.Env = suite.scriptEnv("SINK_ROOT=" + sinkRoot)
		c.Run()
	})
	pfDir := suite.serverDir("postfix-rcv")
	extra := strings.Join([]string{
		"relay_domains = " + strings.Join(domains, " "),
		"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
		"smtpd_milters = inet:127.0.0.1:8891, inet:127.0.0.1:8893",
		"non_smtpd_milters =",
		"milter_default_action = tempfail",
	}, "\n")
	pf := n.in("rcv", scriptPath("start-postfix.sh"))
	pf.Env = suite.scriptEnv("PF_DIR="+pfDir, "PF_PORT=25", "PF_ADDR="+ip, "SINK_PORT=10099",
		"PF_HOSTNAME=mx.gmail.example", "PF_MAIN_EXTRA="+extra)
	if out, err := pf.CombinedOutput(); err != nil {
		t.Fatalf("postfix in rcv: %v\n%s", err, out)
	}
	r.pf = map[string]string{"PF_LOG": filepath.Join(pfDir, "maillog")}
	t.Cleanup(func() {
		c := exec.Command(scriptPath("stop-postfix.sh"))
		c.Env = suite.scriptEnv("PF_DIR=" + pfDir)
		c.Run()
	})
	return r
}

type dmarcCase struct {
	kind      string
	mailFrom  string
	from      string // header From
	sign      bool   // DKIM-signed by the From domain
	breakSig  bool   // ... and a footer added after signing
	wantForm  string // "embedded" or "database"
	rewritten bool   // our From at the receiver
	verdict   string // the receiver's: "pass" (delivered, dmarc=pass), "fail-delivered", "none", "refused"
	dsn       string // for refused: "sent" or "dropped"
}

func TestForwardsJudgedByDMARCReceiver(t *testing.T) {
	n := newSimNet(t)
	senderKey, senderRec := rsaKey(t)
	relayKey, relayRec := rsaKey(t)
	spfLocal := "v=spf1 ip4:127.0.0.1 -all"
	for _, d := range []string{"reject-spf.example", "dkim.example", "footer.example", "none.example", "bounces.brand.example", "evil.example"} {
		n.txt(d, spfLocal)
	}
	n.txt("forged.example", "v=spf1 -all")
	n.txt("_dmarc.forged.example", "v=DMARC1; p=reject")
	for _, d := range []string{"reject-spf.example", "dkim.example", "footer.example", "brand.example"} {
		n.txt("_dmarc."+d, "v=DMARC1; p=reject")
	}
	n.txt("_dmarc.none.example", "v=DMARC1; p=none")
	// The real senders' kinds (srs_senders_test.go), each domain with SPF
	// for the client and p=reject.
	realDomains := map[string]bool{}
	for _, rs := range realSenders {
		d := strings.ToLower(rs.addr[strings.LastIndexByte(rs.addr, '@')+1:])
		if !realDomains[d] {
			realDomains[d] = true
			n.txt(d, spfLocal)
			n.txt("_dmarc."+d, "v=DMARC1; p=reject")
		}
	}
	n.txt("s1._domainkey.dkim.example", senderRec)
	n.txt("s1._domainkey.footer.example", senderRec)
	// us: the SRS domain's SPF is the address the receiver sees; our
	// forwards are signed d=company.com, which says p=reject itself
	n.txt(srsDomain, "v=spf1 ip4:10.99.1.1 -all")
	n.txt("fwd._domainkey.company.com", relayRec)
	n.txt("_dmarc.company.com", "v=DMARC1; p=reject")
	n.startDNS()
	rcvDomains := []string{"gmail.com", "reject-spf.example", "dkim.example", "footer.example", "none.example",
		"noauth.example", "bounces.brand.example", "evil.example", "forged.example"}
	for d := range realDomains {
		rcvDomains = append(rcvDomains, d)
	}
	rcvDomains = append(rcvDomains, "first.example") // where the SRS1 sender's bounce goes
	rcv := startReceiver(t, n, rcvDomains)

	// mailfwd: the e2e relay's config, forwarding outside to the receiver
	dir := filepath.Join(t.TempDir(), "relay")
	os.MkdirAll(dir, 0o700)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(relayKey)})
	os.WriteFile(filepath.Join(dir, "dkim.pem"), keyPEM, 0o600)
	addr, admin := mustFreePort(t), mustFreePort(t)
	relay := vars{"Hostname": "mx.company.com", "Listen": addr, "Admin": admin, "ExternalNextHop": rcv.addr,
		"DNS": simDNSIP + ":53", "DMARCForwarding": ""}
	cfgPath, err := suite.relayConfig(dir, "dmarc/mailfwd.yaml", relay)
	if err != nil {
		t.Fatal(err)
	}
	m, err := suite.startRelayConfig(dir, cfgPath, addr, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer m.stop()

	longVERP := "bounces+a1b2c3d4e5f6-order-confirmation-customer.name=example.org@bounces.brand.example"
	cases := []dmarcCase{
		{kind: "p=reject, SPF only", mailFrom: "alice@reject-spf.example", from: "Alice <alice@reject-spf.example>",
			wantForm: "embedded", rewritten: true, verdict: "pass"},
		{kind: "p=reject, DKIM that survives", mailFrom: "bob@dkim.example", from: "Bob <bob@dkim.example>", sign: true,
			wantForm: "embedded", rewritten: false, verdict: "pass"},
		{kind: "p=reject, DKIM broken by a footer", mailFrom: "carol@footer.example", from: "Carol <carol@footer.example>", sign: true, breakSig: true,
			wantForm: "embedded", rewritten: true, verdict: "pass"},
		{kind: "p=none, SPF only", mailFrom: "dave@none.example", from: "Dave <dave@none.example>",
			wantForm: "embedded", rewritten: false, verdict: "fail-delivered"},
		{kind: "no authentication", mailFrom: "erin@noauth.example", from: "Erin <erin@noauth.example>",
			wantForm: "embedded", rewritten: false, verdict: "none"},
		{kind: "long ESP VERP sender, p=reject", mailFrom: longVERP, from: "Brand <news@brand.example>",
			wantForm: "database", rewritten: true, verdict: "pass"},
		{kind: "spoofed From (DMARC fails here), sender authenticated", mailFrom: "mallory@evil.example", from: "CEO <ceo@reject-spf.example>",
			wantForm: "embedded", rewritten: false, verdict: "refused", dsn: "sent"},
		{kind: "forged sender (SPF fail), p=reject", mailFrom: "someone@forged.example", from: "Someone <someone@forged.example>",
			wantForm: "embedded", rewritten: false, verdict: "refused", dsn: "dropped"},
	}
	type row struct{ kind, form, verdict, from, bounce string }
	var rows []row
	for _, c := range cases {
		tok := suite.token(t)
		msg := fmt.Sprintf("From: %s\r\nTo: internal.user@company.com\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <%s@%s>\r\n\r\nHello,\r\nthis is %s.\r\n",
			c.from, tok, time.Now().Format(time.RFC1123Z), tok, "client.example", c.kind)
		if c.sign {
			var b bytes.Buffer
			dom := c.from[strings.LastIndexByte(c.from, '@')+1 : len(c.from)-1]
			if err := dkim.Sign(&b, strings.NewReader(msg), &dkim.SignOptions{Domain: dom, Selector: "s1", Signer: senderKey,
				HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"}}); err != nil {
				t.Fatal(err)
			}
			msg = b.String()
			if c.breakSig {
				msg += "--\r\nThis e-mail is confidential. (added by the sender's gateway)\r\n"
			}
		}
		id := sendRaw(t, m.addr, c.mailFrom, "internal.user@company.com", msg)
		r := row{kind: c.kind}
		got := rcvArrived(t, rcv, tok, m, id, 20*time.Second)
		switch {
		case got != nil:
			var theirs []string // the receiver's, not the one we added
			for _, h := range got.Header["Authentication-Results"] {
				if strings.HasPrefix(strings.TrimSpace(h), "mx.gmail.example") {
					theirs = append(theirs, h)
				}
			}
			ar := strings.Join(theirs, " | ")
			switch {
			case strings.Contains(ar, "dmarc=pass"):
				r.verdict = "delivered, dmarc=pass"
			case strings.Contains(ar, "dmarc=fail"):
				r.verdict = "delivered, dmarc=fail (p=none)"
			case strings.Contains(ar, "dmarc=none"):
				r.verdict = "delivered, dmarc=none"
			default:
				r.verdict = "delivered, " + ar
			}
			at := strings.LastIndexByte(got.MailFrom, '@')
			r.form = "embedded"
			if strings.Contains(got.MailFrom, "=1=") {
				r.form = "database"
			}
			if at > 64 {
				t.Errorf("%s: <%s> over 64 octets", c.kind, got.MailFrom)
			}
			f := got.Header.Get("From")
			r.from = "kept"
			if strings.Contains(f, "forwarded@company.com") {
				r.from = "rewritten"
				if !strings.Contains(got.Header.Get("X-Original-From"), c.from) || !strings.Contains(got.Header.Get("Reply-To"), c.from) {
					t.Errorf("%s: rewritten without the original in Reply-To and X-Original-From: %v", c.kind, got.Header)
				}
			}
			if r.form != c.wantForm {
				t.Errorf("%s: SRS form %s (<%s>), want %s", c.kind, r.form, got.MailFrom, c.wantForm)
			}
			// The receiver's SMTP peer bounces to the SRS address.
			btok := suite.token(t)
			bounce := fmt.Sprintf("From: MAILER-DAEMON@mx.gmail.example\r\nTo: %s\r\nSubject: %s\r\n\r\nundeliverable\r\n", got.MailFrom, btok)
			sendRaw(t, m.addr, "", got.MailFrom, bounce)
			if b := rcvArrived(t, rcv, btok, m, "", 20*time.Second); b != nil && len(b.Rcpts) == 1 && strings.EqualFold(b.Rcpts[0], c.mailFrom) {
				r.bounce = "reversed to " + b.Rcpts[0]
			} else {
				r.bounce = "NOT REVERSED"
				t.Errorf("%s: bounce to <%s> did not reach <%s> (%+v)", c.kind, got.MailFrom, c.mailFrom, b)
			}
		default:
			line := logHas(t, m, 20*time.Second, "queue_id="+id, "status=bounced")
			r.verdict = "refused: " + regexp.MustCompile(`\((5\d\d [^)]*)\)`).FindString(line)
			r.form, r.from, r.bounce = "-", "kept", "-"
			dsnLine := "bounce queued"
			if c.dsn == "dropped" {
				dsnLine = "no DSN for a failed forward"
			}
			logHas(t, m, 20*time.Second, "queue_id="+id, dsnLine)
			r.bounce = "DSN " + c.dsn
		}
		want := map[string]string{"pass": "delivered, dmarc=pass", "fail-delivered": "delivered, dmarc=fail (p=none)",
			"none": "delivered, dmarc=none", "refused": "refused"}[c.verdict]
		if !strings.HasPrefix(r.verdict, want) {
			t.Errorf("%s: receiver verdict %q, want %q", c.kind, r.verdict, want)
		}
		if (r.from == "rewritten") != c.rewritten {
			t.Errorf("%s: From %s, want rewritten=%v", c.kind, r.from, c.rewritten)
		}
		rows = append(rows, r)
	}
	t.Logf("%-52s %-9s %-10s %-34s %s", "sender", "SRS form", "From", "receiver (Postfix+OpenDKIM+OpenDMARC)", "bounce")
	for _, r := range rows {
		t.Logf("%-52s %-9s %-10s %-34s %s", r.kind, r.form, r.from, r.verdict, r.bounce)
	}
	// Every kind of real sender, from a p=reject domain that its SPF
	// authenticates: accepted by the receiver, and its bounce reverses.
	t.Logf("%-34s %-9s %-10s %-24s %s", "real sender (p=reject, SPF)", "SRS form", "From", "receiver", "bounce")
	for _, rs := range realSenders {
		dom := rs.addr[strings.LastIndexByte(rs.addr, '@')+1:]
		tok := suite.token(t)
		msg := fmt.Sprintf("From: Sender <news@%s>\r\nTo: internal.user@company.com\r\nSubject: %s\r\nMessage-ID: <%s@client.example>\r\n\r\nnews\r\n", dom, tok, tok)
		id := sendRaw(t, m.addr, rs.addr, "internal.user@company.com", msg)
		got := rcvArrived(t, rcv, tok, m, id, 20*time.Second)
		if got == nil {
			t.Errorf("%s <%s>: refused by the receiver: %s", rs.kind, rs.addr, logHas(t, m, 5*time.Second, "queue_id="+id, "status="))
			continue
		}
		verdict := "delivered, dmarc=?"
		for _, h := range got.Header["Authentication-Results"] {
			if strings.HasPrefix(strings.TrimSpace(h), "mx.gmail.example") && strings.Contains(h, "dmarc=") {
				verdict = "delivered, dmarc=" + strings.Fields(h[strings.Index(h, "dmarc="):])[0][len("dmarc="):]
			}
		}
		if verdict != "delivered, dmarc=pass" {
			t.Errorf("%s: %s", rs.kind, verdict)
		}
		form := "embedded"
		if strings.Contains(got.MailFrom, "=1=") {
			form = "database"
		} else if strings.HasPrefix(got.MailFrom, "SRS1") {
			form = "SRS1"
		}
		from := "kept"
		if strings.Contains(got.Header.Get("From"), "forwarded@company.com") {
			from = "rewritten"
		}
		want := strings.ToLower(rs.addr)
		if strings.HasPrefix(rs.addr, "SRS1") {
			f := strings.SplitN(rs.addr[5:strings.IndexByte(rs.addr, '@')], "=", 3)
			want = strings.ToLower("SRS0" + f[2] + "@" + f[1])
		}
		btok := suite.token(t)
		sendRaw(t, m.addr, "", got.MailFrom, fmt.Sprintf("From: MAILER-DAEMON@mx.gmail.example\r\nSubject: %s\r\n\r\nbounce\r\n", btok))
		bounce := "NOT REVERSED"
		if b := rcvArrived(t, rcv, btok, m, "", 20*time.Second); b != nil && len(b.Rcpts) == 1 && strings.EqualFold(b.Rcpts[0], want) {
			bounce = "reversed"
		} else {
			t.Errorf("%s: bounce to <%s> did not reach <%s>", rs.kind, got.MailFrom, want)
		}
		t.Logf("%-34s %-9s %-10s %-24s %s", rs.kind, form, from, verdict, bounce)
	}

	// Negative control: the same p=reject, SPF-only mail through a relay
	// with DMARC-aware forwarding off is refused by the receiver.
	offAddr, offAdmin := mustFreePort(t), mustFreePort(t)
	offDir := filepath.Join(t.TempDir(), "relay-off")
	os.MkdirAll(offDir, 0o700)
	os.WriteFile(filepath.Join(offDir, "dkim.pem"), keyPEM, 0o600)
	relay["Listen"], relay["Admin"], relay["DMARCForwarding"] = offAddr, offAdmin, "off"
	if _, err := suite.relayConfig(offDir, "dmarc/mailfwd.yaml", relay); err != nil {
		t.Fatal(err)
	}
	off, err := suite.startRelayConfig(offDir, filepath.Join(offDir, "mailfwd.yaml"), offAddr, offAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer off.stop()
	tok := suite.token(t)
	id := sendRaw(t, off.addr, "alice@reject-spf.example", "internal.user@company.com",
		"From: Alice <alice@reject-spf.example>\r\nTo: internal.user@company.com\r\nSubject: "+tok+"\r\n\r\nHello\r\n")
	if got := rcvArrived(t, rcv, tok, off, id, 20*time.Second); got != nil {
		t.Errorf("control: with dmarc_forwarding off the receiver took it (%v): the test cannot see what rewriting does", got.Header)
	} else {
		t.Logf("control, dmarc_forwarding off: %s", logHas(t, off, 10*time.Second, "queue_id="+id, "status=bounced"))
	}
	if b, err := os.ReadFile(filepath.Join(n.dir, "dnsmasq.log")); err == nil && !bytes.Contains(b, []byte("_dmarc.reject-spf.example")) {
		t.Errorf("nobody asked our DNS for _dmarc.reject-spf.example: the test does not test DMARC\n%s", b)
	}
}

// sendRaw sends msg through addr and returns the queue ID.
func sendRaw(t *testing.T, addr, from, to, msg string) string {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("MAIL FROM:<%s>: %v", from, err)
	}
	if err := c.Rcpt(to, nil); err != nil {
		t.Fatalf("RCPT TO:<%s>: %v", to, err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(msg))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("DATA from <%s>: %v", from, err)
	}
	c.Quit()
	id := resp.StatusText
	if i := strings.LastIndex(id, " "); i >= 0 {
		id = id[i+1:]
	}
	return id
}

// rcvArrived waits for the message with tok at the receiver's sink; nil
// when it does not come, or mailfwd logs that the receiver refused the
// message queued as id.
func rcvArrived(t *testing.T, r *receiver, tok string, m *mailfwdProc, id string, timeout time.Duration) *Dumped {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		dumps, _ := ReadSinkDumps(r.sinkDir)
		for i := range dumps {
			if bytes.Contains(dumps[i].Raw, []byte(tok)) {
				return &dumps[i]
			}
		}
		if id != "" {
			if b, _ := os.ReadFile(m.log.Name()); regexp.MustCompile(`queue_id=` + id + `[^\n]*status=bounced|status=bounced[^\n]*queue_id=` + id).Match(b) {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
