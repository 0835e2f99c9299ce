package routing

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	tests := []struct {
		in         string
		wantLocal  string
		wantDomain string
		wantErr    bool
	}{
		{in: "user@example.com", wantLocal: "user", wantDomain: "example.com"},
		{in: "User.Name+Tag@Example.COM", wantLocal: "User.Name+Tag", wantDomain: "example.com"},
		{in: "x@bücher.example", wantLocal: "x", wantDomain: "xn--bcher-kva.example"},
		{in: "x@BÜCHER.Example", wantLocal: "x", wantDomain: "xn--bcher-kva.example"},
		{in: "x@xn--bcher-kva.example", wantLocal: "x", wantDomain: "xn--bcher-kva.example"},
		{in: "x@XN--BCHER-KVA.example", wantLocal: "x", wantDomain: "xn--bcher-kva.example"},
		{in: "Ünïcödé@example.com", wantLocal: "Ünïcödé", wantDomain: "example.com"},
		{in: "x@localhost", wantLocal: "x", wantDomain: "localhost"},
		{in: "x@a-b.c0m", wantLocal: "x", wantDomain: "a-b.c0m"},
		// The domain is after the last '@'.
		{in: "a@b@example.com", wantLocal: "a@b", wantDomain: "example.com"},
		{in: "x@" + label63 + ".com", wantLocal: "x", wantDomain: label63 + ".com"},
		{in: strings.Repeat("l", 256) + "@x.com", wantLocal: strings.Repeat("l", 256), wantDomain: "x.com"},

		{in: "", wantErr: true},
		{in: "no-at-sign", wantErr: true},
		{in: "@example.com", wantErr: true},
		{in: "user@", wantErr: true},
		{in: "user@example.com.", wantErr: true},
		{in: "user@.example.com", wantErr: true},
		{in: "user@example..com", wantErr: true},
		{in: "user@.", wantErr: true},
		{in: "user@[1.2.3.4]", wantErr: true},
		{in: "user@[IPv6:2001:db8::1]", wantErr: true},
		{in: "user@exa mple.com", wantErr: true},
		{in: "user@exa_mple.com", wantErr: true},
		{in: "user@example.com/x", wantErr: true},
		{in: "user@" + label63 + "a.com", wantErr: true},
		{in: "us\ner@example.com", wantErr: true},
		{in: "us\x00er@example.com", wantErr: true},
		{in: "us\x7fer@example.com", wantErr: true},
		{in: strings.Repeat("l", 257) + "@x.com", wantErr: true},
		{in: "user@exa\xffmple.com", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			a, err := ParseAddress(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseAddress(%q) = %+v, want error", tt.in, a)
				}
				if !errors.Is(err, ErrBadAddress) {
					t.Errorf("error %v does not wrap ErrBadAddress", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAddress(%q): %v", tt.in, err)
			}
			if a.Local != tt.wantLocal || a.Domain != tt.wantDomain {
				t.Errorf("ParseAddress(%q) = %q @ %q, want %q @ %q", tt.in, a.Local, a.Domain, tt.wantLocal, tt.wantDomain)
			}
			if s := a.String(); s != tt.wantLocal+"@"+tt.wantDomain {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

func TestAddressKey(t *testing.T) {
	tests := []struct{ a, b string }{
		{"User@Example.COM", "user@example.com"},
		{"MiXeD.Case@x.com", "mixed.case@X.COM"},
		{"x@bücher.example", "X@xn--bcher-kva.example"},
	}
	for _, tt := range tests {
		a, err := ParseAddress(tt.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseAddress(tt.b)
		if err != nil {
			t.Fatal(err)
		}
		if a.Key() != b.Key() {
			t.Errorf("Key(%q) = %q, Key(%q) = %q; want equal", tt.a, a.Key(), tt.b, b.Key())
		}
		if k := a.Key(); k != strings.ToLower(k) {
			t.Errorf("Key(%q) = %q is not lower-case", tt.a, k)
		}
		// Key folds; the address itself keeps its local part.
		if a.Local != tt.a[:strings.LastIndexByte(tt.a, '@')] {
			t.Errorf("Local of %q changed to %q", tt.a, a.Local)
		}
	}
	a, _ := ParseAddress("MiXeD@Example.com")
	if got, want := a.Key(), "mixed@example.com"; got != want {
		t.Errorf("Key() = %q, want %q", got, want)
	}
	if got, want := a.String(), "MiXeD@example.com"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	// Different local parts stay different.
	b, _ := ParseAddress("mixed2@example.com")
	if a.Key() == b.Key() {
		t.Errorf("distinct addresses share key %q", a.Key())
	}
}

func TestNormalizeDomain(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM", want: "example.com"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "MÜNCHEN.de", want: "xn--mnchen-3ya.de"},
		{in: "localhost", want: "localhost"},
		{in: "", wantErr: true},
		{in: ".", wantErr: true},
		{in: "example.com.", wantErr: true},
		{in: ".example.com", wantErr: true},
		{in: "a..b", wantErr: true},
		{in: "[1.2.3.4]", wantErr: true},
		{in: "[IPv6:::1]", wantErr: true},
		{in: "ex ample.com", wantErr: true},
		{in: "ex*ample.com", wantErr: true},
		{in: "ex(ample).com", wantErr: true},
		{in: strings.Repeat("a", 64) + ".com", wantErr: true},
		// Not UTF-8: idna would turn the bytes into U+FFFD and encode that.
		{in: "\xb3", wantErr: true},
		{in: "a\xff.com", wantErr: true},
		{in: "\uFFFD.com", wantErr: true},
		{in: "xn--zn7c", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeDomain(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("NormalizeDomain(%q) = %q, want error", tt.in, got)
				}
				if !errors.Is(err, ErrBadAddress) {
					t.Errorf("error %v does not wrap ErrBadAddress", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeDomain(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("NormalizeDomain(%q) = %q, want %q", tt.in, got, tt.want)
			}
			// Normal form is a fixed point.
			if again, err := NormalizeDomain(got); err != nil || again != got {
				t.Errorf("NormalizeDomain(%q) = %q, %v; want it unchanged", got, again, err)
			}
		})
	}
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"user@example.com", "User@Example.COM", "x@bücher.example", "x@xn--bcher-kva.example",
		"a@b@c.com", "@x.com", "x@", "x@a..b", "x@a.", "x@[1.2.3.4]", "x@ＥＸＡＭＰＬＥ.com",
		"x@example。com", "x@a\u200db.com", "x@xn--.com", "x@-a.com", "x@a-.com", "\x00@a.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			if !errors.Is(err, ErrBadAddress) {
				t.Fatalf("ParseAddress(%q): error %v does not wrap ErrBadAddress", s, err)
			}
			return
		}
		i := strings.LastIndexByte(s, '@')
		if i < 0 || a.Local != s[:i] {
			t.Fatalf("ParseAddress(%q): Local %q is not the input's local part", s, a.Local)
		}
		if a.Local == "" || a.Domain == "" {
			t.Fatalf("ParseAddress(%q) = %+v: empty part", s, a)
		}
		d, err := NormalizeDomain(a.Domain)
		if err != nil || d != a.Domain {
			t.Fatalf("ParseAddress(%q): domain %q normalises to %q, %v; want unchanged", s, a.Domain, d, err)
		}
		if a.Domain != strings.ToLower(a.Domain) || strings.HasSuffix(a.Domain, ".") || strings.Contains(a.Domain, "..") {
			t.Fatalf("ParseAddress(%q): domain %q not in normal form", s, a.Domain)
		}
		b, err := ParseAddress(a.String())
		if err != nil || b != a {
			t.Fatalf("ParseAddress(%q) = %+v, but ParseAddress(%q) = %+v, %v", s, a, a.String(), b, err)
		}
		if a.Key() != strings.ToLower(a.Local)+"@"+a.Domain {
			t.Fatalf("Key() = %q", a.Key())
		}
	})
}
