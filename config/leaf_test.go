package config

import (
	"os/exec"
	"strings"
	"testing"
)

// config is a leaf: it imports no package of ours, and only the wiring in
// cmd/mailfwd imports it (tests included), so the packages that do the
// work take plain values and the config's shape stays one package's
// business.
func TestConfigIsALeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-f",
		`{{.ImportPath}}|{{join .Imports " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}`, "-tags", "e2e powercut", "mailfwd/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, rest, _ := strings.Cut(line, "|")
		imports, testImports, _ := strings.Cut(rest, "|")
		seen++
		if pkg == "mailfwd/config" {
			for _, imp := range strings.Fields(imports) {
				if imp == "mailfwd" || strings.HasPrefix(imp, "mailfwd/") {
					t.Errorf("config imports %s: config is data, the wiring (cmd/mailfwd/wire.go) builds objects", imp)
				}
			}
			continue
		}
		if pkg == "mailfwd/cmd/mailfwd" {
			continue
		}
		for _, imp := range strings.Fields(imports + " " + testImports) {
			if imp == "mailfwd/config" {
				t.Errorf("%s imports mailfwd/config: only cmd/mailfwd may (take plain values instead)", pkg)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list saw only %d packages", seen)
	}
}
