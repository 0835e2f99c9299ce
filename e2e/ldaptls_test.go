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
		if suite.servers[k] == "" {
			t.Fatalf("start-389ds.sh did not print %s", k)
		}
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "pw"), []byte("postfix-ldap-secret"), 0o600)
	plain := strings.Replace(suite.servers["DS_URL"], "127.0.0.1", "localhost", 1)
	tests := []struct {
		name, server, extra string
		code                int
	}{
		{"ldaps with CA", suite.servers["DS_LDAPS_URL"], "ca_file: " + suite.servers["DS_CA_CERT"], 0},
		{"starttls with CA", plain, "start_tls: true\n    ca_file: " + suite.servers["DS_CA_CERT"], 0},
		{"ldaps without CA is refused", suite.servers["DS_LDAPS_URL"], "tls_require_cert: true", 75},
		{"starttls without CA is refused", plain, "start_tls: true", 75},
		{"ldaps without verification (tls_require_cert: false)", suite.servers["DS_LDAPS_URL"], "tls_require_cert: false", 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := writeConfig(t, filepath.Join(dir, fmt.Sprintf("c%d.yaml", i)), "ldaptls/mailfwd.yaml", vars{"Server": tt.server, "TLS": tt.extra})
			cmd := exec.Command(suite.binary, "lookup", "-config", cfg, "sales@company.com")
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
