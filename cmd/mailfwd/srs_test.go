package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runSRS(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCommand(t, func(a []string, o, e io.Writer) error { return srsRun(a, strings.NewReader(""), o, e) }, args)
}

// runCommand runs a subcommand as main would: its output, and stderr with
// the error message main prints, and the exit code.
func runCommand(t *testing.T, cmd func([]string, io.Writer, io.Writer) error, args []string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	err := cmd(args, &o, &e)
	var ee errExit
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ee):
		code = ee.code
		e.WriteString(ee.msg)
	default:
		t.Fatalf("%v: unexpected error %v", args, err)
	}
	return o.String(), e.String(), code
}

func TestSRSCommand(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	if err := os.WriteFile(secrets, []byte("tops3cr3t\nold\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldOnly := filepath.Join(dir, "old")
	if err := os.WriteFile(oldOnly, []byte("old\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func(mode, file string) []string {
		return []string{mode, "-secrets", file, "-domain", "srs.example.net"}
	}
	with := func(a []string, more ...string) []string { return append(append([]string{}, a...), more...) }
	fwd, rev := base("forward", secrets), base("reverse", secrets)

	// The old secret signs an address that the rotated file still verifies.
	oldAddr, _, code := runSRS(t, with(base("forward", oldOnly), "-now", "2024-02-20", "alice@example.com")...)
	if code != 0 {
		t.Fatalf("forward with the old secret: exit %d", code)
	}
	oldAddr = strings.TrimSpace(oldAddr)

	for _, c := range []struct {
		name   string
		args   []string
		out    string // exact stdout
		code   int
		stderr string // substring
	}{
		{"F01", with(fwd, "-now", "2024-03-01", "alice@example.com"), "SRS0=gIVm=KH=example.com=alice@srs.example.net\n", 0, ""},
		{"RFC 3339", with(fwd, "-now", "2024-03-01T00:00:00Z", "alice@example.com"), "SRS0=gIVm=KH=example.com=alice@srs.example.net\n", 0, ""},
		{"RFC 3339 offset", with(fwd, "-now", "2024-03-01T01:00:00+02:00", "alice@example.com"), "SRS0=" /*prefix*/, 0, ""},
		{"F27", with(fwd, "-now", "2024-03-01", "SRS0=abcd=KH=orig.example=user@fwd.example"),
			"SRS1=cp6q=fwd.example==abcd=KH=orig.example=user@srs.example.net\n", 0, ""},
		{"separator", with(fwd, "-now", "2024-03-01", "-separator", "+", "alice@example.com"), "SRS0+gIVm=KH=example.com=alice@srs.example.net\n", 0, ""},
		{"hash length", with(fwd, "-now", "2024-03-01", "-hash-length", "6", "alice@example.com"), "SRS0=gIVmRV=", 0, ""},
		{"own domain", with(fwd, "bob@SRS.example.net"), "bob@SRS.example.net\n", 0, ""},
		{"refused", with(fwd, "a@b@example.com"), "", 1, "malformed"},
		{"too long", with(fwd, strings.Repeat("x", 60)+"@example.com"), "", 1, "too long"},
		{"reverse", with(rev, "-now", "2024-03-21", "SRS0=gfkj=KH=example.com=alice@srs.example.net"), "alice@example.com\n", 0, ""},
		{"reverse rotated", with(rev, "-now", "2024-03-01", oldAddr), "alice@example.com\n", 0, ""},
		{"reverse SRS1", with(rev, "SRS1=Eb9W=fwd.example==abcd=KH=orig.example=user@srs.example.net"),
			"SRS0=abcd=KH=orig.example=user@fwd.example\n", 0, ""},
		{"expired", with(rev, "-now", "2024-03-23", "SRS0=gfkj=KH=example.com=alice@srs.example.net"), "", 1, "expired"},
		{"max age", with(rev, "-now", "2024-03-23", "-max-age", "30", "SRS0=gfkj=KH=example.com=alice@srs.example.net"), "alice@example.com\n", 0, ""},
		{"bad hash", with(rev, "-now", "2024-03-01", "SRS0=gfkk=KH=example.com=alice@srs.example.net"), "", 1, "invalid hash"},
		{"hash min", with(rev, "-now", "2024-03-01", "-hash-min", "3", "SRS0=gfk=KH=example.com=alice@srs.example.net"), "alice@example.com\n", 0, ""},
		{"malformed", with(rev, "SRS0=gfkj@srs.example.net"), "", 1, "malformed"},
		{"not ours", with(rev, "SRS0=gfkj=KH=example.com=alice@other.example"), "", 1, "not an SRS address"},
		{"not SRS", with(rev, "postmaster@srs.example.net"), "", 1, "not an SRS address"},
		{"legacy note", with(rev, "-now", "2024-03-21", "SRS0=gfkj=KH=example.com=alice@srs.example.net"), "alice@example.com\n", 0, "legacy hash"},
		{"legacy after the cut-over", with(rev, "-now", "2024-03-21", "-legacy-until", "2024-02-29", "SRS0=gfkj=KH=example.com=alice@srs.example.net"), "", 1, "invalid hash"},
		{"legacy none", with(rev, "-now", "2024-03-21", "-legacy-until", "none", "SRS0=gfkj=KH=example.com=alice@srs.example.net"), "", 1, "invalid hash"},
		{"v2 re-split", with(rev, "-now", "2024-03-01", "SRS0=gIVm=KH=example.co=malice@srs.example.net"), "", 1, "invalid hash"},
		{"bad -legacy-until", with(rev, "-legacy-until", "soon", "a@b"), "", 2, "-legacy-until"},
		{"bad secrets file", with(base("forward", empty), "alice@example.com"), "", 1, "no secret"},
		{"missing secrets file", with(base("forward", filepath.Join(dir, "nope")), "alice@example.com"), "", 1, "nope"},
		{"no address", fwd, "", 2, "ADDRESS"},
		{"two addresses", with(fwd, "a@b", "c@d"), "", 2, "ADDRESS"},
		{"no domain", []string{"forward", "-secrets", secrets, "a@b"}, "", 2, "-domain"},
		{"bad -now", with(fwd, "-now", "yesterday", "a@b"), "", 2, "-now"},
		{"bad separator", with(fwd, "-separator", "*", "a@b"), "", 2, "separator"},
		{"bad hash length", with(fwd, "-hash-length", "28", "a@b"), "", 2, "hash length"},
		{"hash min over length", with(fwd, "-hash-length", "3", "a@b"), "", 2, "minimum hash length"},
		{"zero max age", with(fwd, "-max-age", "0", "a@b"), "", 2, "at least 1"},
		{"no mode", []string{}, "", 2, "forward, reverse or import-postsrsd"},
		{"bad mode", []string{"sideways"}, "", 2, "forward, reverse or import-postsrsd"},
	} {
		out, stderr, code := runSRS(t, c.args...)
		okOut := out == c.out || (c.out != "" && !strings.HasSuffix(c.out, "\n") && strings.HasPrefix(out, c.out))
		if code != c.code || !okOut || !strings.Contains(stderr, c.stderr) || (c.code != 0 && out != "") {
			t.Errorf("%s: srs %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr ~%q",
				c.name, c.args, code, out, stderr, c.code, c.out, c.stderr)
		}
	}
}

// A long sender gets the database form through a store, and a postsrsd 2.x
// sqlite database, dumped and imported, keeps reversing (its vector D009).
func TestSRSCommandStore(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	os.WriteFile(secrets, []byte("tops3cr3t\n"), 0o600)
	store := filepath.Join(dir, "srs.db")
	long := "0100018b2f4e7c1a-5d6e7f80-1a2b-4c3d-9e8f-0a1b2c3d4e5f-000000@amazonses.com"
	args := func(mode string, more ...string) []string {
		return append([]string{mode, "-secrets", secrets, "-domain", "srs.example.net", "-store", store}, more...)
	}
	out, stderr, code := runSRS(t, args("forward", long)...)
	out = strings.TrimSpace(out)
	if code != 0 || strings.IndexByte(out, '@') != 47 || !strings.Contains(stderr, "database form") {
		t.Fatalf("forward of a long sender: exit %d, %q, %q", code, out, stderr)
	}
	back, _, code := runSRS(t, args("reverse", out)...)
	if code != 0 || strings.TrimSpace(back) != long {
		t.Fatalf("reverse %s: exit %d, %q", out, code, back)
	}

	// postsrsd's kv table as sqlite3 prints it; lt = forward time + 21 days
	lt := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC).Add(21 * 24 * time.Hour).Unix()
	dump := fmt.Sprintf("VGHPH9PTQL6M4DU4VMQOVLUNAD3SUMNJ@1\talice@example.com\t%d\n", lt)
	var o, e bytes.Buffer
	err := srsRun([]string{"import-postsrsd", "-store", store, "-now", "2024-06-01"}, strings.NewReader(dump), &o, &e)
	if err != nil || !strings.Contains(o.String(), "imported 1") {
		t.Fatalf("import: %v, %q %q", err, o.String(), e.String())
	}
	dsec := filepath.Join(dir, "dsecrets")
	os.WriteFile(dsec, []byte("d4tab4se-s3cret\n"), 0o600)
	got, stderr, code := runSRS(t, "reverse", "-secrets", dsec, "-domain", "srs.db.example", "-store", store, "-now", "2024-06-01",
		"SRS0=Qb_j=ND=1=VGHPH9PTQL6M4DU4VMQOVLUNAD3SUMNJ@srs.db.example")
	if code != 0 || got != "alice@example.com\n" {
		t.Errorf("postsrsd's database address after the import: exit %d, %q, %q", code, got, stderr)
	}
	bad := []string{"import-postsrsd", "-store", store}
	if err := srsRun(bad, strings.NewReader("not a row\n"), &o, &e); err == nil {
		t.Error("a bad dump line imported")
	}
}

func TestParseSRSNow(t *testing.T) {
	d, err := parseSRSNow("2024-03-01")
	if err != nil || d.Unix() != 1709294400 { // 2024-03-01T12:00:00Z
		t.Errorf("date: %v %v", d, err)
	}
	r, err := parseSRSNow("2024-03-01T23:59:59Z")
	if err != nil || r.Unix() != 1709337599 {
		t.Errorf("RFC 3339: %v %v", r, err)
	}
	if _, err := parseSRSNow("03/01/2024"); err == nil {
		t.Error("bad form accepted")
	}
}
