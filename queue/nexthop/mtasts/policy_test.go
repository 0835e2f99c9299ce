package mtasts

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		name string
		body string
		want *Policy // nil: an error wrapping ErrInvalidPolicy
	}{
		{"rfc example, CRLF", "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
			&Policy{ModeEnforce, []string{"mail.example.com", "*.example.net", "backupmx.example.com"}, 604800 * time.Second}},
		{"LF, no final newline", "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400",
			&Policy{ModeTesting, []string{"mx.example.com"}, 86400 * time.Second}},
		{"mixed line ends, blanks around values", "version:STSv1\r\nmode:  enforce \nmx:\tMX.Example.COM.\r\nmax_age: 1\t\n",
			&Policy{ModeEnforce, []string{"mx.example.com"}, time.Second}},
		{"order free, extension ignored", "mx: a.example\nmax_age: 0\nfoo_bar.baz: anything: at all =;\nmode: enforce\nversion: STSv1\n",
			&Policy{ModeEnforce, []string{"a.example"}, 0}},
		{"blank lines and BOM tolerated", "\uFEFFversion: STSv1\n\nmode: enforce\n \nmx: a.example\nmax_age: 60\n\n\n",
			&Policy{ModeEnforce, []string{"a.example"}, time.Minute}},
		{"mode none needs no mx", "version: STSv1\nmode: none\nmax_age: 86400\n",
			&Policy{ModeNone, nil, 86400 * time.Second}},
		{"max_age above a year is a year", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 9999999999\n",
			&Policy{ModeEnforce, []string{"a.example"}, MaxMaxAge}},
		{"max_age at the limit", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557600\n",
			&Policy{ModeEnforce, []string{"a.example"}, MaxMaxAge}},

		{"empty", "", nil},
		{"missing version", "mode: enforce\nmx: a.example\nmax_age: 60\n", nil},
		{"missing mode", "version: STSv1\nmx: a.example\nmax_age: 60\n", nil},
		{"missing max_age", "version: STSv1\nmode: enforce\nmx: a.example\n", nil},
		{"missing mx in enforce", "version: STSv1\nmode: enforce\nmax_age: 60\n", nil},
		{"missing mx in testing", "version: STSv1\nmode: testing\nmax_age: 60\n", nil},
		{"bad mode", "version: STSv1\nmode: strict\nmx: a.example\nmax_age: 60\n", nil},
		{"mode is case-sensitive", "version: STSv1\nmode: Enforce\nmx: a.example\nmax_age: 60\n", nil},
		{"bad version", "version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 60\n", nil},
		{"version repeated", "version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.example\nmax_age: 60\n", nil},
		{"mode repeated", "version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 60\n", nil},
		{"max_age repeated", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 60\nmax_age: 60\n", nil},
		{"max_age negative", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", nil},
		{"max_age empty", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age:\n", nil},
		{"max_age 11 digits", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 10000000000\n", nil},
		{"max_age not a number", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1w\n", nil},
		{"line without colon", "version: STSv1\nmode: enforce\nmx a.example\nmax_age: 60\n", nil},
		{"bad key", "version: STSv1\nmode: enforce\n mx: a.example\nmax_age: 60\n", nil},
		{"html", "<html><body>hello</body></html>\n", nil},
		{"wildcard inside a label", "version: STSv1\nmode: enforce\nmx: mx*.example.com\nmax_age: 60\n", nil},
		{"wildcard not leftmost", "version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 60\n", nil},
		{"bare wildcard", "version: STSv1\nmode: enforce\nmx: *\nmax_age: 60\n", nil},
		{"double wildcard", "version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 60\n", nil},
		{"empty mx", "version: STSv1\nmode: enforce\nmx:\nmax_age: 60\n", nil},
		{"mx with port", "version: STSv1\nmode: enforce\nmx: a.example:25\nmax_age: 60\n", nil},
		{"mx with empty label", "version: STSv1\nmode: enforce\nmx: a..example\nmax_age: 60\n", nil},
		{"mx with hyphen edge", "version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 60\n", nil},
		{"oversized", "version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 60\n" + strings.Repeat("x: y\n", MaxPolicySize/5+1), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy([]byte(tt.body))
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParsePolicy = %+v, want error", got)
				}
				if !errors.Is(err, ErrInvalidPolicy) {
					t.Fatalf("error %v does not wrap ErrInvalidPolicy", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParsePolicy = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMatchMX(t *testing.T) {
	p := &Policy{Mode: ModeEnforce, MX: []string{"*.example.com", "mail.example.net"}, MaxAge: time.Hour}
	tests := []struct {
		host string
		want bool
	}{
		{"mx1.example.com", true},
		{"MX1.Example.COM.", true},
		{"a.b.example.com", false},
		{"example.com", false},
		{".example.com", false},
		{"mx1.example.com.evil", false},
		{"mx1example.com", false},
		{"mail.example.net", true},
		{"mail.example.net.", true},
		{"MAIL.EXAMPLE.NET", true},
		{"x.mail.example.net", false},
		{"example.net", false},
		{"", false},
		{".", false},
	}
	for _, tt := range tests {
		if got := p.MatchMX(tt.host); got != tt.want {
			t.Errorf("MatchMX(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestPolicyStringRoundTrip(t *testing.T) {
	p := &Policy{Mode: ModeTesting, MX: []string{"*.example.com", "mx.example.org"}, MaxAge: 604800 * time.Second}
	q, err := ParsePolicy([]byte(p.String()))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip: %+v, want %+v", q, p)
	}
}

func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
		"version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400",
		"version: STSv1\nmode: none\nmax_age: 86400\n",
		"version: STSv1\nmode: enforce\nmx: *.*.example.com\nmax_age: 60\n",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999999\n",
		"\uFEFFversion:STSv1\n\n mode:enforce\nx:\x00\nmx:A.EXAMPLE.\nmax_age:0",
		"",
		":\n:\r\n\r",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParsePolicy(body)
		if err != nil {
			if p != nil || !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("ParsePolicy = %v, %v", p, err)
			}
			return
		}
		if err := p.validate(); err != nil {
			t.Fatalf("parsed policy invalid: %v", err)
		}
		q, err := ParsePolicy([]byte(p.String()))
		if err != nil || !reflect.DeepEqual(p, q) {
			t.Fatalf("String round trip: %+v, %v; want %+v", q, err, p)
		}
		for _, mx := range p.MX {
			host := mx
			if rest, ok := strings.CutPrefix(mx, "*."); ok {
				host = "x." + rest
			}
			if !p.MatchMX(host) || !p.MatchMX(strings.ToUpper(host)+".") {
				t.Fatalf("MatchMX(%q) false for pattern %q", host, mx)
			}
		}
	})
}
