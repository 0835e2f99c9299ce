package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
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

// Every command main dispatches is in the package doc and in the usage
// text, and neither lists one that does not exist.
func TestCommandsDocumented(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var commands []string
	ast.Inspect(f, func(n ast.Node) bool {
		if cc, ok := n.(*ast.CaseClause); ok {
			for _, e := range cc.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if name, _ := strconv.Unquote(lit.Value); !strings.HasPrefix(name, "-") && name != "help" {
						commands = append(commands, name)
					}
				}
			}
		}
		return true
	})
	if len(commands) < 8 {
		t.Fatalf("found only %q in main's switch", commands)
	}
	doc := f.Doc.Text()
	for _, c := range commands {
		if !strings.Contains(doc, "mailfwd "+c+" ") {
			t.Errorf("the package doc does not list %q", c)
		}
		if !strings.Contains(usage, "\n  "+c+" ") {
			t.Errorf("the usage text does not list %q", c)
		}
	}
	listed := regexp.MustCompile(`(?m)^\s*mailfwd ([a-z-]+)`).FindAllStringSubmatch(doc, -1)
	listed = append(listed, regexp.MustCompile(`(?m)^  ([a-z-]+) `).FindAllStringSubmatch(usage, -1)...)
	for _, m := range listed {
		if !slices.Contains(commands, m[1]) {
			t.Errorf("%q is documented but main has no such command", m[1])
		}
	}
}
