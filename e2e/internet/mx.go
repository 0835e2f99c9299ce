//go:build e2e

package internet

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// TLSMode says what a receiving MTA offers.
type TLSMode int

const (
	// TLSOn: STARTTLS with a certificate of MXOptions.Cert's kind.
	TLSOn TLSMode = iota
	// TLSOff: no STARTTLS in the EHLO reply at all.
	TLSOff
)

// TLSAMode says which TLSA record is published for _25._tcp.<mx>.
type TLSAMode int

const (
	// NoTLSA: none.
	NoTLSA TLSAMode = iota
	// TLSAMatch: "3 1 1" (DANE-EE, SPKI, SHA2-256) of the MX's certificate.
	TLSAMatch
	// TLSAMismatch: "3 1 1" of a key the MX does not have.
	TLSAMismatch
)

// MXOptions configures AddMX.
type MXOptions struct {
	// Domains it accepts mail for (any local part), delivered to a
	// maildir; none: the MX's parent domain ("mx.dane.test" → "dane.test").
	Domains []string
	TLS     TLSMode
	Cert    CertKind // with TLSOn (default CertValid)
	TLSA    TLSAMode
	// NoA leaves out the A record of the MX's name (publish your own).
	NoA bool
}

// MX is a receiving Debian Postfix in a host of its own: smtpd on
// Addr:25, mail for Domains delivered by virtual(8) to a maildir.
type MX struct {
	Name    string // its hostname (myhostname, certificate name), e.g. "mx.dane.test"
	Addr    string // 10.98.N.2
	Host    *Host
	Domains []string
	TLS     TLSMode
	Cert    *Cert  // nil with TLSOff
	TLSA    string // the published TLSA record data ("3 1 1 hex"), "" if none
	Dir     string // config (etc/), queue (spool/), data/, mail/, maillog

	starting *exec.Cmd
	startErr chan error
}

// AddMX starts a Postfix named name (a host under a zone added before,
// e.g. "mx.dane.test") in a new host, and publishes "name A addr" and the
// TLSA record of opts.TLSA. It returns at once: Start waits until it
// greets. Call it before Start.
func (n *Net) AddMX(name string, opts MXOptions) *MX {
	t := n.t
	t.Helper()
	name = strings.TrimSuffix(fqdn(name), ".")
	n.mu.Lock()
	started := n.started
	idx := len(n.mxs) + 1
	n.mu.Unlock()
	if started {
		t.Fatalf("internet: AddMX(%s) after Start", name)
	}
	if len(opts.Domains) == 0 {
		_, parent, _ := strings.Cut(name, ".")
		opts.Domains = []string{parent}
	}
	h := n.AddHost(fmt.Sprintf("mx%d", idx))
	m := &MX{Name: name, Addr: h.Addr, Host: h, Domains: opts.Domains, TLS: opts.TLS,
		Dir: filepath.Join(n.dir, "mx-"+name)}
	if opts.TLS == TLSOn {
		m.Cert = n.ca.Issue(t, "mx-"+name, opts.Cert, name)
	}
	if !opts.NoA {
		n.AddA(name, h.Addr)
	}
	switch opts.TLSA {
	case TLSAMatch:
		if m.Cert == nil {
			t.Fatalf("internet: AddMX(%s): TLSA without TLS", name)
		}
		m.TLSA = "3 1 1 " + m.Cert.SPKISHA256()
	case TLSAMismatch:
		other := n.ca.Issue(t, "mx-"+name+"-other", CertValid, name)
		m.TLSA = "3 1 1 " + other.SPKISHA256()
	}
	if m.TLSA != "" {
		n.Add(fmt.Sprintf("_25._tcp.%s. TLSA %s", name, m.TLSA))
	}
	m.configure(t)
	// "postfix start" runs its checks then "master -w", which returns once
	// the master is up; the banner is polled by Start.
	m.starting = h.Command("postfix", "-c", m.Dir+"/etc", "start")
	out, err := os.Create(filepath.Join(m.Dir, "start.log"))
	if err != nil {
		t.Fatal(err)
	}
	m.starting.Stdout, m.starting.Stderr = out, out
	if err := m.starting.Start(); err != nil {
		t.Fatalf("internet: postfix start %s: %v", name, err)
	}
	m.startErr = make(chan error, 1)
	go func() { m.startErr <- m.starting.Wait(); out.Close() }()
	n.mu.Lock()
	n.mxs = append(n.mxs, m)
	n.mu.Unlock()
	return m
}

// MXes lists the MXes added so far.
func (n *Net) MXes() []*MX {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*MX(nil), n.mxs...)
}

func (m *MX) configure(t testing.TB) {
	t.Helper()
	etc, spool, data, mbox := m.Dir+"/etc", m.Dir+"/spool", m.Dir+"/data", m.Dir+"/mail"
	pu, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("internet: no postfix user: %v", err)
	}
	for _, d := range []string{m.Dir, etc, spool} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{data, mbox} {
		os.MkdirAll(d, 0o700)
		must(t, "chown", "postfix:postfix", d)
	}
	// queue directories as postfix-files wants them (else "postfix start"
	// spends ~1.5 s making them)
	for _, q := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		d := spool + "/" + q
		os.MkdirAll(d, 0o700)
		must(t, "chown", "postfix:root", d)
	}
	for _, q := range []string{"maildrop", "public", "pid"} {
		os.MkdirAll(spool+"/"+q, 0o755)
	}
	must(t, "chown", "postfix:postdrop", spool+"/maildrop", spool+"/public")
	os.Chmod(spool+"/maildrop", 0o730)
	os.Chmod(spool+"/public", 0o710)
	tls := "smtpd_tls_security_level = none\n"
	if m.Cert != nil {
		tls = fmt.Sprintf(`smtpd_tls_security_level = may
smtpd_tls_chain_files = %s, %s
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database =
`, m.Cert.KeyFile, m.Cert.CertFile)
	}
	_, mydomain, _ := strings.Cut(m.Name, ".")
	mainCf := fmt.Sprintf(`# Receiving MTA %[1]s of the simulated Internet (mailfwd/e2e/internet)
compatibility_level = 3.6
config_directory = %[2]s
queue_directory = %[3]s
data_directory = %[4]s
mail_owner = postfix
setgid_group = postdrop
maillog_file = %[5]s/maillog
maillog_file_prefixes = %[5]s
myhostname = %[1]s
mydomain = %[6]s
myorigin = $myhostname
inet_interfaces = %[7]s
inet_protocols = ipv4
smtpd_banner = $myhostname ESMTP
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
biff = no

# Mail for the domains goes to one maildir; nothing leaves this host
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
virtual_mailbox_domains = %[8]s
virtual_mailbox_base = %[9]s
virtual_mailbox_maps = static:inbox/
virtual_uid_maps = static:%[10]s
virtual_gid_maps = static:%[11]s
virtual_minimum_uid = 1
relay_domains =
relayhost =
default_transport = error:5.7.1 this test MTA sends no mail
relay_transport = error:5.7.1 this test MTA sends no mail
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_error_sleep_time = 0
notify_classes =
queue_run_delay = 1s
delay_warning_time = 0

%[12]s`, m.Name, etc, spool, data, m.Dir, mydomain, m.Addr, strings.Join(m.Domains, " "), mbox, pu.Uid, pu.Gid, tls)
	masterCf := `# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
`
	if err := os.WriteFile(etc+"/main.cf", []byte(mainCf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etc+"/master.cf", []byte(masterCf), 0o644); err != nil {
		t.Fatal(err)
	}
	// Postfix waits ~2 s for a main.cf written this very second (it may be
	// mid-edit): date the files back.
	old := time.Now().Add(-time.Minute)
	os.Chtimes(etc+"/main.cf", old, old)
	os.Chtimes(etc+"/master.cf", old, old)
	var stderr bytes.Buffer
	pc := exec.Command("postconf", "-c", etc, "-n")
	pc.Stderr = &stderr
	if err := pc.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("internet: %s main.cf: %v\n%s", m.Name, err, stderr.Bytes())
	}
}

// wait waits for "postfix start" and the 220 banner.
func (m *MX) wait(t testing.TB) {
	t.Helper()
	if err := <-m.startErr; err != nil {
		b, _ := os.ReadFile(filepath.Join(m.Dir, "start.log"))
		t.Fatalf("internet: postfix start %s: %v\n%s\n%s", m.Name, err, b, tail(m.LogFile(), 20))
	}
	m.startErr <- nil
	poll(t, "postfix "+m.Name, 30*time.Second, nil, m.LogFile(), func() error {
		c, err := net.DialTimeout("tcp", m.Addr+":25", time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		l, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(l, "220 ") {
			return fmt.Errorf("banner %q", l)
		}
		fmt.Fprintf(c, "QUIT\r\n")
		return nil
	})
}

// LogFile is the Postfix log (smtpd, with "TLS connection established"
// lines at smtpd_tls_loglevel 1, and virtual's deliveries).
func (m *MX) LogFile() string { return filepath.Join(m.Dir, "maillog") }

// Log is the Postfix log so far.
func (m *MX) Log() string {
	b, _ := os.ReadFile(m.LogFile())
	return string(b)
}

// Addr25 is "Addr:25".
func (m *MX) Addr25() string { return net.JoinHostPort(m.Addr, "25") }

// Message is one delivered message.
type Message struct {
	File string
	Raw  []byte // as delivered: Return-Path, Delivered-To, then Postfix's Received on top
	// Received is the topmost Received header (the MX's own), unfolded.
	Received string
	// TLSVersion and TLSCipher are from Received "(using TLSv1.3 with
	// cipher TLS_AES_256_GCM_SHA384 (...))"; "" when it came in plain.
	TLSVersion, TLSCipher string
	ReturnPath            string // envelope sender, without <>
	DeliveredTo           string // envelope recipient
	Header                mail.Header
}

var usingRE = regexp.MustCompile(`\(using (TLSv[0-9.]+) with cipher ([A-Za-z0-9_-]+)`)

// Messages reads every message delivered so far, oldest first.
func (m *MX) Messages() ([]*Message, error) {
	var files []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(m.Dir, "mail", "inbox", sub))
		if err != nil && !os.IsNotExist(err) {
			return nil, err
		}
		for _, e := range ents {
			files = append(files, filepath.Join(m.Dir, "mail", "inbox", sub, e.Name()))
		}
	}
	type ent struct {
		f  string
		mt time.Time
	}
	var es []ent
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		es = append(es, ent{f, st.ModTime()})
	}
	sort.Slice(es, func(i, j int) bool {
		if !es[i].mt.Equal(es[j].mt) {
			return es[i].mt.Before(es[j].mt)
		}
		return es[i].f < es[j].f
	})
	var r []*Message
	for _, e := range es {
		raw, err := os.ReadFile(e.f)
		if err != nil {
			return nil, err
		}
		msg := &Message{File: e.f, Raw: raw}
		if pm, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
			msg.Header = pm.Header
			if rs := pm.Header["Received"]; len(rs) > 0 {
				msg.Received = strings.Join(strings.Fields(rs[0]), " ")
			}
			msg.ReturnPath = strings.Trim(pm.Header.Get("Return-Path"), "<>")
			msg.DeliveredTo = pm.Header.Get("Delivered-To")
		}
		if s := usingRE.FindStringSubmatch(msg.Received); s != nil {
			msg.TLSVersion, msg.TLSCipher = s[1], s[2]
		}
		r = append(r, msg)
	}
	return r, nil
}

// WaitMessages waits until at least count messages have arrived and
// returns them all; it fails t after timeout.
func (m *MX) WaitMessages(t testing.TB, count int, timeout time.Duration) []*Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs, err := m.Messages()
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) >= count {
			return msgs
		}
		if time.Now().After(deadline) {
			t.Fatalf("internet: %s: %d of %d messages after %v\n%s", m.Name, len(msgs), count, timeout, tail(m.LogFile(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Clear deletes every delivered message.
func (m *MX) Clear() {
	for _, sub := range []string{"new", "cur"} {
		d := filepath.Join(m.Dir, "mail", "inbox", sub)
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			os.Remove(filepath.Join(d, e.Name()))
		}
	}
}

// TLSSession is one "TLS connection established" line of the smtpd log.
type TLSSession struct {
	Line     string
	Client   string // "unknown[10.98.1.1]"
	Protocol string // "TLSv1.3"
	Cipher   string
}

var tlsLogRE = regexp.MustCompile(`TLS connection established from (\S+): (TLSv[0-9.]+) with cipher (\S+)`)

// TLSSessions lists the TLS handshakes smtpd logged so far.
func (m *MX) TLSSessions() []TLSSession {
	var r []TLSSession
	for _, l := range strings.Split(m.Log(), "\n") {
		if s := tlsLogRE.FindStringSubmatch(l); s != nil {
			r = append(r, TLSSession{Line: l, Client: s[1], Protocol: s[2], Cipher: s[3]})
		}
	}
	return r
}

// Stop stops the MX (its address then refuses connections); Restart
// starts it again with its queue and mail. Both only after Start.
func (m *MX) Stop(t testing.TB) {
	t.Helper()
	if out, err := m.Host.Command("postfix", "-c", m.Dir+"/etc", "stop").CombinedOutput(); err != nil {
		t.Fatalf("internet: postfix stop %s: %v\n%s", m.Name, err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(nsPids(m.Host.NS)) > 0 {
		if time.Now().After(deadline) {
			for _, p := range nsPids(m.Host.NS) {
				if p != os.Getpid() {
					killPid(p)
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts a stopped MX and waits for its banner.
func (m *MX) Restart(t testing.TB) {
	t.Helper()
	out, err := m.Host.Command("postfix", "-c", m.Dir+"/etc", "start").CombinedOutput()
	if err != nil {
		t.Fatalf("internet: postfix start %s: %v\n%s", m.Name, err, out)
	}
	m.startErr = make(chan error, 1)
	m.startErr <- nil
	m.wait(t)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
