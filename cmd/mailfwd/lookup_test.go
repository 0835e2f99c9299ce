package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runLookup(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCommand(t, lookup, args)
}

func TestLookupCommand(t *testing.T) {
	dir := t.TempDir()
	ldif := `dn: cn=a,dc=x
mail: fan@company.com
mailForwardingAddress: one@gmail.com
mailForwardingAddress: sales@company.com

dn: cn=loop1,dc=x
mail: loop1@company.com
mailForwardingAddress: loop2@company.com

dn: cn=loop2,dc=x
mail: loop2@company.com
mailForwardingAddress: loop1@company.com

dn: cn=central,dc=x
mail: central@company.com
mailAlternateAddress: sales@company.com
mailForwardingAddress: central@company.com
`
	if err := os.WriteFile(filepath.Join(dir, "dir.ldif"), []byte(ldif), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mailfwd.yaml")
	os.WriteFile(cfg, []byte("relay_domains: [company.com]\ndirectory:\n  ldif: {file: dir.ldif}\n"+
		"routing:\n  recursion_limit: 20\n  domain_rewrites: {old.test: company.com}\ndelivery:\n  next_hop: 127.0.0.1:1\n"), 0o600)
	down := filepath.Join(dir, "down.yaml")
	os.WriteFile(down, []byte("relay_domains: [company.com]\ndirectory:\n  ldap:\n    servers: [ldap://127.0.0.1:1]\n"+
		"    search_base: dc=x\n    timeout: 1s\ndelivery:\n  next_hop: 127.0.0.1:1\n"), 0o600)

	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   string // exact, unless contains is set
		contains []string
	}{
		{"fan-out, one per line", []string{"-config", cfg, "fan@company.com"}, 0, "one@gmail.com\ncentral@company.com\n", nil},
		{"plus address", []string{"-config", cfg, "sales+x@company.com"}, 0, "central+x@company.com\n", nil},
		{"domain rewrite", []string{"-config", cfg, "any.one@old.test"}, 0, "any.one@company.com\n", nil},
		{"not found prints nothing", []string{"-config", cfg, "nobody@company.com"}, 1, "", nil},
		{"loop is a temporary failure", []string{"-config", cfg, "loop1@company.com"}, 75, "", nil},
		{"directory down", []string{"-config", down, "a@company.com"}, 75, "", nil},
		{"embedded default", []string{"old.address@domain.com"}, 0, "new.address@domain.ro\n", nil},
		{"worst code wins", []string{"-config", cfg, "fan@company.com", "nobody@company.com"}, 1, "one@gmail.com\ncentral@company.com\n", nil},
		// the relay's parser: what RCPT refuses (501) is refused here too
		{"unquoted space: 501 at RCPT", []string{"-config", cfg, "john doe@company.com"}, 1, "", nil},
		{"two @", []string{"-config", cfg, "a@b@company.com"}, 1, "", nil},
		{"angle brackets as in RCPT", []string{"-config", cfg, "<fan@company.com>"}, 0, "one@gmail.com\ncentral@company.com\n", nil},
		{"quoted local part", []string{"-config", cfg, `"sales"@company.com`}, 0, "central@company.com\n", nil},
		{"tree", []string{"-config", cfg, "-v", "fan@company.com"}, 0, "", []string{
			"fan@company.com: found", "key fan@company.com", `dn="cn=a,dc=x" attr=mailForwardingAddress`,
			"one@gmail.com: not in the directory: final", "(maps to itself: delivered)", "→ central@company.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runLookup(t, tt.args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d (stderr %q)", code, tt.code, errOut)
			}
			if tt.contains == nil && out != tt.stdout {
				t.Fatalf("stdout %q, want %q", out, tt.stdout)
			}
			for _, c := range tt.contains {
				if !strings.Contains(out, c) {
					t.Errorf("stdout lacks %q:\n%s", c, out)
				}
			}
			if code == 75 && errOut == "" {
				t.Error("temporary failure without a reason on stderr")
			}
		})
	}

	out, _, code := runLookup(t, "-config", cfg, "-json", "fan@company.com", "nobody@company.com", "loop1@company.com")
	if code != 75 {
		t.Fatalf("json exit %d", code)
	}
	var got []lookupResult
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var r lookupResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("bad JSON line %q: %v", l, err)
		}
		got = append(got, r)
	}
	if len(got) != 3 || got[0].Status != "found" || len(got[0].Recipients) != 2 || got[1].Status != "not_found" ||
		got[2].Status != "temporary_failure" || got[2].Error == "" {
		t.Fatalf("json results %+v", got)
	}
}
