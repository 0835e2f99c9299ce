package config

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Every key in the code is in docs/configuration.md, and every key there
// exists in the code.
func TestConfigurationDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_.]+)` \\|")
	documented := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		documented[m[1]] = true
	}
	code := map[string]bool{}
	for _, k := range Keys() {
		code[k] = true
	}
	var missing, extra []string
	for k := range code {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !code[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("keys in the code but not in docs/configuration.md: %s", strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		t.Errorf("keys in docs/configuration.md that the code does not have: %s", strings.Join(extra, ", "))
	}
	if len(code) < 50 {
		t.Fatalf("only %d keys found by reflection: Keys() is broken", len(code))
	}
}
