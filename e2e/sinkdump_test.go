//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The testdata files are real smtp-sink (Postfix 3.7.11) captures:
//   - sink-dump-postfix.txt: -d file, swaks -> throwaway Postfix -> smtp-sink,
//     one transaction with two recipients (Postfix adds ORCPT).
//   - sink-dump-params.txt: -d file, hand-made SMTP session: null sender with
//     ESMTP parameters, a quoted local part holding '>', a folded header, a
//     dot-stuffed line.
//   - sink-dump-multi.txt: -D file, the same session's two transactions appended.

func TestReadSinkDumps(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"sink-dump-postfix.txt", "sink-dump-params.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// an in-progress transaction (file created at MAIL FROM, nothing flushed
	// yet) and one that has not reached its end are skipped
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	partial := "X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nX-Mail-Args: <a@b>\nX-Rcpt-Args: <c@d>\n"
	if err := os.WriteFile(filepath.Join(dir, "partial"), []byte(partial), 0o644); err != nil {
		t.Fatal(err)
	}

	dumps, err := ReadSinkDumps(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(dumps) != 2 {
		t.Fatalf("got %d dumps, want 2: %+v", len(dumps), dumps)
	}
	byFile := map[string]Dumped{}
	for _, d := range dumps {
		byFile[filepath.Base(d.File)] = d
	}

	pf := byFile["sink-dump-postfix.txt"]
	if pf.MailFrom != "a@example.org" || pf.MailArgs != "<a@example.org>" {
		t.Errorf("postfix: MailFrom %q MailArgs %q", pf.MailFrom, pf.MailArgs)
	}
	if want := []string{"new.address@domain.ro", "external.user@gmail.com"}; !reflect.DeepEqual(pf.Rcpts, want) {
		t.Errorf("postfix: Rcpts %q, want %q", pf.Rcpts, want)
	}
	if pf.RcptArgs[0] != "<new.address@domain.ro> ORCPT=rfc822;new.address@domain.ro" {
		t.Errorf("postfix: RcptArgs[0] %q", pf.RcptArgs[0])
	}
	if pf.ClientAddr != "127.0.0.1" || pf.Helo != "postfix.test" || pf.ID != "5896bd70" {
		t.Errorf("postfix: ClientAddr %q Helo %q ID %q", pf.ClientAddr, pf.Helo, pf.ID)
	}
	if got := pf.Header.Get("Subject"); got != "chain test" {
		t.Errorf("postfix: Subject %q", got)
	}
	// the sink's own Received: is not part of the message; Postfix's is
	if rc := pf.Header.Values("Received"); len(rc) != 1 ||
		rc[0] != "from vm (localhost [127.0.0.1]) by postfix.test (Postfix) with ESMTP id 9E0BE9844BC; Tue, 24 Nov 2026 21:29:18 +0000 (UTC)" {
		t.Errorf("postfix: Received %q", rc)
	}
	if got, want := string(pf.Body), "hello\n..dots\n.single\n\n\n"; got != want {
		t.Errorf("postfix: Body %q, want %q", got, want)
	}
	if string(pf.Raw) != pf.RawHeader+"\n"+string(pf.Body) {
		t.Errorf("postfix: Raw is not RawHeader + blank line + Body")
	}

	pa := byFile["sink-dump-params.txt"]
	if pa.MailFrom != "" || pa.MailArgs != "<> BODY=8BITMIME SIZE=100" {
		t.Errorf("params: MailFrom %q MailArgs %q", pa.MailFrom, pa.MailArgs)
	}
	if want := []string{"One@Company.com", `"odd>local"@domain.ro`}; !reflect.DeepEqual(pa.Rcpts, want) {
		t.Errorf("params: Rcpts %q, want %q", pa.Rcpts, want)
	}
	if pa.Helo != "client.test" || pa.ID != "66753a8c" {
		t.Errorf("params: Helo %q ID %q", pa.Helo, pa.ID)
	}
	if got := pa.Header.Get("X-Test"); got != "a folded" {
		t.Errorf("params: X-Test %q", got)
	}
	if pa.RawHeader != "Subject: first\nX-Test: a\n folded\n" {
		t.Errorf("params: RawHeader %q", pa.RawHeader)
	}
	if got, want := string(pa.Body), "line1\n.dot\nlast\n"; got != want {
		t.Errorf("params: Body %q, want %q", got, want)
	}

	counts := CountRcpts(dumps)
	want := map[string]int{
		"new.address@domain.ro":   1,
		"external.user@gmail.com": 1,
		"one@company.com":         1,
		`"odd>local"@domain.ro`:   1,
	}
	if !reflect.DeepEqual(counts, want) {
		t.Errorf("CountRcpts = %v, want %v", counts, want)
	}
}

func TestReadSinkDumpsMulti(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "sink-dump-multi.txt"))
	if err != nil {
		t.Fatal(err)
	}
	dumps, err := ParseSinkDump(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(dumps) != 2 {
		t.Fatalf("got %d transactions, want 2", len(dumps))
	}
	if dumps[0].MailFrom != "" || dumps[0].Header.Get("Subject") != "first" {
		t.Errorf("first: MailFrom %q Subject %q", dumps[0].MailFrom, dumps[0].Header.Get("Subject"))
	}
	d := dumps[1]
	if d.MailFrom != "b@example.org" || !reflect.DeepEqual(d.Rcpts, []string{"two@gmail.com", "one@company.com"}) {
		t.Errorf("second: MailFrom %q Rcpts %q", d.MailFrom, d.Rcpts)
	}
	// a body line that looks like a record does not start a transaction
	if got, want := string(d.Body), "body2 with X-Client-Addr: no\n\nX-Client-Addr: 1.2.3.4\n\n"; got != want {
		t.Errorf("second: Body %q, want %q", got, want)
	}
	if c := CountRcpts(dumps); c["one@company.com"] != 2 || c["two@gmail.com"] != 1 {
		t.Errorf("CountRcpts = %v", c)
	}
	// a -D file whose last transaction is still being appended
	cut := data[:len(data)-40]
	if dumps, err := ParseSinkDump(cut); err != nil || len(dumps) != 1 {
		t.Errorf("truncated -D file: %d transactions, err %v; want 1, nil", len(dumps), err)
	}
}
