//go:build e2e

package e2e

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
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

func writeCert(t *testing.T, certFile, keyFile, cn string) {
	t.Helper()
	cert, key := selfSignedCA(t, cn, []string{cn}, nil)
	os.WriteFile(certFile, cert, 0o600)
	os.WriteFile(keyFile, key, 0o600)
}

// rawSession is a line-level SMTP client.
type rawSession struct {
	c net.Conn
	r *bufio.Reader
}

func rawDial(t *testing.T, addr string) *rawSession {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	s := &rawSession{c: c, r: bufio.NewReader(c)}
	s.reply()
	return s
}

func (s *rawSession) reply() string {
	var last string
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return "EOF"
		}
		last = strings.TrimRight(l, "\r\n")
		if len(l) < 4 || l[3] != '-' {
			return last
		}
	}
}

func (s *rawSession) cmd(line string) string {
	fmt.Fprintf(s.c, "%s\r\n", line)
	return s.reply()
}

// servedCert returns the SHA-256 of the certificate the relay presents.
func servedCert(t *testing.T, addr string) string {
	t.Helper()
	s := rawDial(t, addr)
	defer s.c.Close()
	s.cmd("EHLO probe.test")
	if r := s.cmd("STARTTLS"); !strings.HasPrefix(r, "220") {
		t.Fatalf("STARTTLS: %s", r)
	}
	tc := tls.Client(s.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(tc.ConnectionState().PeerCertificates[0].Raw))
}

// SIGHUP re-reads the config and the certificate without dropping an open
// session; SIGTERM lets an open transaction finish, then exits cleanly.
func TestSignals(t *testing.T) {
	dir := t.TempDir()
	seed, err := os.ReadFile("../deploy/seed.ldif")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "dir.ldif"), seed, 0o600)
	writeCert(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "one.test")
	addr, _ := freePort()
	cfg := func(domains string) {
		writeConfig(t, filepath.Join(dir, "mailfwd.yaml"), "signals/mailfwd.yaml", vars{"Listen": addr, "Domains": domains, "NextHop": suite.servers["SINK_ADDR"]})
	}
	cfg("company.com")
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd := exec.Command(suite.binary, "serve", "-config", filepath.Join(dir, "mailfwd.yaml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() { cmd.Process.Kill() }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("relay did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	logText := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }

	certBefore := servedCert(t, addr)
	open := rawDial(t, addr) // a session that lives across the reload
	open.cmd("EHLO open.test")
	open.cmd("MAIL FROM:<alice@example.org>")
	if r := open.cmd("RCPT TO:<new.address@domain.ro>"); !strings.HasPrefix(r, "554 5.7.1") {
		t.Fatalf("domain.ro before reload: %s", r)
	}

	cfg("company.com, domain.ro")
	writeCert(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), "two.test")
	cmd.Process.Signal(syscall.SIGHUP)
	for i := 0; !strings.Contains(logText(), "msg=reloaded"); i++ {
		if i > 100 {
			t.Fatalf("no reload logged:\n%s", logText())
		}
		time.Sleep(20 * time.Millisecond)
	}
	fresh := rawDial(t, addr)
	fresh.cmd("EHLO fresh.test")
	fresh.cmd("MAIL FROM:<alice@example.org>")
	if r := fresh.cmd("RCPT TO:<new.address@domain.ro>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("domain.ro after reload: %s", r)
	}
	fresh.cmd("QUIT")
	if certAfter := servedCert(t, addr); certAfter == certBefore {
		t.Fatal("certificate not reloaded")
	}
	// The old session survived the reload.
	if r := open.cmd("RCPT TO:<sales@company.com>"); !strings.HasPrefix(r, "250") {
		t.Fatalf("open session after reload: %s", r)
	}

	// SIGTERM with a transaction in progress: it completes, then we exit.
	tok := suite.token(t)
	if r := open.cmd("DATA"); !strings.HasPrefix(r, "354") {
		t.Fatalf("DATA: %s", r)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("still accepting connections after SIGTERM")
	}
	if r := open.cmd("Subject: " + tok + "\r\n\r\nfinished after SIGTERM\r\n."); !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("transaction in progress at SIGTERM: %s", r)
	}
	open.cmd("QUIT")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logText())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("no exit within the shutdown bound")
	}
	// The spool is consistent: no temp files; the message is there or was
	// delivered before the exit.
	tmps := spoolGlob(filepath.Join(dir, "spool", "msg"), "*.tmp")
	if len(tmps) > 0 {
		t.Fatalf("temp files left after a clean exit: %v", tmps)
	}
	envs := spoolGlob(filepath.Join(dir, "spool", "msg"), "*.msg")
	if len(envs) == 0 {
		suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 10*time.Second)
	}
}
