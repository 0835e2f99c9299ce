package directory

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"mailfwd/routing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseLDIF(t *testing.T) {
	type attrs = map[string][]string
	tests := []struct {
		name string
		in   string
		want []Entry
	}{
		{name: "empty", in: "", want: nil},
		{name: "only comments and blank lines", in: "# a\n\n\n# b\n", want: nil},
		{
			name: "one entry, attribute names lower-cased, values as written",
			in:   "dn: cn=A,dc=x\nobjectClass: top\nobjectClass: mailRecipient\nmail: Some.One@X.com\nmailForwardingAddress: Other@Y.org\n",
			want: []Entry{{DN: "cn=A,dc=x", Attrs: attrs{
				"objectclass":           {"top", "mailRecipient"},
				"mail":                  {"Some.One@X.com"},
				"mailforwardingaddress": {"Other@Y.org"},
			}}},
		},
		{
			name: "version line, comments, several blank lines, no final newline",
			in:   "version: 1\n\n# first\ndn: cn=a\n# inside a record\nmail: a@x.com\n\n\n\n# second\ndn: cn=b\nmail: b@x.com",
			want: []Entry{
				{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}}},
				{DN: "cn=b", Attrs: attrs{"mail": {"b@x.com"}}},
			},
		},
		{
			// RFC 2849: version-spec 1*SEP record, so one line break is enough.
			name: "version line directly followed by dn",
			in:   "version: 1\ndn: cn=a\nmail: a@x.com\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}}}},
		},
		{
			name: "folded lines",
			in:   "dn: cn=a,\n dc=x\nmail: long.na\n me@x.com\ndescription: two\n  words and\n\n more\n",
			// the blank line ends the record, so " more" would be a
			// continuation without a line: keep it out of this case.
			want: nil,
		},
		{
			name: "CRLF line endings",
			in:   "dn: cn=a\r\nmail: a@x.com\r\nmailForwardingAddress: b@x.com\r\n\r\ndn: cn=b\r\nmail: c@x.com\r\n",
			want: []Entry{
				{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}, "mailforwardingaddress": {"b@x.com"}}},
				{DN: "cn=b", Attrs: attrs{"mail": {"c@x.com"}}},
			},
		},
		{
			name: "CRLF with folding",
			in:   "dn: cn=a\r\nmail: a@\r\n x.com\r\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}}}},
		},
		{
			name: "base64 values and dn",
			in:   "dn:: " + b64("cn=Jürgen,dc=x") + "\nmail:: " + b64("jürgen@bücher.example") + "\ndescription:: " + b64(" leading space, trailing: ") + "\n",
			want: []Entry{{DN: "cn=Jürgen,dc=x", Attrs: attrs{
				"mail":        {"jürgen@bücher.example"},
				"description": {" leading space, trailing: "},
			}}},
		},
		{
			name: "folded base64",
			in:   "dn: cn=a\nmail:: " + b64("a.rather.long.address@example.com")[:10] + "\n " + b64("a.rather.long.address@example.com")[10:] + "\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a.rather.long.address@example.com"}}}},
		},
		{
			name: "spaces after the colon are not part of the value",
			in:   "dn:   cn=a\nmail:    a@x.com\nempty:\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}, "empty": {""}}}},
		},
		{
			name: "attribute name case folds together",
			in:   "dn: cn=a\nMAIL: a@x.com\nmail: b@x.com\nMail: c@x.com\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com", "b@x.com", "c@x.com"}}}},
		},
		{
			// RFC 2849: "Any line (including comment lines) that begins
			// with a single space is a continuation of the previous
			// (non-empty) line." A folded comment is still a comment.
			name: "folded comment before the first record",
			in:   "# a comment that is\n folded\ndn: cn=a\nmail: a@x.com\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}}}},
		},
		{
			// The continuation must not be glued onto mail's value.
			name: "folded comment inside a record",
			in:   "dn: cn=a\nmail: a@x.com\n# another\n  folded comment\nmailForwardingAddress: b@x.com\n",
			want: []Entry{{DN: "cn=a", Attrs: attrs{"mail": {"a@x.com"}, "mailforwardingaddress": {"b@x.com"}}}},
		},
	}
	// The folded-lines case, with its record ended properly.
	tests[5].in = "dn: cn=a,\n dc=x\nmail: long.na\n me@x.com\ndescription: two\n  words\n"
	tests[5].want = []Entry{{DN: "cn=a,dc=x", Attrs: attrs{"mail": {"long.name@x.com"}, "description": {"two words"}}}}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLDIF(strings.NewReader(tt.in))
			if err != nil {
				t.Fatalf("ParseLDIF: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseLDIF =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestParseLDIFErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error
	}{
		{
			name: "change record",
			in:   "dn: cn=a\nchangetype: modify\nreplace: mail\nmail: a@x.com\n",
			want: []string{"line 2", "change record"},
		},
		{
			name: "change record, add",
			in:   "dn: cn=a\nmail: a@x.com\n\ndn: cn=b\nchangeType: add\nmail: b@x.com\n",
			want: []string{"line 5", "change record"},
		},
		{
			name: "URL value",
			in:   "dn: cn=a\njpegPhoto:< file:///etc/passwd\n",
			want: []string{"line 2", "jpegPhoto", "URL"},
		},
		{
			name: "record not starting with dn",
			in:   "dn: cn=a\nmail: a@x.com\n\n\nmail: b@x.com\ndn: cn=b\n",
			want: []string{"line 5", "dn"},
		},
		{
			name: "first record not starting with dn",
			in:   "# header\nmail: b@x.com\n",
			want: []string{"line 2", "dn"},
		},
		{
			name: "bad base64",
			in:   "dn: cn=a\nmail: a@x.com\nmailForwardingAddress:: not base64!\n",
			want: []string{"line 3", "base64"},
		},
		{
			name: "line without a colon",
			in:   "dn: cn=a\nmail a@x.com\n",
			want: []string{"line 2"},
		},
		{
			name: "line starting with a colon",
			in:   "dn: cn=a\n: a@x.com\n",
			want: []string{"line 2"},
		},
		{
			name: "continuation without a line",
			in:   " dn: cn=a\n",
			want: []string{"line 1", "continuation"},
		},
		{
			name: "continuation after a blank line",
			in:   "dn: cn=a\n\n mail: a@x.com\n",
			want: []string{"line 3", "continuation"},
		},
		{
			name: "error on a folded line names its first line",
			in:   "dn: cn=a\nmail: a@x.com\nphoto:< file:///\n tmp/x\n",
			want: []string{"line 3", "URL"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLDIF(strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("ParseLDIF = %#v, want error", got)
			}
			if got != nil {
				t.Errorf("entries %#v returned along with error", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseSeedLDIF(t *testing.T) {
	f, err := os.Open("../../deploy/seed.ldif")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries, err := ParseLDIF(f)
	if err != nil {
		t.Fatal(err)
	}
	var dns []string
	for _, e := range entries {
		dns = append(dns, e.DN)
	}
	want := []string{
		"dc=example,dc=net",
		"ou=people,dc=example,dc=net",
		"ou=system,dc=example,dc=net",
		"uid=postfix-ldap,ou=system,dc=example,dc=net",
		"cn=user.example,ou=people,dc=example,dc=net",
		"cn=central,ou=people,dc=example,dc=net",
		"cn=internal.user,ou=people,dc=example,dc=net",
	}
	if !reflect.DeepEqual(dns, want) {
		t.Fatalf("DNs %q, want %q", dns, want)
	}
	central := entries[5].Attrs["mailalternateaddress"]
	if w := []string{"sales@company.com", "info@company.com", "support@company.com"}; !reflect.DeepEqual(central, w) {
		t.Errorf("central's mailAlternateAddress = %q, want %q", central, w)
	}
}

func TestLDIFSourceLookup(t *testing.T) {
	seed := seedSource(t)
	extra, err := NewLDIFBytes([]byte(`dn: cn=plain,dc=x
mail: Plain.User@company.com

dn: cn=two,dc=x
mail: two@company.com
mailAlternateAddress: TWO@company.com
mailAlternateAddress: shared@company.com
mailForwardingAddress: one@elsewhere.org
mailForwardingAddress: two@elsewhere.org

dn: cn=three,dc=x
mail: three@company.com
mailAlternateAddress: Shared@Company.com
mailForwardingAddress: three@elsewhere.org

dn: cn=nomail,dc=x
cn: nomail
`), MailRecipientSchema)
	if err != nil {
		t.Fatal(err)
	}
	noFallback := MailRecipientSchema
	noFallback.FallbackAttribute = ""
	plainOnly, err := NewLDIFBytes([]byte("dn: cn=plain,dc=x\nmail: plain@company.com\n"), noFallback)
	if err != nil {
		t.Fatal(err)
	}
	byUID, err := NewLDIFBytes(mustRead(t, "../../deploy/seed.ldif"), Schema{
		QueryAttributes: []string{"UID"}, ResultAttributes: []string{"MAIL"},
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		src  *LDIFSource
		addr string
		want []string
	}{
		{"seed mail", seed, "new.address@domain.ro", []string{"new.address@domain.ro"}},
		{"seed mailAlternateAddress", seed, "old.address@domain.com", []string{"new.address@domain.ro"}},
		{"seed forwarding outside", seed, "internal.user@company.com", []string{"external.user@gmail.com"}},
		{"seed alternate sales", seed, "sales@company.com", []string{"central@company.com"}},
		{"seed alternate info", seed, "info@company.com", []string{"central@company.com"}},
		{"seed alternate support", seed, "support@company.com", []string{"central@company.com"}},
		{"seed alternate, other case", seed, "SALES@Company.COM", []string{"central@company.com"}},
		{"seed mail, other case", seed, "Central@COMPANY.com", []string{"central@company.com"}},
		{"seed unknown", seed, "nobody@company.com", nil},
		{"seed forwarding target is not a key", seed, "external.user@gmail.com", nil},
		{"seed uid is not a query attribute", seed, "central", nil},
		{"seed dn is not a query attribute", seed, "cn=central,ou=people,dc=example,dc=net", nil},
		{"seed empty", seed, "", nil},
		{"no forwarding address: fallback to mail", extra, "plain.user@COMPANY.com", []string{"Plain.User@company.com"}},
		{"several forwarding addresses in order", extra, "two@company.com", []string{"one@elsewhere.org", "two@elsewhere.org"}},
		// mail and mailAlternateAddress both hold two@: one entry, one answer.
		{"entry matching twice answers once", extra, "Two@Company.com", []string{"one@elsewhere.org", "two@elsewhere.org"}},
		{"two entries match, file order", extra, "shared@company.com", []string{"one@elsewhere.org", "two@elsewhere.org", "three@elsewhere.org"}},
		{"entry without query attributes", extra, "nomail", nil},
		{"no fallback configured", plainOnly, "plain@company.com", nil},
		{"custom schema, names case-insensitive", byUID, "central", []string{"central@company.com"}},
		{"custom schema ignores mail", byUID, "central@company.com", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookupValues(tt.src, tt.addr)
			if err != nil {
				t.Fatalf("Lookup(%q): %v", tt.addr, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Lookup(%q) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}

	// A caller changing a result must not change the directory.
	got, _ := lookupValues(extra, "plain.user@company.com")
	got[0] = "changed@x.com"
	if again, _ := lookupValues(extra, "plain.user@company.com"); again[0] != "Plain.User@company.com" {
		t.Errorf("directory changed through a lookup result: %q", again)
	}
}

func TestNewLDIFBytesError(t *testing.T) {
	if _, err := NewLDIFBytes([]byte("dn: cn=a\nchangetype: delete\n"), MailRecipientSchema); err == nil {
		t.Error("NewLDIFBytes accepted a change record")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func forwarding(addr, to string) string {
	return "dn: cn=x,dc=x\nmail: " + addr + "\nmailForwardingAddress: " + to + "\n"
}

// writeLDIF writes content and moves the mtime, so that the change shows
// even where mtimes are coarse and the size stays the same.
func writeLDIF(t *testing.T, path, content string, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func lookup1(t *testing.T, s *LDIFSource, addr string) string {
	t.Helper()
	got, err := lookupValues(s, addr)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", addr, err)
	}
	return strings.Join(got, ",")
}

func TestLDIFFileReload(t *testing.T) {
	base := time.Now().Add(-time.Hour).Truncate(time.Second)

	t.Run("Reload", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dir.ldif")
		writeLDIF(t, path, forwarding("a@x.com", "old@y.com"), base)
		s, err := NewLDIFFile(path, MailRecipientSchema, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		if got := lookup1(t, s, "a@x.com"); got != "old@y.com" {
			t.Fatalf("before: %q", got)
		}
		writeLDIF(t, path, forwarding("a@x.com", "new@y.com")+"\n"+strings.Replace(forwarding("b@x.com", "bb@y.com"), "cn=x", "cn=b", 1), base.Add(time.Minute))
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := lookup1(t, s, "a@x.com"); got != "new@y.com" {
			t.Errorf("after Reload: a → %q, want new@y.com", got)
		}
		if got := lookup1(t, s, "b@x.com"); got != "bb@y.com" {
			t.Errorf("after Reload: b → %q, want bb@y.com", got)
		}

		// Broken content: Reload fails and the entries stay.
		writeLDIF(t, path, "dn: cn=x\nchangetype: delete\n", base.Add(2*time.Minute))
		if err := s.Reload(); err == nil {
			t.Error("Reload of a change record succeeded")
		}
		if got := lookup1(t, s, "a@x.com"); got != "new@y.com" {
			t.Errorf("after failed Reload: a → %q, want new@y.com", got)
		}

		// Missing file: same.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(); err == nil {
			t.Error("Reload of a missing file succeeded")
		}
		if got := lookup1(t, s, "b@x.com"); got != "bb@y.com" {
			t.Errorf("after missing file: b → %q, want bb@y.com", got)
		}
	})

	t.Run("automatic", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dir.ldif")
		writeLDIF(t, path, forwarding("a@x.com", "old@y.com"), base)
		s, err := NewLDIFFile(path, MailRecipientSchema, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		if got := lookup1(t, s, "a@x.com"); got != "old@y.com" {
			t.Fatalf("before: %q", got)
		}
		checked := time.Now()
		// Same size, new mtime.
		writeLDIF(t, path, forwarding("a@x.com", "new@y.com"), base.Add(time.Minute))
		got := lookup1(t, s, "a@x.com")
		if time.Since(checked) < ldifRecheck/2 && got != "old@y.com" {
			t.Errorf("file re-read within the recheck interval: %q", got)
		}
		waitFor(t, s, "a@x.com", "new@y.com")

		// Broken content is not installed, and a fix after it is.
		writeLDIF(t, path, "mail: no-dn@x.com\n", base.Add(2*time.Minute))
		deadline := time.Now().Add(ldifRecheck + ldifRecheck/2)
		for time.Now().Before(deadline) {
			if got := lookup1(t, s, "a@x.com"); got != "new@y.com" {
				t.Fatalf("broken file replaced the entries: a → %q", got)
			}
			time.Sleep(50 * time.Millisecond)
		}
		writeLDIF(t, path, forwarding("a@x.com", "fixed@y.com"), base.Add(3*time.Minute))
		waitFor(t, s, "a@x.com", "fixed@y.com")

		// A file that disappears keeps what was loaded.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ldifRecheck + 100*time.Millisecond)
		if got := lookup1(t, s, "a@x.com"); got != "fixed@y.com" {
			t.Errorf("after removal: a → %q, want fixed@y.com", got)
		}
	})

	t.Run("size change alone", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "dir.ldif")
		writeLDIF(t, path, forwarding("a@x.com", "old@y.com"), base)
		s, err := NewLDIFFile(path, MailRecipientSchema, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		writeLDIF(t, path, forwarding("a@x.com", "longer@y.com"), base) // same mtime
		waitFor(t, s, "a@x.com", "longer@y.com")
	})

	t.Run("bad file at start", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := NewLDIFFile(filepath.Join(dir, "missing.ldif"), MailRecipientSchema, quietLog()); err == nil {
			t.Error("NewLDIFFile of a missing file succeeded")
		}
		path := filepath.Join(dir, "bad.ldif")
		writeLDIF(t, path, "dn: cn=a\nurl:< file:///x\n", base)
		_, err := NewLDIFFile(path, MailRecipientSchema, nil)
		if err == nil || !strings.Contains(err.Error(), "bad.ldif") || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("NewLDIFFile of a bad file: %v; want an error naming the file and line 2", err)
		}
	})
}

// waitFor polls Lookup until addr maps to want, for up to three recheck
// intervals.
func waitFor(t *testing.T, s *LDIFSource, addr, want string) {
	t.Helper()
	deadline := time.Now().Add(3 * ldifRecheck)
	var got string
	for time.Now().Before(deadline) {
		if got = lookup1(t, s, addr); got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s → %q after %v, want %q", addr, got, 3*ldifRecheck, want)
}

// Lookups racing reloads (run with -race).
func TestLDIFFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir.ldif")
	writeLDIF(t, path, forwarding("a@x.com", "v0@y.com"), time.Now())
	s, err := NewLDIFFile(path, MailRecipientSchema, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < 20; i++ {
			writeLDIF(t, path, forwarding("a@x.com", "v"+string(rune('0'+i%10))+"@y.com"), time.Now().Add(time.Duration(i)*time.Second))
			if err := s.Reload(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for {
		select {
		case <-done:
			return
		default:
		}
		got, err := lookupValues(s, "a@x.com")
		if err != nil || len(got) != 1 || !strings.HasSuffix(got[0], "@y.com") {
			t.Fatalf("Lookup during reload = %q, %v", got, err)
		}
	}
}

// writeEntries is the inverse of ParseLDIF, every value in base64.
func writeEntries(entries []Entry) []byte {
	var b bytes.Buffer
	b.WriteString("version: 1\n")
	for _, e := range entries {
		b.WriteString("\ndn:: " + b64(e.DN) + "\n")
		names := make([]string, 0, len(e.Attrs))
		for n := range e.Attrs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			for _, v := range e.Attrs[n] {
				b.WriteString(n + ":: " + b64(v) + "\n")
			}
		}
	}
	return b.Bytes()
}

func FuzzParseLDIF(f *testing.F) {
	f.Add(mustReadF(f, "../../deploy/seed.ldif"))
	for _, s := range []string{
		"", "version: 1\n", "dn: cn=a\nmail: a@x.com\n", "dn: cn=a\r\nmail: a\r\n @x.com\r\n",
		"dn:: " + b64("cn=ü") + "\nmail:: " + b64("ü@x") + "\n", "# c\n folded\ndn: x\n",
		"dn: a\nchangetype: add\n", "dn: a\nx:< file:///\n", "mail: x\n", " x\n", "dn: a\n\n\n\ndn: b\n",
		"dn: a\nx:: !!!\n", ":\n", "dn:\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := ParseLDIF(bytes.NewReader(data))
		if err != nil {
			if entries != nil {
				t.Fatalf("entries returned with error %v", err)
			}
			return
		}
		for _, e := range entries {
			for n := range e.Attrs {
				if n != strings.ToLower(n) {
					t.Fatalf("attribute name %q not lower-cased", n)
				}
				if n == "changetype" {
					t.Fatalf("change record accepted: %q", data)
				}
				if n == "" || strings.ContainsAny(n, ":\n") {
					t.Fatalf("bad attribute name %q", n)
				}
			}
		}
		// What was parsed, written back out, parses to the same.
		again, err := ParseLDIF(bytes.NewReader(writeEntries(entries)))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", writeEntries(entries), err)
		}
		if !reflect.DeepEqual(again, entries) {
			t.Fatalf("round trip changed entries:\n%#v\n%#v", entries, again)
		}
		// And an index built from it answers without error.
		s := &LDIFSource{schema: MailRecipientSchema, log: quietLog()}
		s.install(entries)
		for _, e := range entries {
			for _, m := range e.Attrs["mail"] {
				if got, err := lookupValues(s, strings.ToUpper(m)); err != nil || (len(got) == 0 && len(e.Attrs["mailforwardingaddress"])+len(e.Attrs["mail"]) > 0 && strings.EqualFold(strings.ToUpper(m), m)) {
					t.Fatalf("Lookup(%q) = %q, %v", m, got, err)
				}
			}
		}
	})
}

func mustReadF(f *testing.F, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// lookupValues is Lookup reduced to the values (nil when there are none).
func lookupValues(s routing.Source, addr string) ([]string, error) {
	ms, err := s.Lookup(context.Background(), addr)
	if len(ms) == 0 {
		return nil, err
	}
	return routing.Values(ms), err
}

// A file caught between its truncation and its new content (an editor
// writing in place) keeps the loaded entries: not 550 for everyone.
func TestLDIFFileHalfWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir.ldif")
	writeLDIF(t, path, forwarding("a@x.com", "v0@y.com"), time.Now())
	s, err := NewLDIFFile(path, MailRecipientSchema, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	writeLDIF(t, path, "", time.Now().Add(time.Second))
	if err := s.Reload(); err == nil {
		t.Error("an empty file replaced a loaded directory")
	}
	if got := lookup1(t, s, "a@x.com"); got != "v0@y.com" {
		t.Errorf("a@x.com → %q after the truncation, want the loaded v0@y.com", got)
	}
	writeLDIF(t, path, forwarding("a@x.com", "v1@y.com"), time.Now().Add(2*time.Second))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := lookup1(t, s, "a@x.com"); got != "v1@y.com" {
		t.Errorf("a@x.com → %q once written, want v1@y.com", got)
	}
}

// seedSource is deploy/seed.ldif, the directory of the examples.
func seedSource(t *testing.T) *LDIFSource {
	t.Helper()
	s, err := NewLDIFBytes(mustRead(t, "../../deploy/seed.ldif"), MailRecipientSchema)
	if err != nil {
		t.Fatalf("seed.ldif: %v", err)
	}
	return s
}
