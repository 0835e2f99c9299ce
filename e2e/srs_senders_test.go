//go:build e2e

package e2e

// Forwards from the envelope senders a real MX sees, through the running
// relay: none is refused, each leaves with an SRS sender within RFC 5321's
// limits, and a bounce to it comes back to the sender. Then a Redis store
// shared by two relays, and a postsrsd 2.x sqlite database imported.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// realSenders are the kinds of envelope sender an MX sees (their shapes
// are those of the ESPs and list managers named).
var realSenders = []struct{ kind, addr string }{
	{"plain", "alice@example.org"},
	{"mixed case", "Carol.Smith@Example.ORG"},
	{"Amazon SES", "0100018b2f4e7c1a-5d6e7f80-1a2b-4c3d-9e8f-0a1b2c3d4e5f-000000@amazonses.com"},
	{"Amazon SES, regional MAIL FROM", "0102018e3f2a9b7c-7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-000000@eu-west-1.amazonses.com"},
	{"SendGrid VERP", "bounces+12345678-9abc-firstname.lastname=example-corp.com@em1234.example.com"},
	{"Mailchimp", "bounce-mc.us21_123456789.9876543-a1b2c3d4e5f6a7b8c9@mail187.mcsv.net"},
	{"Mandrill", "msprvs1=19876ABCDEFgh=bounces-12345-67@bounce.mandrillapp.com"},
	{"Salesforce Marketing Cloud", "bounce-2157_HTML-123456789-1234567-7654321-1234-abcdefghijklmnopq@bounce.s7.exacttarget.com"},
	{"Google Groups", "group-name+bncBDK7ZXH4SEGRBAQ5EKVAMGQEXAMPLE@googlegroups.com"},
	{"mailing list VERP (Mailman)", "debian-devel-bounces-1234-user=example.org@lists.debian.org"},
	{"mailing list VERP (LISTSERV)", "owner-list+M123456=user=example.org@listserv.example.edu"},
	{"BATV", "prvs=0123456789=notifications-no-reply-account-security-team-eu-west-1@example.com"},
	{"SRS0 of another forwarder", "SRS0=Ab12=XY=orig.example=jane@fwd1.example"},
	{"long SRS0 of another forwarder", "SRS0=Ab12=XY=a-rather-long-original-domain.example=a.long.local.part@forwarder.example.org"},
	{"SRS1 of another forwarder", "SRS1=Cd34=first.example==Ab12=XY=orig.example=jane@second.example"},
	{"quoted local part", `"john doe"@example.com`},
	{"long ordinary domain", "alice@mail.a-very-long-subdomain-name-for-a-department.internal.example-corporation.co.uk"},
	{"IDN domain (A-label)", "info@xn--bcher-kva.example"},
}

func TestSRSRealSenders(t *testing.T) {
	type row struct{ kind, form, bounce string }
	var rows []row
	for _, s := range realSenders {
		tok := suite.token(t)
		out, err := swaks(t, suite.relay.addr, "--from", s.addr, "--to", "internal.user@company.com", "--header", "Subject: "+tok)
		if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
			t.Errorf("%s <%s>: not accepted: %v\n%s", s.kind, s.addr, err, out)
			continue
		}
		fwd := suite.arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)[0]
		at := strings.LastIndexByte(fwd.MailFrom, '@')
		form := "embedded"
		switch {
		case at > 64 || len(fwd.MailFrom) > 254:
			t.Errorf("%s: forwarded from <%s>: over RFC 5321's limits", s.kind, fwd.MailFrom)
		case fwd.MailFrom[at+1:] != srsDomain || !strings.HasPrefix(fwd.MailFrom, "SRS"):
			t.Errorf("%s: forwarded from <%s>: not an SRS address of %s", s.kind, fwd.MailFrom, srsDomain)
		case strings.Contains(fwd.MailFrom, "=1="):
			form = "database"
		}
		if strings.HasPrefix(fwd.MailFrom, "SRS1") {
			form = "SRS1"
		}
		// The far end bounces.
		want := strings.ToLower(s.addr)
		if strings.HasPrefix(s.addr, "SRS1") { // decodes to the first forwarder's SRS0
			f := strings.SplitN(s.addr[5:strings.IndexByte(s.addr, '@')], "=", 3)
			want = strings.ToLower("SRS0" + f[2] + "@" + f[1])
		}
		tok = suite.token(t)
		out, err = swaks(t, suite.relay.addr, "--from", "<>", "--to", fwd.MailFrom, "--header", "Subject: "+tok)
		bounce := "reversed"
		if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued as ") {
			t.Errorf("%s: bounce to <%s> refused: %v\n%s", s.kind, fwd.MailFrom, err, out)
			bounce = "REFUSED"
		} else if b := suite.arrived(t, tok, map[string]int{want: 1}, 30*time.Second)[0]; b.MailFrom != "" {
			t.Errorf("%s: bounce sent from <%s>", s.kind, b.MailFrom)
		}
		rows = append(rows, row{s.kind, fmt.Sprintf("%s (%d-octet local part)", form, at), bounce})
	}
	t.Logf("%-34s %-34s %s", "sender kind", "SRS form emitted", "bounce")
	for _, r := range rows {
		t.Logf("%-34s %-34s %s", r.kind, r.form, r.bounce)
	}
	if len(rows) != len(realSenders) {
		t.Errorf("%d of %d senders forwarded", len(rows), len(realSenders))
	}
}

// redisServer is one redis-server on loopback, persisting with an
// append-only file fsynced on every write (so a restart keeps the keys).
type redisServer struct {
	dir, addr string
	cmd       *exec.Cmd
}

func startRedis(t *testing.T, dir, port string) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not installed (scripts/install-deps.sh installs it): %v", err)
	}
	r := &redisServer{dir: dir, addr: "127.0.0.1:" + port}
	r.cmd = exec.Command("redis-server", "--bind", "127.0.0.1", "--port", port, "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no", "--protected-mode", "yes")
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if r.ping() == nil {
			return r
		}
		if i > 100 {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("redis-server on %s does not answer:\n%s", r.addr, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// do sends one inline command and returns the first reply line.
func (r *redisServer) do(cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", r.addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "%s\r\n", cmd)
	return bufio.NewReader(c).ReadString('\n')
}

func (r *redisServer) ping() error {
	l, err := r.do("PING")
	if err == nil && !strings.HasPrefix(l, "+PONG") {
		err = fmt.Errorf("PING: %q", l)
	}
	return err
}

func (r *redisServer) stop() {
	if r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGTERM)
		r.cmd.Wait()
	}
}

// Two relays share a Redis store: a bounce to an address one minted
// reverses at the other. Redis down: only what needs it waits (4xx), and a
// store that lost its keys refuses (5xx), never relays.
func TestSRSSharedRedis(t *testing.T) {
	port := strings.TrimPrefix(mustFreePort(t), "127.0.0.1:")
	rdir := t.TempDir()
	rs := startRedis(t, rdir, port)
	defer rs.stop()
	start := func(name string) *mailfwdProc {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(dir, 0o700)
		addr, admin := mustFreePort(t), mustFreePort(t)
		p, err := suite.relayConfig(dir, "srsredis/mailfwd.yaml", vars{"Hostname": name + ".e2e.test", "Listen": addr, "Admin": admin, "Redis": rs.addr})
		if err != nil {
			t.Fatal(err)
		}
		m, err := suite.startRelayConfig(dir, p, addr, admin)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.stop)
		return m
	}
	a, b := start("a"), start("b")
	long := realSenders[2].addr // Amazon SES

	tok := suite.token(t)
	out, err := swaks(t, a.addr, "--from", long, "--to", "internal.user@company.com", "--header", "Subject: "+tok)
	if err != nil || !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Fatalf("long sender through relay a: %v\n%s", err, out)
	}
	fwd := suite.arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)[0]
	if !strings.Contains(fwd.MailFrom, "=1=") {
		t.Fatalf("relay a forwarded from <%s>, want the database form", fwd.MailFrom)
	}
	bounce := func(m *mailfwdProc, to string) (string, string) {
		tok := suite.token(t)
		out, _ := swaks(t, m.addr, "--from", "<>", "--to", to, "--header", "Subject: "+tok)
		return replyTo(out, "RCPT TO:"), tok
	}
	rep, btok := bounce(b, fwd.MailFrom)
	if !strings.HasPrefix(rep, "250") {
		t.Fatalf("bounce at relay b to <%s>: %s", fwd.MailFrom, rep)
	}
	suite.arrived(t, btok, map[string]int{strings.ToLower(long): 1}, 30*time.Second)

	// Redis down.
	rs.stop()
	tok = suite.token(t)
	out, _ = swaks(t, a.addr, "--from", realSenders[3].addr, "--to", "internal.user@company.com,sales@company.com",
		"--header", "Subject: "+tok)
	if got := replyTo(out, "RCPT TO:<internal.user"); !strings.HasPrefix(got, "451 4.3.0") {
		t.Errorf("long sender to an external forward, Redis down: %q, want 451 4.3.0\n%s", got, out)
	}
	if !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Errorf("the local recipient of the same message was not taken:\n%s", out)
	}
	suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)
	tok = suite.token(t)
	if out, err := swaks(t, a.addr, "--to", "internal.user@company.com", "--header", "Subject: "+tok); err != nil ||
		!strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Errorf("a short sender needs no store, Redis down: %v\n%s", err, out)
	}
	if rep, _ := bounce(b, fwd.MailFrom); !strings.HasPrefix(rep, "451 4.3.0") {
		t.Errorf("bounce to a database-form address, Redis down: %q, want 451 4.3.0", rep)
	}

	// Back, with its data (append-only file): the bounce reverses again.
	rs = startRedis(t, rdir, port)
	defer rs.stop()
	if rep, _ := bounce(b, fwd.MailFrom); !strings.HasPrefix(rep, "250") {
		t.Errorf("bounce after Redis came back: %q", rep)
	}
	// A store that lost everything: refused like a bad hash, never relayed.
	if l, err := rs.do("FLUSHALL"); err != nil || !strings.HasPrefix(l, "+OK") {
		t.Fatalf("FLUSHALL: %q %v", l, err)
	}
	if rep, _ := bounce(b, fwd.MailFrom); !strings.HasPrefix(rep, "550 5.7.1") {
		t.Errorf("bounce after the store lost its keys: %q, want 550 5.7.1", rep)
	}
}

func mustFreePort(t *testing.T) string {
	t.Helper()
	a, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A postsrsd 2.x in database mode with sqlite: its kv table, dumped with the
// documented sqlite3 command and imported, reverses (its vector D009).
func TestSRSImportPostsrsdSqlite(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "postsrsd.db")
	lt := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC).Add(21 * 24 * time.Hour).Unix()
	schema := fmt.Sprintf(`CREATE TABLE kv(k TEXT UNIQUE ON CONFLICT REPLACE, v TEXT, lt INTEGER);
INSERT INTO kv VALUES('VGHPH9PTQL6M4DU4VMQOVLUNAD3SUMNJ@1', 'alice@example.com', %d);
INSERT INTO kv VALUES('07FBRBCUV8THOQLIKCGAEDSFEKPRO28C@1', '0100018fb2c3d4e5-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d-000000@amazonses.com', %d);`, lt, lt)
	if out, err := exec.Command("sqlite3", db, schema).CombinedOutput(); err != nil {
		t.Fatalf("sqlite3: %v %s", err, out)
	}
	dump, err := exec.Command("sh", "-c", `sqlite3 -separator "$(printf '\t')" "$1" 'SELECT k, v, lt FROM kv'`, "sh", db).Output()
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "srs.db")
	imp := exec.Command(suite.binary, "srs", "import-postsrsd", "-store", store, "-now", "2024-06-01")
	imp.Stdin = strings.NewReader(string(dump))
	if out, err := imp.CombinedOutput(); err != nil || !strings.Contains(string(out), "imported 2") {
		t.Fatalf("import: %v %s", err, out)
	}
	secrets := filepath.Join(dir, "secrets")
	os.WriteFile(secrets, []byte("d4tab4se-s3cret\n"), 0o600)
	for addr, want := range map[string]string{
		"SRS0=Qb_j=ND=1=VGHPH9PTQL6M4DU4VMQOVLUNAD3SUMNJ@srs.db.example": "alice@example.com",
		"srs0=lbkc=nd=1=07fbrbcuv8thoqlikcgaedsfekpro28c@srs.db.example": "0100018fb2c3d4e5-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d-000000@amazonses.com",
	} {
		out, err := exec.Command(suite.binary, "srs", "reverse", "-secrets", secrets, "-domain", "srs.db.example", "-store", store,
			"-now", "2024-06-01", addr).Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("reverse %s: %q, %v; want %s", addr, out, err, want)
		}
	}
}
