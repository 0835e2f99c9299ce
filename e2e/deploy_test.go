//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The systemd unit passes systemd-analyze verify without a warning (with
// the binary path pointed at the test build).
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("../deploy/systemd/mailfwd.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=mailfwd", "ProtectSystem=strict", "ReadWritePaths=/var/spool/mailfwd",
		"NoNewPrivileges=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "ExecReload=/bin/kill -HUP $MAINPID"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("unit lacks %q", want)
		}
	}
	p := filepath.Join(t.TempDir(), "mailfwd.service")
	os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/mailfwd", suite.binary)), 0o644)
	out, err := exec.Command("systemd-analyze", "verify", p).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The compose file validates with Debian's docker-compose and has what the
// stack needs: health checks and start order.
func TestComposeFile(t *testing.T) {
	cmd := exec.Command("docker-compose", "-f", "docker-compose.yml", "config")
	cmd.Dir = "../deploy"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	for _, want := range []string{"dirsrv:", "dirsrv-seed:", "postfix:", "mailfwd:", "service_healthy",
		"service_completed_successfully", "healthcheck:", "published: 25", "target: 2525", "/var/spool/mailfwd"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("resolved compose config lacks %q", want)
		}
	}
	// The config the stack mounts is valid for this binary.
	if out, err := exec.Command(suite.binary, "check-config", "-config", "../deploy/compose/mailfwd.yaml").CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "no such file") {
		t.Fatalf("compose mailfwd.yaml: %v\n%s", err, out)
	}
}

// The compose topology, natively: the stack's own mailfwd.yaml and secrets
// (service names replaced by loopback addresses, paths by temp dirs) in
// front of a real 389-DS holding the same LDIF and a real Postfix; the
// seed scenarios pass.
func TestComposeTopologyNative(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"ldap.secret", "srs.secrets"} {
		b, err := os.ReadFile(filepath.Join("../deploy/compose", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o600)
	}
	cfg, err := os.ReadFile("../deploy/compose/mailfwd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := freePort()
	admin, _ := freePort()
	native := strings.NewReplacer(
		`"0.0.0.0:2525"`, fmt.Sprintf("%q", addr),
		`"127.0.0.1:9925"`, fmt.Sprintf("%q", admin),
		"ldap://dirsrv:3389", suite.servers["DS_URL"],
		`"postfix:25"`, fmt.Sprintf("%q", suite.servers["PF_SMTP"]),
		"/etc/mailfwd/", dir+"/",
		"/var/spool/mailfwd", filepath.Join(dir, "spool"),
	).Replace(string(cfg))
	cfgPath := filepath.Join(dir, "mailfwd.yaml")
	os.WriteFile(cfgPath, []byte(native), 0o600)
	if out, err := exec.Command(suite.binary, "check-config", "-config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("check-config: %v\n%s\n%s", err, out, native)
	}
	logf, _ := os.Create(filepath.Join(dir, "log"))
	cmd := exec.Command(suite.binary, "serve", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	waitListening(t, addr)

	tok := suite.token(t)
	sendSwaks(t, addr, tok, "old.address@domain.com")
	suite.arrived(t, tok, map[string]int{"new.address@domain.ro": 1}, 30*time.Second)
	tok = suite.token(t)
	sendSwaks(t, addr, tok, "internal.user@company.com")
	fwd := suite.arrived(t, tok, map[string]int{"external.user@gmail.com": 1}, 30*time.Second)[0]
	if !strings.HasPrefix(fwd.MailFrom, "SRS0=") || !strings.HasSuffix(fwd.MailFrom, "@srs.example.net") {
		t.Errorf("external forward sent from <%s>, want the stack's SRS domain", fwd.MailFrom)
	}
	tok = suite.token(t)
	sendSwaks(t, addr, tok, "sales@company.com", "info@company.com", "support@company.com")
	suite.arrived(t, tok, map[string]int{"central@company.com": 1}, 30*time.Second)
	out, _ := swaks(t, addr, "--to", "nobody@company.com", "--quit-after", "RCPT")
	if got := replyTo(out, "RCPT TO:"); !strings.HasPrefix(got, "550 5.1.1") {
		t.Fatalf("unknown recipient: %q", got)
	}
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for i := 0; ; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if i > 250 {
			t.Fatalf("nothing listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
