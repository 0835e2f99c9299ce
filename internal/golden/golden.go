// Package golden compares what a test generated (a DSN, a TLS report, the
// header fields we add) with its golden file under testdata, byte for byte,
// so a change to generated mail shows in review as a diff of that file.
// go test PKG -update rewrites the files instead of comparing.
package golden

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata instead of comparing with them")

// Check fails t unless got is the content of the file at path (or, under
// -update, writes it there first).
func Check(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (-update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (-update rewrites it); got:\n%s", path, got)
	}
}
