package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "relay_domains: [company.com]\ndirectory:\n  ldif: {}\ndelivery:\n  next_hop: 127.0.0.1:10025\n")
	misspelt := write("bad.yaml", "relay_domains: [company.com]\ndirectory:\n  ldif: {}\ndelivery:\n  next_hop: 127.0.0.1:10025\n  retry_mni: 5s\n")
	missingLDIF := write("noldif.yaml", "relay_domains: [company.com]\ndirectory:\n  ldif: {file: nowhere.ldif}\ndelivery:\n  next_hop: 127.0.0.1:10025\n")
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, ""}, // the embedded default
		{[]string{"-config", good}, ""},
		{[]string{"-config", misspelt}, `line 6: unknown key "retry_mni"`},
		{[]string{"-config", missingLDIF}, "nowhere.ldif"},
		{[]string{"-config", filepath.Join(dir, "absent.yaml")}, "no such file"},
	}
	for _, tt := range tests {
		err := checkConfig(tt.args)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("check-config %v: %v", tt.args, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("check-config %v: error %v, want one containing %q", tt.args, err, tt.wantErr)
		}
	}
}
