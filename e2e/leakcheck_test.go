//go:build e2e && leakcheck

package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLeakcheckFailure is the suite failing on purpose, for
// scripts/leakcheck.sh, which then looks for what the run left running. It
// fails the way real tests have: with a relay and a Postfix of its own up
// and no cleanup registered for them. LEAKCHECK_MODE=interrupt then waits to
// be interrupted (no TestMain teardown runs at all). It is built only with
// the leakcheck tag, never as part of the suite.
func TestLeakcheckFailure(t *testing.T) {
	mode := os.Getenv("LEAKCHECK_MODE")
	if mode != "fail" && mode != "interrupt" {
		t.Fatalf("LEAKCHECK_MODE=%q: want fail or interrupt (run through scripts/leakcheck.sh)", mode)
	}
	if _, err := suite.startMailfwd(filepath.Join(suite.root, "..", "leaked-relay")); err != nil {
		t.Fatal(err)
	}
	if _, err := suite.runScriptVars("start-postfix.sh", "PF_DIR="+suite.serverDir("postfix-leaked"), "PF_PORT=10030",
		"PF_HOSTNAME=postfix-leaked.test"); err != nil {
		t.Fatal(err)
	}
	if mode == "interrupt" {
		// the script waits for this file, then sends SIGINT
		if err := os.WriteFile(filepath.Join(suite.root, "..", "hanging"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Minute)
	}
	t.Fatal("deliberate failure, with a relay and a Postfix of its own still running")
}
