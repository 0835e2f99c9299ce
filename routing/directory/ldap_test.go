package directory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

// filterShape describes a compiled filter with its assertion values left
// out, and collects the values in order.
func filterShape(p *ber.Packet, values *[]string) string {
	switch p.Tag {
	case ldap.FilterAnd, ldap.FilterOr, ldap.FilterNot:
		var b strings.Builder
		b.WriteString(ldap.FilterMap[uint64(p.Tag)] + "(")
		for _, c := range p.Children {
			b.WriteString(filterShape(c, values) + ",")
		}
		return b.String() + ")"
	case ldap.FilterEqualityMatch, ldap.FilterGreaterOrEqual, ldap.FilterLessOrEqual, ldap.FilterApproxMatch:
		*values = append(*values, p.Children[1].Data.String())
		return ldap.FilterMap[uint64(p.Tag)] + "[" + p.Children[0].Data.String() + "]"
	default:
		// Substrings, presence, extensible: nothing a template of ours
		// holds, and what an injected '*' would turn an equality into.
		return fmt.Sprintf("%s(tag %d)", ldap.FilterMap[uint64(p.Tag)], p.Tag)
	}
}

func compileShape(t *testing.T, filter string) (string, []string) {
	t.Helper()
	p, err := ldap.CompileFilter(filter)
	if err != nil {
		t.Fatalf("CompileFilter(%q): %v", filter, err)
	}
	var values []string
	return filterShape(p, &values), values
}

// splitAddr is the rule of the filter template: %u is before the last '@',
// %d after it; without an '@' %u is all of it and %d empty.
func splitAddr(a string) (local, domain string) {
	if i := strings.LastIndex(a, "@"); i >= 0 {
		return a[:i], a[i+1:]
	}
	return a, ""
}

func TestBuildFilter(t *testing.T) {
	tests := []struct {
		template, addr, want string
	}{
		{"(mail=%s)", "a@x.com", "(mail=a@x.com)"},
		{"(|(mail=%s)(mailAlternateAddress=%s))", "a@x.com", "(|(mail=a@x.com)(mailAlternateAddress=a@x.com))"},
		{"(&(uid=%u)(associatedDomain=%d))", "john.doe@x.com", "(&(uid=john.doe)(associatedDomain=x.com))"},
		{"(&(uid=%u)(associatedDomain=%d))", "a@b@x.com", "(&(uid=a@b)(associatedDomain=x.com))"},
		{"(&(uid=%u)(associatedDomain=%d))", "nodomain", "(&(uid=nodomain)(associatedDomain=))"},
		{"(&(description=100%%)(mail=%s))", "a@x.com", "(&(description=100%)(mail=a@x.com))"},
		{"(mail=%%s)", "a@x.com", "(mail=%s)"},
		{"(mail=%s%%)", "a@x.com", "(mail=a@x.com%)"},
		{"(mail=%x%s)", "a@x.com", "(mail=%xa@x.com)"},
		{"(mail=%s)%", "a@x.com", "(mail=a@x.com)%"},
		// The address is substituted once, never re-read as a template.
		{"(mail=%s)", "%s%u%d%%@x.com", "(mail=%s%u%d%%@x.com)"},
		{"(mail=%s)", "*@x.com", `(mail=\2a@x.com)`},
		{"(mail=%s)", "a)(uid=*@x.com", `(mail=a\29\28uid=\2a@x.com)`},
		{"(mail=%s)", `a\2a@x.com`, `(mail=a\5c2a@x.com)`},
		{"(mail=%s)", "a\x00b@x.com", `(mail=a\00b@x.com)`},
		{"(uid=%u)", "(*)@x.com", `(uid=\28\2a\29)`},
		{"(dc=%d)", "a@(x)*\\", `(dc=\28x\29\2a\5c)`},
	}
	for _, tt := range tests {
		t.Run(tt.template+" "+tt.addr, func(t *testing.T) {
			if got := BuildFilter(tt.template, tt.addr); got != tt.want {
				t.Errorf("BuildFilter(%q, %q) = %q, want %q", tt.template, tt.addr, got, tt.want)
			}
		})
	}
}

// No address can change the structure of the filter: whatever is in it,
// the filter compiles to the template's structure with the address parts
// as the assertion values, byte for byte.
func TestBuildFilterInjection(t *testing.T) {
	templates := []string{
		"(mail=%s)",
		"(|(mail=%s)(mailAlternateAddress=%s))",
		"(&(uid=%u)(associatedDomain=%d))",
		"(&(objectClass=mailRecipient)(|(mail=%s)(uid=%u)))",
	}
	addrs := []string{
		"plain@x.com",
		"*@x.com",
		"*",
		"a*b@x.com",
		"a@*",
		")(mail=*",
		"x)(|(mail=*)@x.com",
		"x))(|(objectClass=*)(mail=x@x.com",
		"a)(!(mail=a@x.com",
		`\@x.com`,
		`a\2a@x.com`,
		`a\@x.com`,
		`\`,
		"\x00@x.com",
		"a\x00)(mail=*@x.com",
		"(*)\\\x00@(*)\\\x00",
		"a=b@x.com",
		"a&b|c!d@x.com",
		"a~=b@x.com",
		"a:dn:=b@x.com",
		"ü@bücher.example",
		"\xff\xfe@x.com", // not UTF-8
		"@",
		"",
	}
	for _, tmpl := range templates {
		// The template with a harmless value is the structure to keep.
		wantShape, _ := compileShape(t, BuildFilter(tmpl, "v@v"))
		for _, addr := range addrs {
			t.Run(tmpl+" "+addr, func(t *testing.T) {
				f := BuildFilter(tmpl, addr)
				// Every special character of the address is escaped: what
				// is left unescaped of them is the template's own.
				fixed := strings.NewReplacer("%s", "", "%u", "", "%d", "").Replace(tmpl)
				for _, c := range []string{"(", ")", "*", "\x00"} {
					if strings.Count(f, c) != strings.Count(fixed, c) {
						t.Errorf("%q has %d %q, template %d", f, strings.Count(f, c), c, strings.Count(fixed, c))
					}
				}
				for i := 0; i < len(f); i++ {
					if f[i] == '\\' {
						if i+2 >= len(f) || !isHex(f[i+1]) || !isHex(f[i+2]) {
							t.Fatalf("%q: backslash at %d is not an escape", f, i)
						}
					}
				}
				shape, values := compileShape(t, f)
				if shape != wantShape {
					t.Errorf("filter %q compiles to %s, want %s", f, shape, wantShape)
				}
				local, domain := splitAddr(addr)
				var want []string
				for _, m := range placeholders(tmpl) {
					want = append(want, map[string]string{"%s": addr, "%u": local, "%d": domain}[m])
				}
				// Constant assertions (objectClass=…) come through as is.
				var gotVars []string
				for _, v := range values {
					if v != "mailRecipient" {
						gotVars = append(gotVars, v)
					}
				}
				if strings.Join(gotVars, "\x01") != strings.Join(want, "\x01") || len(gotVars) != len(want) {
					t.Errorf("filter %q: assertion values %q, want %q", f, gotVars, want)
				}
			})
		}
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// placeholders lists the %s, %u and %d of a template in order.
func placeholders(tmpl string) []string {
	var out []string
	for i := 0; i+1 < len(tmpl); i++ {
		if tmpl[i] == '%' {
			if p := tmpl[i : i+2]; p == "%s" || p == "%u" || p == "%d" {
				out = append(out, p)
			}
			i++
		}
	}
	return out
}

func FuzzBuildFilter(f *testing.F) {
	for _, s := range []string{"a@x.com", "*)(mail=*", "\\", "\x00", "ü@x", "\xff"} {
		f.Add(s)
	}
	const tmpl = "(|(mail=%s)(&(uid=%u)(dc=%d)))"
	f.Fuzz(func(t *testing.T, addr string) {
		p, err := ldap.CompileFilter(BuildFilter(tmpl, addr))
		if err != nil {
			t.Fatalf("%q: %v", addr, err)
		}
		var values []string
		shape := filterShape(p, &values)
		var wantValues []string
		wantShape := filterShape(must(ldap.CompileFilter(BuildFilter(tmpl, "v@v"))), &wantValues)
		local, domain := splitAddr(addr)
		if shape != wantShape || len(values) != 3 || values[0] != addr || values[1] != local || values[2] != domain {
			t.Fatalf("%q: compiled to %s %q", addr, shape, values)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestNewLDAPSourceConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := LDAPConfig{URLs: []string{"ldap://127.0.0.1:389"}, Timeout: time.Second, PoolSize: 2, Base: "dc=x", Filter: "(mail=%s)", Schema: MailRecipientSchema}
	tests := []struct {
		name    string
		mod     func(*LDAPConfig)
		wantErr string // "" for success
	}{
		{"valid", func(*LDAPConfig) {}, ""},
		{"ldaps", func(c *LDAPConfig) { c.URLs = []string{"ldaps://ldap.example.com"} }, ""},
		{"several", func(c *LDAPConfig) { c.URLs = []string{"ldap://a:389", "ldaps://b:636"} }, ""},
		{"template with %u only", func(c *LDAPConfig) { c.Filter = "(uid=%u)" }, ""},
		{"no URL", func(c *LDAPConfig) { c.URLs = nil }, "no server URL"},
		{"http URL", func(c *LDAPConfig) { c.URLs = []string{"http://ldap.example.com"} }, "http://ldap.example.com"},
		{"ldapi URL", func(c *LDAPConfig) { c.URLs = []string{"ldap://ok:389", "ldapi:///run/slapd.sock"} }, "ldapi:///run/slapd.sock"},
		{"bare host", func(c *LDAPConfig) { c.URLs = []string{"ldap.example.com:389"} }, "ldap.example.com:389"},
		{"empty filter", func(c *LDAPConfig) { c.Filter = "" }, "filter"},
		{"filter without %", func(c *LDAPConfig) { c.Filter = "(mail=fixed@x.com)" }, "(mail=fixed@x.com)"},
		{"missing CA file", func(c *LDAPConfig) { c.CAFile = filepath.Join(dir, "missing.pem") }, "CA file"},
		{"CA file without PEM", func(c *LDAPConfig) { c.CAFile = notPEM }, "no PEM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			cfg.URLs = append([]string(nil), good.URLs...)
			tt.mod(&cfg)
			s, err := NewLDAPSource(cfg, quietLog())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("NewLDAPSource: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				t.Fatalf("NewLDAPSource accepted %+v", cfg)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
		})
	}
}

// A directory that is down is a temporary failure, answered quickly.
func TestLDAPLookupUnavailable(t *testing.T) {
	tests := []struct {
		name string
		urls []string
		ctx  func() (context.Context, context.CancelFunc)
	}{
		{"nothing listening", []string{"ldap://127.0.0.1:1"}, nil},
		{"none of several listening", []string{"ldap://127.0.0.1:1", "ldaps://127.0.0.1:1"}, nil},
		{"cancelled context", []string{"ldap://127.0.0.1:1"}, func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}},
		{"expired deadline", []string{"ldap://127.0.0.1:1"}, func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewLDAPSource(LDAPConfig{
				URLs: tt.urls, Base: "dc=x", Filter: "(mail=%s)", Schema: MailRecipientSchema,
				Timeout: 500 * time.Millisecond, PoolSize: 2,
			}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			start := time.Now()
			got, err := s.Lookup(ctx, "a@x.com")
			if !errors.Is(err, routing.ErrUnavailable) {
				t.Fatalf("Lookup = %q, %v; want ErrUnavailable", got, err)
			}
			if errors.Is(err, routing.ErrNotFound) || got != nil {
				t.Errorf("Lookup = %q, %v: a down directory must not look like an unknown user", got, err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Lookup took %v", d)
			}
			if tt.ctx == nil {
				for _, u := range tt.urls {
					if !strings.Contains(err.Error(), u) {
						t.Errorf("error %q does not name %s", err, u)
					}
				}
			}
			// Through the expander it is a temporary failure too.
			e := &routing.Expander{Source: s, Limits: routing.PostfixLimits}
			if _, err := e.Expand(ctx, "a@x.com"); !errors.Is(err, routing.ErrUnavailable) {
				t.Errorf("Expand: %v, want ErrUnavailable", err)
			}
		})
	}
}

func TestParseLDAPURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ldapURL
		err  bool
	}{
		{"ldap:///ou=people,dc=example,dc=net??sub?(mail=*)", ldapURL{base: "ou=people,dc=example,dc=net", scope: ldap.ScopeWholeSubtree, filter: "(mail=*)"}, false},
		{"ldap://ignored.example:389/cn=team,dc=x", ldapURL{base: "cn=team,dc=x", scope: ldap.ScopeBaseObject, filter: "(objectClass=*)"}, false},
		{"LDAP:///dc=x?mail,cn?one?objectClass=person", ldapURL{base: "dc=x", attrs: []string{"mail", "cn"}, scope: ldap.ScopeSingleLevel, filter: "(objectClass=person)"}, false},
		{"ldaps:///o=a%2Cb%20c??base?(cn=x%3Fy)", ldapURL{base: "o=a,b c", scope: ldap.ScopeBaseObject, filter: "(cn=x?y)"}, false},
		{"ldap://host", ldapURL{scope: ldap.ScopeBaseObject, filter: "(objectClass=*)"}, false},
		{"ldap:///dc=x???(mail=*)?e-bindname=cn=x", ldapURL{base: "dc=x", scope: ldap.ScopeBaseObject, filter: "(mail=*)"}, false},
		{"ldap:///dc=x??sideways", ldapURL{}, true},
		{"ldap:///dc=x???(mail=*", ldapURL{}, true},
		{"ldap:///dc=x%zz", ldapURL{}, true},
		{"ldap:///dc=x????!e-bindname=cn=x", ldapURL{}, true},
	} {
		got, err := parseLDAPURL(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("%s: err %v, want error %v", tc.in, err, tc.err)
			continue
		}
		if !tc.err && (got.base != tc.want.base || got.scope != tc.want.scope || got.filter != tc.want.filter || strings.Join(got.attrs, ",") != strings.Join(tc.want.attrs, ",")) {
			t.Errorf("%s: %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseLDAPURL(f *testing.F) {
	f.Add("ldap:///ou=people,dc=example,dc=net?mail?sub?(mail=*)?!x")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseLDAPURL("ldap://" + s)
		if err == nil && u.filter != "" {
			if _, err := ldap.CompileFilter(u.filter); err != nil {
				t.Fatalf("%q: accepted filter %q does not compile", s, u.filter)
			}
		}
	})
}
