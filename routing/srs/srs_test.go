package srs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// 2024-03-01 is day 19783; 19783 mod 1024 = 327 = base32 "KH".
var srsTestDay = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func testSRS(secrets ...string) *Rewriter {
	if len(secrets) == 0 {
		secrets = []string{"tops3cr3t"}
	}
	s := postsrsdParams(&Rewriter{Domain: "srs.example.net", Now: func() time.Time { return srsTestDay }})
	for _, k := range secrets {
		s.Secrets = append(s.Secrets, []byte(k))
	}
	return s
}

// postsrsdParams gives s postsrsd's parameters (also the configuration's
// defaults): separator =, 4 hash characters emitted and required, 21 days.
func postsrsdParams(s *Rewriter) *Rewriter {
	s.Separator, s.HashLength, s.HashMin, s.MaxAgeDays = '=', 4, 4, 21
	return s
}

func (s *Rewriter) at(t time.Time) *Rewriter {
	c := *s
	c.Now = func() time.Time { return t }
	return &c
}

// legacy is s accepting legacy hashes minted up to day.
func (s *Rewriter) legacy(day time.Time) *Rewriter {
	c := *s
	c.LegacyUntil = day
	return &c
}

func (s *Rewriter) fwd(in string) (string, error) { return s.Forward(context.Background(), in) }
func (s *Rewriter) rev(in string) (string, error) { return s.Reverse(context.Background(), in) }

// memStore is an in-memory Store for unit tests (the real ones are in
// srsstore, tested there and end to end).
type memStore struct {
	mu   sync.Mutex
	m    map[string]string
	puts int
	err  error // returned by every call when set
}

func newMemStore() *memStore { return &memStore{m: map[string]string{}} }

func (m *memStore) Put(_ context.Context, key, sender string, day int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	m.puts++
	m.m[key] = sender
	return nil
}

func (m *memStore) Get(_ context.Context, key string, day int64) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return "", m.err
	}
	v, ok := m.m[key]
	if !ok {
		return "", ErrUnknownKey
	}
	return v, nil
}

// The v2 vectors were computed with Python's hmac module (an independent
// implementation): HMAC-SHA1(secret, "mailfwd-srs-v2" + "\x00" + field ...),
// fields lower-cased, base64url.
func TestSRSForwardVectors(t *testing.T) {
	s := testSRS()
	for _, v := range []struct{ id, in, want string }{
		{"F01", "alice@example.com", "SRS0=gIVm=KH=example.com=alice@srs.example.net"},
		{"F27", "SRS0=abcd=KH=orig.example=user@fwd.example", "SRS1=cp6q=fwd.example==abcd=KH=orig.example=user@srs.example.net"},
		// F28: a lower-case tag is recognised; the hash covers only lower-cased fields.
		{"F28", "srs0=abcd=KH=orig.example=user@fwd.example", "SRS1=cp6q=fwd.example==abcd=KH=orig.example=user@srs.example.net"},
		// F29: the SRS0 separator is kept in rest (and the hash is base64url: -).
		{"F29", "SRS0+abcd=KH=orig.example=user@fwd.example", "SRS1=mT-E=fwd.example=+abcd=KH=orig.example=user@srs.example.net"},
		// F30: SRS1 is re-hashed, not nested.
		{"F30", "SRS1=xxxx=orig.example==abcd=KH=o=u@fwd2.example", "SRS1=rX8S=orig.example==abcd=KH=o=u@srs.example.net"},
		// F19/F20: own domain, any case: unchanged.
		{"F19", "bob@srs.example.net", "bob@srs.example.net"},
		{"F20", "Bob@SRS.Example.NET", "Bob@SRS.Example.NET"},
		// The null sender is never rewritten.
		{"null", "", ""},
	} {
		got, err := s.fwd(v.in)
		if err != nil || got != v.want {
			t.Errorf("%s: Forward(%q) = %q, %v; want %q", v.id, v.in, got, err, v.want)
		}
	}
	// F03: case never changes the hash.
	a, _ := s.fwd("alice@example.com")
	b, _ := s.fwd("ALICE@EXAMPLE.COM")
	if a[:10] != b[:10] {
		t.Errorf("F03: %q vs %q", a, b)
	}
	// F13/F14: bytes >= 0x80 are not folded, so É and é hash differently.
	c, _ := s.fwd("É@example.com")
	d, _ := s.fwd("é@example.com")
	if c[:10] == d[:10] {
		t.Errorf("F13/F14: É and é hash the same: %q %q", c, d)
	}
	// F21: a subdomain of ours is rewritten.
	if got, _ := s.fwd("bob@sub.srs.example.net"); !strings.HasPrefix(got, "SRS0=") {
		t.Errorf("F21: %q", got)
	}
	// What we mint never carries the legacy hash (the format is postsrsd's).
	if legacy := srsDigest(s.Secrets[0], "KH", "example.com", "alice")[:4]; strings.Contains(a, "="+legacy+"=") {
		t.Errorf("minted the legacy hash %s: %s", legacy, a)
	}
}

// TestSRSResplit is the attack the v2 hash stops: an attacker sends mail
// from a sender of their choosing to a user who forwards outside, sees the
// forwarded copy, moves the = between host and user and gets an address
// that verifies and decodes to a target of their choosing.
func TestSRSResplit(t *testing.T) {
	s := testSRS()
	minted, err := s.fwd("_doe@victim.examplejohn")
	if err != nil {
		t.Fatal(err)
	}
	local := minted[:strings.IndexByte(minted, '@')]
	resplit := strings.Replace(local, "=victim.examplejohn=_doe", "=victim.example=john_doe", 1) + "@srs.example.net"
	if resplit == minted {
		t.Fatal("the test did not move the boundary")
	}
	if got, err := s.rev(minted); err != nil || got != "_doe@victim.examplejohn" {
		t.Fatalf("the minted address: %q, %v", got, err)
	}
	if got, err := s.rev(resplit); !errors.Is(err, ErrBadHash) {
		t.Errorf("re-split v2 address %s: %q, %v; want ErrBadHash", resplit, got, err)
	}
	// Even inside a legacy window, a v2 address does not re-split.
	if got, err := s.legacy(srsTestDay).rev(resplit); !errors.Is(err, ErrBadHash) {
		t.Errorf("re-split v2 address with legacy hashes on: %q, %v", got, err)
	}
	// SRS1: moving the host/rest boundary.
	m1, _ := s.fwd("SRS0=abcd=KH=victim.example=x@fwd.examplej")
	r1 := strings.Replace(m1, "=fwd.examplej==abcd", "=fwd.example=j==abcd", 1)
	if _, err := s.rev(r1); !errors.Is(err, ErrBadHash) {
		t.Errorf("re-split SRS1 %s: %v", r1, err)
	}

	// A legacy address (postsrsd's, or ours before v2) re-splits as it always
	// did, but only inside the window: stamps minted on or before the cut-over.
	leg := "SRS0=" + srsDigest(s.Secrets[0], "KH", "victim.examplejohn", "_doe")[:4] + "=KH=victim.examplejohn=_doe@srs.example.net"
	legResplit := strings.Replace(leg, "=victim.examplejohn=_doe", "=victim.example=john_doe", 1)
	if got, err := s.legacy(srsTestDay).rev(legResplit); err != nil || got != "john_doe@victim.example" {
		t.Errorf("legacy re-split inside the window (documented): %q, %v", got, err)
	}
	if _, err := s.legacy(srsTestDay.AddDate(0, 0, -1)).rev(legResplit); !errors.Is(err, ErrBadHash) {
		t.Errorf("legacy address minted after the cut-over: %v", err)
	}
}

// TestSRSLegacyWindow: legacy hashes verify for SRS0 stamps minted on or
// before the cut-over day, for SRS1 until MaxAgeDays after it, never
// without a cut-over day.
func TestSRSLegacyWindow(t *testing.T) {
	const legacyF01 = "SRS0=gfkj=KH=example.com=alice@srs.example.net"                   // minted 2024-03-01
	const legacyF27 = "SRS1=Eb9W=fwd.example==abcd=KH=orig.example=user@srs.example.net" // no stamp
	day := func(n int) time.Time { return srsTestDay.AddDate(0, 0, n) }
	for _, c := range []struct {
		name      string
		now, cut  time.Time
		addr      string
		want, err error
	}{
		{"SRS0 minted on the cut-over day", day(0), day(0), legacyF01, nil, nil},
		{"SRS0 minted before, read 21 days later", day(21), day(5), legacyF01, nil, nil},
		{"SRS0 minted the day after the cut-over", day(0), day(-1), legacyF01, ErrBadHash, nil},
		{"SRS0 without a cut-over day", day(0), time.Time{}, legacyF01, ErrBadHash, nil},
		{"SRS0 expired before its hash is looked at", day(22), day(30), legacyF01, ErrExpired, nil},
		{"SRS1 on the cut-over day", day(0), day(0), legacyF27, nil, nil},
		{"SRS1 21 days after", day(21), day(0), legacyF27, nil, nil},
		{"SRS1 22 days after", day(22), day(0), legacyF27, ErrBadHash, nil},
		{"SRS1 without a cut-over day", day(0), time.Time{}, legacyF27, ErrBadHash, nil},
	} {
		s := testSRS().at(c.now).legacy(c.cut)
		_, err := s.rev(c.addr)
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// postsrsd 1.10 mints + and /, 2.2.6+ - and _: both forms, any case.
	s := testSRS().legacy(srsTestDay)
	std := srsDigest(s.Secrets[0], "KH", "a", "b")[:27]
	for _, h := range []string{std, strings.NewReplacer("+", "-", "/", "_").Replace(std), strings.ToUpper(std), strings.ToLower(std)} {
		if _, err := s.rev("SRS0=" + h + "=KH=a=b@srs.example.net"); err != nil {
			t.Errorf("legacy hash %s: %v", h, err)
		}
	}
	if !strings.ContainsAny(std, "+/") {
		t.Fatalf("pick fields whose 27-character legacy hash has + or /: %s", std)
	}
}

func TestSRSSeparatorsAndHashLength(t *testing.T) {
	for _, sep := range []byte{'=', '+', '-'} {
		s := testSRS()
		s.Separator = sep
		got, err := s.fwd("alice@example.com")
		want := "SRS0" + string(sep) + "gIVm=KH=example.com=alice@srs.example.net"
		if err != nil || got != want {
			t.Errorf("separator %c: %q, %v", sep, got, err)
		}
		// The initial separator is not hashed: every form reverses (R28, R29, R41).
		for _, other := range []byte{'=', '+', '-'} {
			in := "SRS0" + string(other) + got[5:]
			if r, err := s.rev(in); err != nil || r != "alice@example.com" {
				t.Errorf("Reverse(%q) = %q, %v", in, r, err)
			}
		}
	}
	s := testSRS()
	s.HashLength, s.HashMin = 8, 6
	got, _ := s.fwd("alice@example.com")
	full := srsDigestV2(s.Secrets[0], "KH", "example.com", "alice")
	if got != "SRS0=gIVmRVQC=KH=example.com=alice@srs.example.net" || full[:8] != "gIVmRVQC" {
		t.Errorf("hash length 8: %q", got)
	}
	for n, want := range map[int]error{5: ErrBadHash, 6: nil, 8: nil, 12: nil, 27: nil} {
		in := "SRS0=" + full[:n] + "=KH=example.com=alice@srs.example.net"
		if _, err := s.rev(in); !errors.Is(err, want) {
			t.Errorf("hash of %d chars: %v, want %v", n, err, want)
		}
	}
	// Longer than 27, or a wrong extra character: refused (R07, R09).
	for _, h := range []string{full + "A", full[:8] + "!", "gIVmGARBAGE"} {
		if _, err := testSRS().rev("SRS0=" + h + "=KH=example.com=alice@srs.example.net"); !errors.Is(err, ErrBadHash) {
			t.Errorf("hash %q: %v", h, err)
		}
	}
}

// TestSRSReverseVectors replays the legacy vectors (postsrsd 1.10 and
// Mail::SRS mint these; the secret is tops3cr3t, the day 2024-03-01), with
// the cut-over on that day.
func TestSRSReverseVectors(t *testing.T) {
	s := testSRS().legacy(srsTestDay)
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
		// R32: the field-boundary re-split of a legacy address, accepted inside
		// the legacy window (TestSRSResplit: never for v2).
		{"R32", "SRS0=gfkj=KH=example.co=malice@srs.example.net", "malice@example.co", nil},
		{"R05", "SRS0=gfk=KH=example.com=alice@srs.example.net", "", ErrBadHash},
		{"R06", "SRS0==KH=example.com=alice@srs.example.net", "", ErrBadHash},
		{"tampered", "SRS0=gfkk=KH=example.com=alice@srs.example.net", "", ErrBadHash},
		{"SRS1 tampered", "SRS1=Eb9X=fwd.example==abcd=KH=orig.example=user@srs.example.net", "", ErrBadHash},
		{"R33", "SRS0=gfkj=K1=example.com=alice@srs.example.net", "", ErrMalformed},
		{"R34", "SRS0=gfkj=AKH=example.com=alice@srs.example.net", "", ErrMalformed},
		{"empty stamp", "SRS0=gfkj==example.com=alice@srs.example.net", "", ErrMalformed},
		{"R36", "SRS0=gfkj=KH=example.com@srs.example.net", "", ErrMalformed},
		{"empty user", "SRS0=gfkj=KH=example.com=@srs.example.net", "", ErrMalformed},
		{"empty host", "SRS0=gfkj=KH==alice@srs.example.net", "", ErrMalformed},
		{"SRS1 no rest", "SRS1=Eb9W=fwd.example@srs.example.net", "", ErrMalformed},
		{"SRS1 empty rest", "SRS1=Eb9W=fwd.example=@srs.example.net", "", ErrMalformed},
		{"R49", "SRS0=gfkj=KH=example.com=alice@srs.example.net@srs.example.net", "", ErrMalformed},
		{"control", "SRS0=gfkj=KH=example.com=al\nice@srs.example.net", "", ErrMalformed},
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
		got, err := s.rev(v.in)
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
		addr, err := s.at(day(-age)).fwd(in)
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.rev(addr)
		if age <= 21 && err != nil { // R10
			t.Errorf("age %d: %v", age, err)
		}
		if age > 21 && !errors.Is(err, ErrExpired) { // R11
			t.Errorf("age %d: %v, want expired", age, err)
		}
	}
	for _, n := range []int{1, 2, 500} { // R12: the future is expired
		addr, _ := s.at(day(n)).fwd(in)
		if _, err := s.rev(addr); !errors.Is(err, ErrExpired) {
			t.Errorf("%d days in the future: %v", n, err)
		}
	}
	// R13: the stamp wraps every 1024 days.
	addr, _ := s.fwd(in)
	if got, err := s.at(day(1029)).rev(addr); err != nil || got != in {
		t.Errorf("1029 days later: %q, %v", got, err)
	}
	if _, err := s.at(day(1024 + 22)).rev(addr); !errors.Is(err, ErrExpired) {
		t.Errorf("1046 days later: %v", err)
	}
	// R38: SRS1 never expires.
	srs1, _ := s.fwd("SRS0=abcd=KH=orig.example=user@fwd.example")
	for _, n := range []int{22, 300, -5} {
		if _, err := s.at(day(n)).rev(srs1); err != nil {
			t.Errorf("SRS1 after %d days: %v", n, err)
		}
	}
	// Max age is configurable.
	short := testSRS()
	short.MaxAgeDays = 3
	a3, _ := short.at(day(-3)).fwd(in)
	a4, _ := short.at(day(-4)).fwd(in)
	if _, err := short.rev(a3); err != nil {
		t.Errorf("max age 3, age 3: %v", err)
	}
	if _, err := short.rev(a4); !errors.Is(err, ErrExpired) {
		t.Errorf("max age 3, age 4: %v", err)
	}
	// A stamp is checked before the hash, as postsrsd does.
	if _, err := s.rev("SRS0=xxxx=AA=example.com=alice@srs.example.net"); !errors.Is(err, ErrExpired) {
		t.Errorf("expired stamp with a bad hash: %v", err)
	}
}

func TestSRSRotation(t *testing.T) {
	oldOnly := testSRS("old secret")
	rotated := testSRS("new secret", "old secret")
	addr, _ := oldOnly.fwd("alice@example.com")
	if got, err := rotated.rev(addr); err != nil || got != "alice@example.com" {
		t.Errorf("signed with the old secret: %q, %v", got, err)
	}
	addrNew, _ := rotated.fwd("alice@example.com")
	if addrNew == addr {
		t.Error("the first secret does not sign")
	}
	if _, err := oldOnly.rev(addrNew); !errors.Is(err, ErrBadHash) {
		t.Errorf("new-secret address with only the old secret: %v", err)
	}
	// F51: a 100-byte key.
	long := testSRS(strings.Repeat("k", 100))
	a, _ := long.fwd("alice@example.com")
	if got, err := long.rev(a); err != nil || got != "alice@example.com" {
		t.Errorf("100-byte key: %q, %v", got, err)
	}
}

func TestSRSForwardRefusals(t *testing.T) {
	s := testSRS()
	own, _ := s.fwd("owner@example.org")
	ownLocal := own[:strings.IndexByte(own, '@')]
	for _, v := range []struct {
		in   string
		want string // "" with err, else the result
		err  error
	}{
		{"alice", "", ErrMalformed},                                  // F23
		{"alice@", "", ErrMalformed},                                 // F25
		{"@example.com", "", ErrMalformed},                           // empty local part
		{"a@b@example.com", "", ErrMalformed},                        // F12
		{`"a@b"@example.com`, "", ErrMalformed},                      // F11
		{"user@ho=st.example", "", ErrMalformed},                     // would re-split
		{"a\r\nb@example.com", "", ErrMalformed},                     // control characters
		{"SRS1=abcd@fwd.example", "", ErrMalformed},                  // F31
		{"SRS1=abcd=fwd1.example@x.example", "", ErrMalformed},       // F32
		{"SRS1=h==rest@x.example", "", ErrMalformed},                 // empty SRS1 host
		{"SRS1=h=fwd1.example=@x.example", "", ErrMalformed},         // empty SRS1 rest
		{strings.Repeat("l", 1000) + "@example.com", "", ErrTooLong}, // F18
		{strings.Repeat("l", 40) + "@example.com", "", ErrTooLong},
		{strings.Repeat("l", 39) + "@example.com", "SRS0=", nil},            // local part exactly 64
		{ownLocal + "@foreign.example", ownLocal + "@foreign.example", nil}, // F35: already ours
		{ownLocal + "@srs.example.net", ownLocal + "@srs.example.net", nil}, // F34
		{strings.ToUpper(ownLocal) + "@x.example", strings.ToUpper(ownLocal) + "@x.example", nil},
	} {
		got, err := s.fwd(v.in)
		if !errors.Is(err, v.err) || (v.err == nil) != (err == nil) || !strings.HasPrefix(got, v.want) || (v.err != nil && got != "") {
			t.Errorf("Forward(%q) = %q, %v; want %q…, %v", v.in, got, err, v.want, v.err)
		}
		if err == nil && len(got) > 0 && strings.HasPrefix(got, "SRS") && len(got[:strings.LastIndexByte(got, '@')]) > 64 {
			t.Errorf("Forward(%q) = %q: local part over 64 octets", v.in, got)
		}
	}
	// The address limit: a long SRS domain (150 octets; the most Validate allows).
	big := testSRS()
	big.Domain = strings.Repeat("d", 63) + "." + strings.Repeat("e", 63) + "." + strings.Repeat("f", 22)
	if _, err := big.fwd("a@" + strings.Repeat("h", 100) + ".example"); !errors.Is(err, ErrTooLong) {
		t.Errorf("address over 254 octets: %v", err)
	}
}

// Real envelope senders, as an MX sees them (ESP VERP, list, BATV, SRS of
// other forwarders, quoted, long domains).
var realSenders = []string{
	"0100018b2f4e7c1a-5d6e7f80-1a2b-4c3d-9e8f-0a1b2c3d4e5f-000000@amazonses.com",
	"0102018e3f2a9b7c-7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-000000@eu-west-1.amazonses.com",
	"bounces+12345678-9abc-firstname.lastname=example-corp.com@em1234.example.com",
	"bounce-mc.us21_123456789.9876543-a1b2c3d4e5f6a7b8c9@mail187.mcsv.net",
	"bounce-2157_HTML-123456789-1234567-7654321-1234-abcdefghijklmnopq@bounce.s7.exacttarget.com",
	"prvs=0123456789=notifications-no-reply-account-security-team-eu-west-1@example.com",
	"msprvs1=19876ABCDEFgh=bounces-12345-67@bounce.mandrillapp.com",
	"group-name+bncBDK7ZXH4SEGRBAQ5EKVAMGQEXAMPLE@googlegroups.com",
	"debian-devel-bounces-1234-user=example.org@lists.debian.org",
	"owner-list+M123456=user=example.org@listserv.example.edu",
	"SRS0=Ab12=XY=orig.example=jane@fwd1.example",
	"SRS0=Ab12=XY=a-rather-long-original-domain.example=a.long.local.part@forwarder.example.org",
	"SRS1=Cd34=first.example==Ab12=XY=orig.example=jane@second.example",
	`"john doe"@example.com`,
	`"a@b"@example.com`,
	"alice@mail.a-very-long-subdomain-name-for-a-department.internal.example-corporation.co.uk",
	"info@xn--bcher-kva.example",
	"a@[192.0.2.1]",
	"user@ho=st.example",
	"alice@",
	"nobody",
}

func TestSRSDatabaseForm(t *testing.T) {
	st := newMemStore()
	s := testSRS()
	s.Store = st
	for _, in := range realSenders {
		out, err := s.fwd(in)
		if err != nil {
			t.Errorf("Forward(%q): %v", in, err)
			continue
		}
		at := strings.LastIndexByte(out, '@')
		if at > 64 || len(out) > 254 || out[at+1:] != "srs.example.net" {
			t.Errorf("Forward(%q) = %q: over the SMTP limits or not ours", in, out)
		}
		back, err := s.rev(out)
		want := in
		if hasSRSTag(in, '0') {
			want = "SRS0" + in[4:]
		}
		if hasSRSTag(in, '1') {
			f := strings.SplitN(in[5:strings.IndexByte(in, '@')], "=", 3)
			want = "SRS0" + f[2] + "@" + f[1]
		}
		if err != nil || back != want {
			t.Errorf("Forward(%q) = %q; Reverse: %q, %v; want %q", in, out, back, err, want)
		}
		// case-folded on the way back (some MTAs lower-case bounce addresses):
		// an embedded sender comes back lower-cased, a stored one as it was
		got, err := s.rev(strings.ToLower(out))
		if err != nil || !strings.EqualFold(got, want) || (strings.Contains(out, "=1=") && got != want) {
			t.Errorf("lower-cased %q: %q, %v", out, got, err)
		}
	}
	// The database form: 47 octets with a 4-character hash, any sender.
	long := realSenders[0]
	out, _ := s.fwd(long)
	if l := strings.IndexByte(out, '@'); l != 47 || !strings.HasPrefix(out, "SRS0=") || !strings.Contains(out, "=KH=1=") {
		t.Errorf("database form %q: want SRS0=hhhh=KH=1=<32>@ (47 octets)", out)
	}
	again, _ := s.fwd(long)
	if again != out {
		t.Errorf("same sender, another address: %q, %q", out, again)
	}
	// What fits is still embedded, and nothing is stored for it.
	st.puts = 0
	if got, _ := s.fwd("alice@example.com"); got != "SRS0=gIVm=KH=example.com=alice@srs.example.net" || st.puts != 0 {
		t.Errorf("short sender: %q (%d puts)", got, st.puts)
	}
	// DatabaseAlways: every ordinary sender; SRS senders still become SRS1.
	all := testSRS()
	all.Store, all.DatabaseAlways = st, true
	if got, _ := all.fwd("alice@example.com"); !strings.Contains(got, "=KH=1=") {
		t.Errorf("DatabaseAlways, short sender: %q", got)
	}
	if got, _ := all.fwd("SRS0=Ab12=XY=orig.example=jane@fwd1.example"); !strings.HasPrefix(got, "SRS1=") {
		t.Errorf("DatabaseAlways, SRS0 sender: %q", got)
	}

	key := out[strings.Index(out, "=1=")+3 : strings.IndexByte(out, '@')]
	for _, c := range []struct {
		name string
		addr string
		err  error
	}{
		{"unknown key, validly signed", s.mint(srsFields{stamp: "KH", host: "1", user: strings.Repeat("0", 32)}, srsParams{sep: '=', hashLen: 4}) + "@srs.example.net", ErrUnknownKey},
		{"tampered hash", strings.Replace(out, out[5:9], "AAAA", 1), ErrBadHash},
		{"expired: no lookup", "SRS0=xxxx=AA=1=" + key + "@srs.example.net", ErrExpired},
	} {
		if _, err := s.rev(c.addr); !errors.Is(err, c.err) {
			t.Errorf("%s (%s): %v, want %v", c.name, c.addr, err, c.err)
		}
	}
	// A lost store never relays: the address is refused like a bad hash.
	lost := testSRS()
	lost.Store = newMemStore()
	if _, err := lost.rev(out); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("store lost: %v", err)
	}
	noStore := testSRS()
	if _, err := noStore.rev(out); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("no store: %v", err)
	}
	// A store that cannot answer is a temporary error, both ways.
	down := testSRS()
	down.Store = &memStore{m: map[string]string{}, err: errors.New("connection refused")}
	if _, err := down.fwd(long); !errors.Is(err, ErrStore) {
		t.Errorf("store down, Forward: %v", err)
	}
	if _, err := down.rev(out); !errors.Is(err, ErrStore) {
		t.Errorf("store down, Reverse: %v", err)
	}
	// Without a store, the old refusals.
	if _, err := noStore.fwd(long); !errors.Is(err, ErrTooLong) {
		t.Errorf("no store, long sender: %v", err)
	}
}

func TestSRSConfig(t *testing.T) {
	k := [][]byte{[]byte("k")}
	for _, bad := range []func(*Rewriter){
		func(s *Rewriter) { s.Secrets = nil },
		func(s *Rewriter) { s.Domain = "" },
		func(s *Rewriter) { s.Domain = "a@b" },
		func(s *Rewriter) { s.Secrets = [][]byte{{}} },
		func(s *Rewriter) { s.Separator = '*' },
		func(s *Rewriter) { s.Separator = 0 }, // required: no default of its own
		func(s *Rewriter) { s.HashLength = 0 },
		func(s *Rewriter) { s.HashLength = 28 },
		func(s *Rewriter) { s.HashMin = 0 },
		func(s *Rewriter) { s.HashLength, s.HashMin = 4, 5 },
		func(s *Rewriter) { s.MaxAgeDays = 0 },
		func(s *Rewriter) { s.MaxAgeDays = -1 },
		func(s *Rewriter) { s.MaxAgeDays = 1023 },
		func(s *Rewriter) { s.DatabaseAlways = true },
		func(s *Rewriter) { s.Domain = strings.Repeat("d", 186) }, // the database form would not fit
	} {
		s := postsrsdParams(&Rewriter{Secrets: k, Domain: "x"})
		if err := s.Validate(); err != nil {
			t.Fatalf("the valid base: %v", err)
		}
		bad(s)
		if s.Validate() == nil {
			t.Errorf("%+v: no error", s)
		}
		if _, err := s.fwd("a@b"); err == nil {
			t.Errorf("%+v: Forward works", s)
		}
		if _, err := s.rev("SRS0=gfkj=KH=example.com=alice@x"); err == nil || errors.Is(err, ErrNotSRS) {
			t.Errorf("%+v: Reverse: %v", s, err)
		}
	}
	if err := testSRS().Validate(); err != nil {
		t.Error(err)
	}
}

func TestLoadSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	got, err := LoadSecrets(write("a", "first\r\n\n  spaced secret \nthird\rjunk\nlast"))
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
		if _, err := LoadSecrets(write(name, body)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := LoadSecrets(filepath.Join(dir, "missing")); err == nil {
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
		got, err := s.rev(in)
		if err != nil {
			if got != "" {
				t.Fatalf("Reverse(%q) = %q with error %v", in, got, err)
			}
			n := 0
			for _, e := range []error{ErrNotSRS, ErrBadHash, ErrExpired, ErrMalformed, ErrUnknownKey} {
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
			again, err := c.fwd(got)
			if err == nil && strings.HasPrefix(again, "SRS0") {
				g, _ := parseSRS(again[:strings.LastIndexByte(again, '@')])
				if !hashEqual(f.hash, g.hash) {
					t.Fatalf("Reverse(%q) = %q but Forward gives %q", in, got, again)
				}
			}
		}
	})
}

// FuzzSRSForward: whatever Forward rewrites, Reverse decodes back to the
// sender (SRS0 or the database form) or to the SRS0 form of it (SRS1
// input), the result fits the SMTP limits, and with a store nothing but a
// control character is refused.
func FuzzSRSForward(f *testing.F) {
	for _, seed := range []string{
		"alice@example.com", "Alice.Smith@EXAMPLE.COM", `"a b"@example.com`, "ünï@bücher.example", "a=b@x",
		"SRS0=abcd=KH=orig.example=user@fwd.example", "srs0+x@y", "SRS1=xxxx=orig.example==abcd=KH=o=u@fwd2.example",
		"SRS1=h==r@x", "a@b@c", "@x", "x@", "", "bob@srs.example.net", "SRS0@example.com", "u@h=x",
		realSenders[0], realSenders[4],
	} {
		f.Add(seed)
	}
	s := testSRS()
	s.Store = newMemStore()
	f.Fuzz(func(t *testing.T, in string) {
		out, err := s.fwd(in)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || !hasControl(in) {
				t.Fatalf("Forward(%q): %v", in, err)
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
		back, err := s.rev(out)
		if err != nil {
			t.Fatalf("Forward(%q) = %q, which does not reverse: %v", in, out, err)
		}
		want := in
		if i := strings.IndexByte(in, '@'); i > 0 && strings.IndexByte(in[i+1:], '@') < 0 && strings.Contains(out, "=") && !strings.Contains(out, "=1=") {
			if hasSRSTag(in, '1') { // SRS1 re-hash: decodes to the first forwarder's SRS0
				f := strings.SplitN(in[:i][5:], "=", 3)
				want = "SRS0" + f[2] + "@" + f[1]
			} else if hasSRSTag(in, '0') {
				want = "SRS0" + in[4:]
			}
		}
		if back != want {
			t.Fatalf("Forward(%q) = %q, Reverse = %q, want %q", in, out, back, want)
		}
	})
}
