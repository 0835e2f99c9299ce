package routing

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// 2024-03-01 is day 19783; 19783 mod 1024 = 327 = base32 "KH".
var srsTestDay = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func testSRS(secrets ...string) *SRS {
	if len(secrets) == 0 {
		secrets = []string{"tops3cr3t"}
	}
	s := &SRS{Domain: "srs.example.net", Now: func() time.Time { return srsTestDay }}
	for _, k := range secrets {
		s.Secrets = append(s.Secrets, []byte(k))
	}
	return s
}

func (s *SRS) at(t time.Time) *SRS {
	c := *s
	c.Now = func() time.Time { return t }
	return &c
}

func TestSRSForwardVectors(t *testing.T) {
	s := testSRS()
	for _, v := range []struct{ id, in, want string }{
		{"F01", "alice@example.com", "SRS0=gfkj=KH=example.com=alice@srs.example.net"},
		{"F27", "SRS0=abcd=KH=orig.example=user@fwd.example", "SRS1=Eb9W=fwd.example==abcd=KH=orig.example=user@srs.example.net"},
		// F28: a lower-case tag is recognised; the hash covers only lower-cased fields.
		{"F28", "srs0=abcd=KH=orig.example=user@fwd.example", "SRS1=Eb9W=fwd.example==abcd=KH=orig.example=user@srs.example.net"},
		// F29: the SRS0 separator is kept in rest.
		{"F29", "SRS0+abcd=KH=orig.example=user@fwd.example", "SRS1=" + srsDigest([]byte("tops3cr3t"), "fwd.example", "+abcd=KH=orig.example=user")[:4] + "=fwd.example=+abcd=KH=orig.example=user@srs.example.net"},
		// F19/F20: own domain, any case: unchanged.
		{"F19", "bob@srs.example.net", "bob@srs.example.net"},
		{"F20", "Bob@SRS.Example.NET", "Bob@SRS.Example.NET"},
		// The null sender is never rewritten.
		{"null", "", ""},
	} {
		got, err := s.Forward(v.in)
		if err != nil || got != v.want {
			t.Errorf("%s: Forward(%q) = %q, %v; want %q", v.id, v.in, got, err, v.want)
		}
	}
	// F03: case never changes the hash.
	a, _ := s.Forward("alice@example.com")
	b, _ := s.Forward("ALICE@EXAMPLE.COM")
	if a[:10] != b[:10] {
		t.Errorf("F03: %q vs %q", a, b)
	}
	// F13/F14: bytes >= 0x80 are not folded, so É and é hash differently.
	c, _ := s.Forward("É@example.com")
	d, _ := s.Forward("é@example.com")
	if c[:10] == d[:10] {
		t.Errorf("F13/F14: É and é hash the same: %q %q", c, d)
	}
	// F21: a subdomain of ours is rewritten.
	if got, _ := s.Forward("bob@sub.srs.example.net"); !strings.HasPrefix(got, "SRS0=") {
		t.Errorf("F21: %q", got)
	}
	// F30: SRS1 is re-hashed, not nested.
	got, err := s.Forward("SRS1=xxxx=orig.example==abcd=KH=o=u@fwd2.example")
	want := "SRS1=" + srsDigest(s.Secrets[0], "orig.example", "=abcd=KH=o=u")[:4] + "=orig.example==abcd=KH=o=u@srs.example.net"
	if err != nil || got != want {
		t.Errorf("F30: %q, %v; want %q", got, err, want)
	}
}

func TestSRSSeparatorsAndHashLength(t *testing.T) {
	for _, sep := range []byte{'=', '+', '-'} {
		s := testSRS()
		s.Separator = sep
		got, err := s.Forward("alice@example.com")
		want := "SRS0" + string(sep) + "gfkj=KH=example.com=alice@srs.example.net"
		if err != nil || got != want {
			t.Errorf("separator %c: %q, %v", sep, got, err)
		}
		// The initial separator is not hashed: every form reverses (R28, R29, R41).
		for _, other := range []byte{'=', '+', '-'} {
			in := "SRS0" + string(other) + got[5:]
			if r, err := s.Reverse(in); err != nil || r != "alice@example.com" {
				t.Errorf("Reverse(%q) = %q, %v", in, r, err)
			}
		}
	}
	s := testSRS()
	s.HashLength, s.HashMin = 8, 6
	got, _ := s.Forward("alice@example.com")
	full := srsDigest(s.Secrets[0], "KH", "example.com", "alice")
	if got != "SRS0="+full[:8]+"=KH=example.com=alice@srs.example.net" {
		t.Errorf("hash length 8: %q", got)
	}
	for n, want := range map[int]error{5: ErrSRSBadHash, 6: nil, 8: nil, 12: nil, 27: nil} {
		in := "SRS0=" + full[:n] + "=KH=example.com=alice@srs.example.net"
		if _, err := s.Reverse(in); !errors.Is(err, want) {
			t.Errorf("hash of %d chars: %v, want %v", n, err, want)
		}
	}
	// Longer than 27, or a wrong extra character: refused (R07, R09).
	for _, h := range []string{full + "A", full[:8] + "!", "gfkjGARBAGE"} {
		if _, err := testSRS().Reverse("SRS0=" + h + "=KH=example.com=alice@srs.example.net"); !errors.Is(err, ErrSRSBadHash) {
			t.Errorf("hash %q: %v", h, err)
		}
	}
}

func TestSRSReverseVectors(t *testing.T) {
	s := testSRS()
	const ok = "SRS0=gfkj=KH=example.com=alice@srs.example.net"
	for _, v := range []struct {
		id, in, want string
		err          error
	}{
		{"F01.r", ok, "alice@example.com", nil},
		{"R01", "SRS0=gfkj=KH=EXAMPLE.COM=ALICE@srs.example.net", "ALICE@EXAMPLE.COM", nil},
		{"R02", "SRS0=GFKJ=KH=example.com=alice@srs.example.net", "alice@example.com", nil},
		{"R03", "SRS0=GfKj=kh=example.com=alice@SRS.EXAMPLE.NET", "alice@example.com", nil},
		{"F27.r", "SRS1=Eb9W=fwd.example==abcd=KH=orig.example=user@srs.example.net", "SRS0=abcd=KH=orig.example=user@fwd.example", nil},
		{"R41", "SRS1+eB9w=fwd.example==abcd=KH=orig.example=user@srs.example.net", "SRS0=abcd=KH=orig.example=user@fwd.example", nil},
		// R32: the field-boundary ambiguity, accepted as the other implementations do.
		{"R32", "SRS0=gfkj=KH=example.co=malice@srs.example.net", "malice@example.co", nil},
		{"R05", "SRS0=gfk=KH=example.com=alice@srs.example.net", "", ErrSRSBadHash},
		{"R06", "SRS0==KH=example.com=alice@srs.example.net", "", ErrSRSBadHash},
		{"tampered", "SRS0=gfkk=KH=example.com=alice@srs.example.net", "", ErrSRSBadHash},
		{"SRS1 tampered", "SRS1=Eb9X=fwd.example==abcd=KH=orig.example=user@srs.example.net", "", ErrSRSBadHash},
		{"R33", "SRS0=gfkj=K1=example.com=alice@srs.example.net", "", ErrSRSMalformed},
		{"R34", "SRS0=gfkj=AKH=example.com=alice@srs.example.net", "", ErrSRSMalformed},
		{"empty stamp", "SRS0=gfkj==example.com=alice@srs.example.net", "", ErrSRSMalformed},
		{"R36", "SRS0=gfkj=KH=example.com@srs.example.net", "", ErrSRSMalformed},
		{"empty user", "SRS0=gfkj=KH=example.com=@srs.example.net", "", ErrSRSMalformed},
		{"empty host", "SRS0=gfkj=KH==alice@srs.example.net", "", ErrSRSMalformed},
		{"SRS1 no rest", "SRS1=Eb9W=fwd.example@srs.example.net", "", ErrSRSMalformed},
		{"SRS1 empty rest", "SRS1=Eb9W=fwd.example=@srs.example.net", "", ErrSRSMalformed},
		{"R49", "SRS0=gfkj=KH=example.com=alice@srs.example.net@srs.example.net", "", ErrSRSMalformed},
		{"control", "SRS0=gfkj=KH=example.com=al\nice@srs.example.net", "", ErrSRSMalformed},
		// Not SRS, or not ours: pass through.
		{"R24", "SRS0=gfkj=KH=example.com=alice@other.example", "", ErrNotSRS},
		{"subdomain", "SRS0=gfkj=KH=example.com=alice@sub.srs.example.net", "", ErrNotSRS},
		{"R25", "SRS0=gfkj=KH=example.com=alice", "", ErrNotSRS},
		{"R21", "postmaster@srs.example.net", "", ErrNotSRS},
		{"R30", "SRS2=gfkj=KH=example.com=alice@srs.example.net", "", ErrNotSRS},
		{"R46", "SRS0*gfkj=KH=example.com=alice@srs.example.net", "", ErrNotSRS},
		{"bare tag", "SRS0@srs.example.net", "", ErrNotSRS},
		{"empty", "", "", ErrNotSRS},
	} {
		got, err := s.Reverse(v.in)
		if got != v.want || !errors.Is(err, v.err) || (v.err == nil) != (err == nil) {
			t.Errorf("%s: Reverse(%q) = %q, %v; want %q, %v", v.id, v.in, got, err, v.want, v.err)
		}
	}
}

func TestSRSStampAges(t *testing.T) {
	s := testSRS()
	day := func(n int) time.Time { return srsTestDay.AddDate(0, 0, n) }
	in := "alice@example.com"
	for age := 0; age <= 25; age++ {
		addr, err := s.at(day(-age)).Forward(in)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Reverse(addr)
		if age <= 21 && err != nil { // R10
			t.Errorf("age %d: %v", age, err)
		}
		if age > 21 && !errors.Is(err, ErrSRSExpired) { // R11
			t.Errorf("age %d: %v, want expired", age, err)
		}
	}
	for _, n := range []int{1, 2, 500} { // R12: the future is expired
		addr, _ := s.at(day(n)).Forward(in)
		if _, err := s.Reverse(addr); !errors.Is(err, ErrSRSExpired) {
			t.Errorf("%d days in the future: %v", n, err)
		}
	}
	// R13: the stamp wraps every 1024 days.
	addr, _ := s.Forward(in)
	if got, err := s.at(day(1029)).Reverse(addr); err != nil || got != in {
		t.Errorf("1029 days later: %q, %v", got, err)
	}
	if _, err := s.at(day(1024 + 22)).Reverse(addr); !errors.Is(err, ErrSRSExpired) {
		t.Errorf("1046 days later: %v", err)
	}
	// R38: SRS1 never expires.
	srs1, _ := s.Forward("SRS0=abcd=KH=orig.example=user@fwd.example")
	for _, n := range []int{22, 300, -5} {
		if _, err := s.at(day(n)).Reverse(srs1); err != nil {
			t.Errorf("SRS1 after %d days: %v", n, err)
		}
	}
	// Max age is configurable.
	short := testSRS()
	short.MaxAgeDays = 3
	a3, _ := short.at(day(-3)).Forward(in)
	a4, _ := short.at(day(-4)).Forward(in)
	if _, err := short.Reverse(a3); err != nil {
		t.Errorf("max age 3, age 3: %v", err)
	}
	if _, err := short.Reverse(a4); !errors.Is(err, ErrSRSExpired) {
		t.Errorf("max age 3, age 4: %v", err)
	}
	// A stamp is checked before the hash, as postsrsd does.
	if _, err := s.Reverse("SRS0=xxxx=AA=example.com=alice@srs.example.net"); !errors.Is(err, ErrSRSExpired) {
		t.Errorf("expired stamp with a bad hash: %v", err)
	}
}

func TestSRSRotation(t *testing.T) {
	oldOnly := testSRS("old secret")
	rotated := testSRS("new secret", "old secret")
	addr, _ := oldOnly.Forward("alice@example.com")
	if got, err := rotated.Reverse(addr); err != nil || got != "alice@example.com" {
		t.Errorf("signed with the old secret: %q, %v", got, err)
	}
	addrNew, _ := rotated.Forward("alice@example.com")
	if addrNew == addr {
		t.Error("the first secret does not sign")
	}
	if _, err := oldOnly.Reverse(addrNew); !errors.Is(err, ErrSRSBadHash) {
		t.Errorf("new-secret address with only the old secret: %v", err)
	}
	// F51: a 100-byte key.
	long := testSRS(strings.Repeat("k", 100))
	a, _ := long.Forward("alice@example.com")
	if got, err := long.Reverse(a); err != nil || got != "alice@example.com" {
		t.Errorf("100-byte key: %q, %v", got, err)
	}
}

func TestSRSForwardRefusals(t *testing.T) {
	s := testSRS()
	own, _ := s.Forward("owner@example.org")
	ownLocal := own[:strings.IndexByte(own, '@')]
	for _, v := range []struct {
		in   string
		want string // "" with err, else the result
		err  error
	}{
		{"alice", "", ErrSRSMalformed},                                  // F23
		{"alice@", "", ErrSRSMalformed},                                 // F25
		{"@example.com", "", ErrSRSMalformed},                           // empty local part
		{"a@b@example.com", "", ErrSRSMalformed},                        // F12
		{`"a@b"@example.com`, "", ErrSRSMalformed},                      // F11
		{"user@ho=st.example", "", ErrSRSMalformed},                     // would re-split
		{"a\r\nb@example.com", "", ErrSRSMalformed},                     // control characters
		{"SRS1=abcd@fwd.example", "", ErrSRSMalformed},                  // F31
		{"SRS1=abcd=fwd1.example@x.example", "", ErrSRSMalformed},       // F32
		{"SRS1=h==rest@x.example", "", ErrSRSMalformed},                 // empty SRS1 host
		{"SRS1=h=fwd1.example=@x.example", "", ErrSRSMalformed},         // empty SRS1 rest
		{strings.Repeat("l", 1000) + "@example.com", "", ErrSRSTooLong}, // F18
		{strings.Repeat("l", 40) + "@example.com", "", ErrSRSTooLong},
		{strings.Repeat("l", 39) + "@example.com", "SRS0=", nil},            // local part exactly 64
		{ownLocal + "@foreign.example", ownLocal + "@foreign.example", nil}, // F35: already ours
		{ownLocal + "@srs.example.net", ownLocal + "@srs.example.net", nil}, // F34
		{strings.ToUpper(ownLocal) + "@x.example", strings.ToUpper(ownLocal) + "@x.example", nil},
	} {
		got, err := s.Forward(v.in)
		if !errors.Is(err, v.err) || (v.err == nil) != (err == nil) || !strings.HasPrefix(got, v.want) || (v.err != nil && got != "") {
			t.Errorf("Forward(%q) = %q, %v; want %q…, %v", v.in, got, err, v.want, v.err)
		}
		if err == nil && len(got) > 0 && strings.HasPrefix(got, "SRS") && len(got[:strings.LastIndexByte(got, '@')]) > 64 {
			t.Errorf("Forward(%q) = %q: local part over 64 octets", v.in, got)
		}
	}
	// The address limit: a long SRS domain.
	big := testSRS()
	big.Domain = strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 63) + "." + strings.Repeat("g", 60)
	if _, err := big.Forward("a@b.example"); !errors.Is(err, ErrSRSTooLong) {
		t.Errorf("address over 254 octets: %v", err)
	}
}

func TestSRSConfig(t *testing.T) {
	for _, s := range []*SRS{
		{Domain: "x"},
		{Secrets: [][]byte{[]byte("k")}},
		{Secrets: [][]byte{[]byte("k")}, Domain: "a@b"},
		{Secrets: [][]byte{{}}, Domain: "x"},
		{Secrets: [][]byte{[]byte("k")}, Domain: "x", Separator: '*'},
		{Secrets: [][]byte{[]byte("k")}, Domain: "x", HashLength: 28},
		{Secrets: [][]byte{[]byte("k")}, Domain: "x", HashLength: 4, HashMin: 5},
		{Secrets: [][]byte{[]byte("k")}, Domain: "x", MaxAgeDays: -1},
		{Secrets: [][]byte{[]byte("k")}, Domain: "x", MaxAgeDays: 1023},
	} {
		if s.Validate() == nil {
			t.Errorf("%+v: no error", s)
		}
		if _, err := s.Forward("a@b"); err == nil {
			t.Errorf("%+v: Forward works", s)
		}
		if _, err := s.Reverse("SRS0=gfkj=KH=example.com=alice@x"); err == nil || errors.Is(err, ErrNotSRS) {
			t.Errorf("%+v: Reverse: %v", s, err)
		}
	}
	if err := testSRS().Validate(); err != nil {
		t.Error(err)
	}
}

func TestLoadSRSSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := LoadSRSSecrets(write("a", "first\r\n\n  spaced secret \nthird\rjunk\nlast"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first", "  spaced secret ", "third", "last"}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Errorf("secret %d: %q, want %q", i, got[i], want[i])
		}
	}
	for name, body := range map[string]string{"empty": "", "blank": "\n\r\n\n", "nul": "a\x00b\n", "long": strings.Repeat("x", 1023)} {
		if _, err := LoadSRSSecrets(write(name, body)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := LoadSRSSecrets(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: no error")
	}
}

// FuzzSRSReverse: Reverse never panics, returns exactly one of its
// documented errors, refuses other domains as ErrNotSRS, and whatever it
// accepts has a non-empty user and host, no control characters, and a hash
// that a Forward of the decoded address would reproduce (for SRS0 of today).
func FuzzSRSReverse(f *testing.F) {
	for _, seed := range []string{
		"SRS0=gfkj=KH=example.com=alice@srs.example.net",
		"SRS0+gfkj=kh=EXAMPLE.COM=alice@SRS.example.net",
		"SRS1=Eb9W=fwd.example==abcd=KH=orig.example=user@srs.example.net",
		"SRS0=gfkj=KH=example.co=malice@srs.example.net",
		"SRS0=gfkjGARBAGE=KH=example.com=alice@srs.example.net",
		"SRS0=gfkj=AKH=example.com=alice@srs.example.net",
		"SRS0=gfkj=KH=example.com=alice@other.example",
		"SRS0=@srs.example.net", "SRS1=@srs.example.net", "srs0=a=b=c=d@srs.example.net",
		"SRS0=gfkj=KH=example.com=a@b@srs.example.net", "postmaster@srs.example.net", "", "@", "SRS0",
	} {
		f.Add(seed)
	}
	s := testSRS()
	f.Fuzz(func(t *testing.T, in string) {
		got, err := s.Reverse(in)
		if err != nil {
			if got != "" {
				t.Fatalf("Reverse(%q) = %q with error %v", in, got, err)
			}
			n := 0
			for _, e := range []error{ErrNotSRS, ErrSRSBadHash, ErrSRSExpired, ErrSRSMalformed} {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("Reverse(%q): undocumented error %v", in, err)
			}
			return
		}
		at := strings.LastIndexByte(in, '@')
		if at < 0 || !strings.EqualFold(in[at+1:], s.Domain) || strings.Count(in, "@") != 1 {
			t.Fatalf("Reverse(%q) = %q: accepted an address not in our domain", in, got)
		}
		gat := strings.LastIndexByte(got, '@')
		if gat <= 0 || gat == len(got)-1 || hasControl(got) {
			t.Fatalf("Reverse(%q) = %q: empty user or host, or control characters", in, got)
		}
		// An accepted SRS0 of today carries the hash Forward computes for
		// the decoded address (with a hash as long as the given one).
		if f, err := parseSRS(in[:at]); err == nil && !f.srs1 && strings.EqualFold(f.stamp, "KH") {
			c := *s
			c.HashLength, c.HashMin = len(f.hash), 1
			again, err := c.Forward(got)
			if err == nil && strings.HasPrefix(again, "SRS0") {
				g, _ := parseSRS(again[:strings.LastIndexByte(again, '@')])
				if !strings.EqualFold(g.hash, f.hash) {
					t.Fatalf("Reverse(%q) = %q but Forward gives %q", in, got, again)
				}
			}
		}
	})
}

// FuzzSRSForward: whatever Forward rewrites, Reverse decodes back to the
// sender (SRS0) or to the SRS0 form of it (SRS1 input), the result's local
// part fits 64 octets, and refusals are documented errors.
func FuzzSRSForward(f *testing.F) {
	for _, seed := range []string{
		"alice@example.com", "Alice.Smith@EXAMPLE.COM", `"a b"@example.com`, "ünï@bücher.example", "a=b@x",
		"SRS0=abcd=KH=orig.example=user@fwd.example", "srs0+x@y", "SRS1=xxxx=orig.example==abcd=KH=o=u@fwd2.example",
		"SRS1=h==r@x", "a@b@c", "@x", "x@", "", "bob@srs.example.net", "SRS0@example.com", "u@h=x",
	} {
		f.Add(seed)
	}
	s := testSRS()
	f.Fuzz(func(t *testing.T, in string) {
		out, err := s.Forward(in)
		if err != nil {
			if !errors.Is(err, ErrSRSMalformed) && !errors.Is(err, ErrSRSTooLong) {
				t.Fatalf("Forward(%q): undocumented error %v", in, err)
			}
			return
		}
		if out == in {
			return
		}
		at := strings.LastIndexByte(out, '@')
		if at > 64 || len(out) > 254 || out[at+1:] != s.Domain {
			t.Fatalf("Forward(%q) = %q: too long or not in our domain", in, out)
		}
		back, err := s.Reverse(out)
		if err != nil {
			t.Fatalf("Forward(%q) = %q, which does not reverse: %v", in, out, err)
		}
		want := in
		if hasSRSTag(in, '1') { // SRS1 re-hash: decodes to the first forwarder's SRS0
			f := strings.SplitN(in[:strings.IndexByte(in, '@')][5:], "=", 3)
			want = "SRS0" + f[2] + "@" + f[1]
		} else if hasSRSTag(in, '0') {
			want = "SRS0" + in[4:]
		}
		if back != want {
			t.Fatalf("Forward(%q) = %q, Reverse = %q, want %q", in, out, back, want)
		}
	})
}
