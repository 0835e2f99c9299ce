//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// LDAPS and StartTLS to the real 389-DS, with its test CA; without the CA a
// verifying client must refuse the server (a temporary failure, exit 75).
func TestLDAPTLS(t *testing.T) {
	for _, k := range []string{"DS_LDAPS_URL", "DS_CA_CERT"} {
		if servers[k] == "" {
			t.Fatalf("start-389ds.sh did not print %s", k)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("postfix-ldap-secret"), 0o600)
	plain := strings.Replace(servers["DS_URL"], "127.0.0.1", "localhost", 1)
	tests := []struct {
		name, server, extra string
		code                int
	}{
		{"ldaps with CA", servers["DS_LDAPS_URL"], "ca_file: " + servers["DS_CA_CERT"], 0},
		{"starttls with CA", plain, "start_tls: true\n    ca_file: " + servers["DS_CA_CERT"], 0},
		{"ldaps without CA is refused", servers["DS_LDAPS_URL"], "tls_require_cert: true", 75},
		{"starttls without CA is refused", plain, "start_tls: true", 75},
		{"ldaps without verification (tls_require_cert: false)", servers["DS_LDAPS_URL"], "tls_require_cert: false", 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			os.WriteFile(cfg, []byte(fmt.Sprintf(`relay_domains: [company.com]
directory:
  ldap:
    servers: [%q]
    bind_dn: uid=postfix-ldap,ou=system,dc=example,dc=net
    bind_password_file: pw
    search_base: dc=example,dc=net
    timeout: 3s
    %s
delivery:
  next_hop: 127.0.0.1:1
`, tt.server, tt.extra)), 0o600)
			cmd := exec.Command(binary, "lookup", "-config", cfg, "sales@company.com")
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != tt.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tt.code, out)
			}
			if tt.code == 0 && strings.TrimSpace(string(out)) != "central@company.com" {
				t.Fatalf("output %q", out)
			}
		})
	}
}
