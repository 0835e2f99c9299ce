package directory

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

func mustParseMap(t *testing.T, cf string) *PostfixMap {
	t.Helper()
	m, err := ParsePostfixMapBytes([]byte(cf), "test.cf")
	if err != nil {
		t.Fatalf("ParsePostfixMapBytes: %v", err)
	}
	return m
}

func TestParsePostfixMap(t *testing.T) {
	tests := []struct {
		name     string
		cf       string
		check    func(t *testing.T, m *PostfixMap)
		warnings []string // substrings, one per warning, in order
	}{
		{"defaults", "search_base = dc=x\n", func(t *testing.T, m *PostfixMap) {
			c := m.Config
			if !slices.Equal(c.URLs, []string{"ldap://localhost:389"}) || c.Filter != "mailacceptinggeneralid=%s" ||
				c.Timeout != 10*time.Second || c.Scope != "sub" || c.Deref != 0 || c.SizeLimit != 0 ||
				c.StartTLS || c.RequireCert || c.BindDN != "" {
				t.Errorf("config %+v", c)
			}
			tb := c.Table
			if !slices.Equal(tb.ResultAttributes, []string{"maildrop"}) || tb.ResultFormat != "%s" ||
				tb.RecursionLimit != 1000 || tb.ExpansionLimit != 0 || tb.Domains != nil ||
				tb.SpecialAttributes != nil || tb.LeafAttributes != nil || tb.TerminalAttributes != nil {
				t.Errorf("table %+v", tb)
			}
		}, nil},
		{"continuations, comments, CRLF, '#' in a value", "# a map\r\n" +
			"server_host = ldap1.example.com\r\n" +
			"  ldap2.example.com:1389,ldaps://ldap3.example.com:636/dc=ignored\r\n" +
			"    # a comment inside a continued setting\r\n" +
			"\r\n" +
			"\tLDAP://ldap4.example.com\r\n" +
			"server_port=3389\r\n" +
			"search_base   =   dc=example, dc=com   \r\n" +
			"query_filter = (|(mail=%s)\r\n" +
			"    (mailAlternateAddress=%s))\r\n" +
			"bind_pw = se#cret\r\n" +
			"bind_dn = cn=reader\r\n" +
			"result_attribute = mailForwardingAddress,mail  maildrop\r\n", func(t *testing.T, m *PostfixMap) {
			c := m.Config
			want := []string{"ldap://ldap1.example.com:3389", "ldap://ldap2.example.com:1389", "ldaps://ldap3.example.com:636", "ldap://ldap4.example.com"}
			if !slices.Equal(c.URLs, want) {
				t.Errorf("URLs %q, want %q", c.URLs, want)
			}
			if c.Base != "dc=example, dc=com" || c.BindPassword != "se#cret" || c.BindDN != "cn=reader" {
				t.Errorf("base %q, password %q, bind DN %q", c.Base, c.BindPassword, c.BindDN)
			}
			if c.Filter != "(|(mail=%s)    (mailAlternateAddress=%s))" {
				t.Errorf("filter %q: continuation lines are joined as written", c.Filter)
			}
			if got := c.Table.ResultAttributes; !slices.Equal(got, []string{"mailForwardingAddress", "mail", "maildrop"}) {
				t.Errorf("result attributes %q", got)
			}
		}, nil},
		{"every supported key", `server_host = a.example.com b.example.com
server_port = 10389
search_base = ou=%d,dc=example,dc=com
query_filter = (uid=%u)
result_attribute =
special_result_attribute = member, uniqueMember
leaf_result_attribute = mail
terminal_result_attribute = maildrop
result_format = smtp:[%s]
domain = Example.com, !bad.example.com
scope = one
bind = simple
bind_dn = cn=x
bind_pw = y
version = 3
start_tls = YES
tls_require_cert = yes
timeout = 3
expansion_limit = 20
recursion_limit = 7
dereference = 3
chase_referrals = no
debuglevel = 255
`, func(t *testing.T, m *PostfixMap) {
			c := m.Config
			if !slices.Equal(c.URLs, []string{"ldap://a.example.com:10389", "ldap://b.example.com:10389"}) ||
				c.Scope != "one" || !c.StartTLS || !c.RequireCert || c.Timeout != 3*time.Second ||
				c.SizeLimit != 20 || c.Deref != 3 || c.BindDN != "cn=x" || c.BindPassword != "y" {
				t.Errorf("config %+v", c)
			}
			tb := c.Table
			if tb.ResultAttributes != nil || !slices.Equal(tb.SpecialAttributes, []string{"member", "uniqueMember"}) ||
				!slices.Equal(tb.LeafAttributes, []string{"mail"}) || !slices.Equal(tb.TerminalAttributes, []string{"maildrop"}) ||
				tb.ResultFormat != "smtp:[%s]" || !slices.Equal(tb.Domains, []string{"Example.com", "!bad.example.com"}) ||
				tb.ExpansionLimit != 20 || tb.RecursionLimit != 7 {
				t.Errorf("table %+v", tb)
			}
		}, nil},
		{"bind = no drops the DN", "bind = no\nbind_dn = cn=x\nbind_pw = y\n", func(t *testing.T, m *PostfixMap) {
			if m.Config.BindDN != "" || m.Config.BindPassword != "" {
				t.Errorf("bind DN %q", m.Config.BindDN)
			}
		}, nil},
		{"result_filter is result_format's old name", "result_filter = %u\n", func(t *testing.T, m *PostfixMap) {
			if m.Config.Table.ResultFormat != "%u" {
				t.Errorf("result format %q", m.Config.Table.ResultFormat)
			}
		}, nil},
		{"result_format wins over result_filter", "result_filter = %u\nresult_format = %d\n", func(t *testing.T, m *PostfixMap) {
			if m.Config.Table.ResultFormat != "%d" {
				t.Errorf("result format %q", m.Config.Table.ResultFormat)
			}
		}, nil},
		{"size_limit defaults to expansion_limit but can differ", "expansion_limit = 5\nsize_limit = 0\n", func(t *testing.T, m *PostfixMap) {
			if m.Config.SizeLimit != 0 || m.Config.Table.ExpansionLimit != 5 {
				t.Errorf("size limit %d", m.Config.SizeLimit)
			}
		}, nil},
		{"empty value", "search_base =\nbind_pw=\n", func(t *testing.T, m *PostfixMap) {
			if v, ok := m.Params["bind_pw"]; !ok || v != "" || m.Config.Base != "" {
				t.Errorf("params %q", m.Params)
			}
		}, nil},
		{"$name is not expanded, as in Postfix", "bind_dn = x\nsearch_base = dc=$bind_dn\nbind_pw = pa$$word${bind_dn}$nothing\n", func(t *testing.T, m *PostfixMap) {
			if m.Config.Base != "dc=$bind_dn" || m.Config.BindPassword != "pa$$word${bind_dn}$nothing" {
				t.Errorf("base %q, password %q", m.Config.Base, m.Config.BindPassword)
			}
		}, nil},
		{"ignored keys warn", "cache = yes\ncache_expiry = 30\ncache_size = 32768\ntls_random_file = /dev/urandom\ntls_cipher_suite = HIGH\nversion = 2\n",
			nil, []string{"cache (line 1)", "cache_expiry (line 2)", "cache_size (line 3)", "tls_cipher_suite (line 5)", "tls_random_file (line 4)", "version = 2 (line 6): LDAPv3"}},
		{"duplicate key: last wins", "search_base = a\nsearch_base = b\n", func(t *testing.T, m *PostfixMap) {
			if m.Config.Base != "b" {
				t.Errorf("base %q", m.Config.Base)
			}
		}, []string{"line 1 and again on line 2"}},
		{"fixed filter warns", "query_filter = (objectClass=*)\n", nil, []string{"no % expansion"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParseMap(t, tt.cf)
			if tt.check != nil {
				tt.check(t, m)
			}
			ws := m.Warnings
			if strings.Contains(tt.cf, "$") {
				// The $name warnings come first.
				var rest []string
				for _, w := range ws {
					if !strings.Contains(w, "does not expand") {
						rest = append(rest, w)
					}
				}
				if len(rest) != len(ws)-2 {
					t.Errorf("want two $name warnings, got %q", ws)
				}
				ws = rest
			}
			if len(ws) != len(tt.warnings) {
				t.Fatalf("warnings %q, want %d", ws, len(tt.warnings))
			}
			for i, w := range tt.warnings {
				if !strings.Contains(ws[i], w) || !strings.HasPrefix(ws[i], "test.cf: ") {
					t.Errorf("warning %q does not mention %q", ws[i], w)
				}
			}
		})
	}
}

func TestParsePostfixMapErrors(t *testing.T) {
	tests := []struct{ cf, want string }{
		{"bogus = 1\n", `unsupported key "bogus" (line 1)`},
		{"# x\n\nServer_Host = a\n", `unsupported key "Server_Host" (line 3)`},
		{"server_host = a\nsasl_mechs = GSSAPI\n", `unsupported key "sasl_mechs" (line 2): SASL`},
		{"sasl_realm = R\n", `unsupported key "sasl_realm" (line 1)`},
		{"sasl_authz_id = R\n", `unsupported key "sasl_authz_id" (line 1)`},
		{"sasl_minssf = 1\n", `unsupported key "sasl_minssf" (line 1)`},
		{"ldapsource_server_host = a\n", `unsupported key "ldapsource_server_host" (line 1)`},
		{"server_host\n", "line 1: missing '='"},
		{" server_host = a\n", "line 1: continuation line without a setting"},
		{"= a\n", "line 1: missing name"},
		{"server host = a\n", `line 1: name "server host" contains whitespace`},
		{"server_host = ldap://a\n  ldapi://%2Frun%2Fslapd.sock\n", `server_host = "ldap://a  ldapi://%2Frun%2Fslapd.sock" (line 1): ldapi://%2Frun%2Fslapd.sock: ldapi://`},
		{"server_host = http://a\n", "server_host"},
		{"server_port = ldap\n", `server_port = "ldap" (line 1): not a number`},
		{"server_port = 0\n", "server_port"},
		{"bind = sasl\n", `bind = "sasl" (line 1): SASL binds are not supported`},
		{"bind = maybe\n", "bind"},
		{"domain = a.com, hash:/etc/postfix/domains\n", `domain = "a.com, hash:/etc/postfix/domains" (line 1): hash:/etc/postfix/domains`},
		{"domain = /etc/postfix/domains\n", "domain"},
		{"scope = subtree\n", `scope = "subtree" (line 1)`},
		{"version = 4\n", "version"},
		{"start_tls = true\n", `start_tls = "true" (line 1): want yes or no`},
		{"tls_require_cert = try\n", "tls_require_cert"},
		{"tls_cert = /c.pem\n", "tls_cert and tls_key"},
		{"tls_key = /k.pem\n", "tls_cert and tls_key"},
		{"timeout = 5s\n", "timeout"},
		{"timeout = 0\n", "timeout"},
		{"size_limit = -1\n", "size_limit"},
		{"expansion_limit = x\n", "expansion_limit"},
		{"recursion_limit = 0\n", `recursion_limit = "0" (line 1): must be at least 1`},
		{"dereference = 4\n", "dereference"},
		{"chase_referrals = yes\n", `chase_referrals = "yes" (line 1): following referrals is not supported`},
		{"chase_referrals = 1\n", "chase_referrals"},
		{"debuglevel = lots\n", "debuglevel"},
		{"query_filter = (mail=%x)\n", "unknown expansion %x"},
		{"query_filter = (mail=%s)%\n", "lone %"},
		{"search_base = dc=%q\n", "search base"},
		{"result_format = %s%\n", "result format"},
		{"result_attribute =\n", "no result attributes"},
	}
	for _, tt := range tests {
		t.Run(tt.cf, func(t *testing.T) {
			m, err := ParsePostfixMapBytes([]byte(tt.cf), "test.cf")
			if err == nil {
				t.Fatalf("accepted: %+v", m.Config)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "test.cf") {
				t.Errorf("error %q does not mention %q and the file", err, tt.want)
			}
		})
	}
}

func TestParsePostfixMapFile(t *testing.T) {
	dir := t.TempDir()
	cf := filepath.Join(dir, "virtual.cf")
	if err := os.WriteFile(cf, []byte("server_host = ldap://127.0.0.1:1\nsearch_base = dc=x\nquery_filter = (mail=%s)\nresult_attribute = mail\ntimeout = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := ParsePostfixMap(cf)
	if err != nil {
		t.Fatal(err)
	}
	m.Config.PoolSize = 2 // a .cf has none (the binary gives directory.ldap's)
	src, err := m.Source(quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer src.(*LDAPSource).Close()
	// A key no template can be filled for is answered without the
	// (down) server; a searchable one is a temporary failure.
	ctx := context.Background()
	if ms, err := src.Lookup(ctx, ""); err != nil || ms != nil {
		t.Errorf("Lookup(\"\") = %v, %v; want not found without a query", ms, err)
	}
	if _, err := src.Lookup(ctx, "a@x.com"); !errors.Is(err, routing.ErrUnavailable) || !strings.Contains(err.Error(), "ldap://127.0.0.1:1") {
		t.Errorf("Lookup = %v, want routing.ErrUnavailable naming the server", err)
	}
	if _, err := ParsePostfixMap(filepath.Join(dir, "missing.cf")); err == nil || !strings.Contains(err.Error(), "missing.cf") {
		t.Errorf("missing file: %v", err)
	}
}

// TestPostfixQueryExpansion: search_base and query_filter expansion, and
// the keys Postfix answers "not found" for without a query.
func TestPostfixQueryExpansion(t *testing.T) {
	const none = "(suppressed)"
	tests := []struct {
		base, filter, format string
		domains              []string
		key                  string
		wantBase, wantFilter string // wantFilter none: no query
	}{
		{"dc=x", "(mail=%s)", "", nil, "User@Example.COM", "dc=x", "(mail=user@example.com)"},
		{"dc=x", "mail=%s", "", nil, "a@b.c", "dc=x", "(mail=a@b.c)"},
		{"dc=x", "(&(uid=%u)(dc=%d))", "", nil, "john@example.com", "dc=x", "(&(uid=john)(dc=example.com))"},
		{"dc=x", "(&(uid=%U)(dc=%D)(m=%S))", "", nil, "john@example.com", "dc=x", "(&(uid=john)(dc=example.com)(m=john@example.com))"},
		{"dc=x", "(uid=%u)", "", nil, "john", "dc=x", "(uid=john)"},
		{"dc=x", "(uid=%u)", "", nil, "a@b@example.com", "dc=x", "(uid=a@b)"},
		{"dc=x", "(uid=%u)", "", nil, "@example.com", "", none},
		{"dc=x", "(uid=%u)", "", nil, "john@", "dc=x", "(uid=john)"},
		{"dc=x", "(mail=%s)", "", nil, "@example.com", "dc=x", "(mail=@example.com)"},
		{"dc=x", "(dc=%d)", "", nil, "john", "", none},
		{"dc=x", "(dc=%d)", "", nil, "john@", "", none},
		{"dc=x", "(dc=%D)", "", nil, "@example.com", "dc=x", "(dc=example.com)"},
		{"dc=x", "(&(dc=%1)(dc=%2)(dc=%3))", "", nil, "a@mail.example.com", "dc=x", "(&(dc=com)(dc=example)(dc=mail))"},
		{"dc=x", "(&(dc=%1)(dc=%2)(dc=%3))", "", nil, "a@example.com", "", none},
		{"dc=x", "(dc=%1)", "", nil, "a@.com.", "dc=x", "(dc=com)"},
		{"dc=x", "(dc=%1)", "", nil, "com", "", none},
		{"dc=x", "(&(mail=%s)(x=100%%))", "", nil, "a@b", "dc=x", "(&(mail=a@b)(x=100%))"},
		// RFC 4515: no key changes the filter's structure.
		{"dc=x", "(mail=%s)", "", nil, "*)(uid=*@x", "dc=x", `(mail=\2a\29\28uid=\2a@x)`},
		{"dc=x", "(uid=%u)", "", nil, `a\(b@x`, "dc=x", `(uid=a\5c\28b)`},
		// Keys are substituted once, never re-read as templates.
		{"dc=x", "(mail=%s)", "", nil, "%s%u@x", "dc=x", "(mail=%s%u@x)"},
		// search_base expansions are DN-quoted.
		{"uid=%u,ou=%d,dc=x", "(objectClass=*)", "", nil, "a,b+c=d@x;y", `uid=a\2Cb\2Bc\3Dd,ou=x\3By,dc=x`, "(objectClass=*)"},
		{"cn=%s,dc=x", "(objectClass=*)", "", nil, ` #a"<b>\@x`, `cn=\20\23a\22\3Cb\3E\5C@x,dc=x`, "(objectClass=*)"},
		{"dc=%2,dc=%1", "(mail=%s)", "", nil, "a@example.net", "dc=example,dc=net", "(mail=a@example.net)"},
		{"ou=%u,dc=x", "(mail=%s)", "", nil, "@x", "", none},
		{"ou=%d,dc=x", "(mail=%s)", "", nil, "x", "", none},
		// The result format's key expansions suppress the query too.
		{"dc=x", "(mail=%s)", "%U", nil, "@example.com", "", none},
		{"dc=x", "(mail=%s)", "%D", nil, "user", "", none},
		{"dc=x", "(mail=%s)", "%3", nil, "a@b.c", "", none},
		{"dc=x", "(mail=%s)", "%u %d", nil, "user", "dc=x", "(mail=user)"},
		// Whitespace between components, from continuation lines.
		{"dc=x", "(|(mail=%s)\t (alt=%s) )", "", nil, "a@b", "dc=x", "(|(mail=a@b)(alt=a@b))"},
		{"dc=x", " ( | (mail=%s))", "", nil, "a@b", "dc=x", "(|(mail=a@b))"},
		// domain: only user@listed-domain.
		{"dc=x", "(mail=%s)", "", []string{"Example.com", "example.org"}, "a@EXAMPLE.com", "dc=x", "(mail=a@example.com)"},
		{"dc=x", "(mail=%s)", "", []string{"example.com", "example.org"}, "a@example.org", "dc=x", "(mail=a@example.org)"},
		{"dc=x", "(mail=%s)", "", []string{"example.com"}, "a@sub.example.com", "", none},
		{"dc=x", "(mail=%s)", "", []string{"example.com"}, "@example.com", "", none},
		{"dc=x", "(mail=%s)", "", []string{"example.com"}, "example.com", "", none},
		{"dc=x", "(mail=%s)", "", []string{"example.com"}, "a", "", none},
		{"dc=x", "(mail=%s)", "", []string{"example.com"}, "a@", "", none},
		{"dc=x", "(mail=%s)", "", []string{"!bad.example.com", "bad.example.com"}, "a@bad.example.com", "", none},
		{"dc=x", "(mail=%s)", "", nil, "", "", none},
	}
	for _, tt := range tests {
		t.Run(tt.filter+" "+tt.base+" "+tt.format+" "+tt.key, func(t *testing.T) {
			ct, err := compileTable(tt.base, tt.filter, LDAPTable{ResultAttributes: []string{"mail"}, ResultFormat: tt.format, Domains: tt.domains})
			if err != nil {
				t.Fatal(err)
			}
			k := splitKey(strings.ToLower(tt.key))
			if !ct.eligible(k) {
				if tt.wantFilter != none {
					t.Errorf("key suppressed, want filter %q", tt.wantFilter)
				}
				return
			}
			if tt.wantFilter == none {
				t.Fatalf("key not suppressed")
			}
			base, filter := expandKey(ct.base, k, quoteDN), expandKey(ct.filter, k, ldap.EscapeFilter)
			if base != tt.wantBase || filter != tt.wantFilter {
				t.Errorf("base %q, filter %q; want %q, %q", base, filter, tt.wantBase, tt.wantFilter)
			}
			if _, err := ldap.CompileFilter(filter); err != nil {
				t.Errorf("filter %q does not compile: %v", filter, err)
			}
			if _, err := ldap.ParseDN(base); err != nil {
				t.Errorf("base %q does not parse: %v", base, err)
			}
		})
	}
}

func TestPostfixResultFormat(t *testing.T) {
	tests := []struct {
		format, key, value string
		want               string // "-" for skipped
	}{
		{"%s", "k@x", "a@b.c", "a@b.c"},
		{"%s", "k@x", "", "-"},
		{"smtp:[%s]", "k@x", "mx.example.com", "smtp:[mx.example.com]"},
		{"%u", "k@x", "a@b.c", "a"},
		{"%u", "k@x", "plain", "plain"},
		{"%u", "k@x", "@b.c", "-"},
		{"%d", "k@x", "a@b.c", "b.c"},
		{"%d", "k@x", "plain", "-"},
		{"%d", "k@x", "a@", "-"},
		{"%u@new.%d", "k@x", "a@b@c.d", "a@b@new.c.d"},
		{"%S|%U|%D|%1|%2", "key@mail.example", "v", "key@mail.example|key|mail.example|example|mail"},
		{"100%%:%s", "k@x", "v", "100%:v"},
		{"%s", "k@x", "a,b", "a,b"}, // the expander splits lists
	}
	for _, tt := range tests {
		t.Run(tt.format+" "+tt.value, func(t *testing.T) {
			ct, err := compileTable("dc=x", "(mail=%s)", LDAPTable{ResultAttributes: []string{"v"}, ResultFormat: tt.format})
			if err != nil {
				t.Fatal(err)
			}
			got, ok := ct.expandResult(tt.value, splitKey(tt.key))
			if !ok {
				got = "-"
			}
			if got != tt.want {
				t.Errorf("expandResult(%q) = %q, want %q", tt.value, got, tt.want)
			}
		})
	}
}

func TestNormalizeFilter(t *testing.T) {
	for in, want := range map[string]string{
		"mail=%s":                    "(mail=%s)",
		"  mail=%s  ":                "(mail=%s)",
		"(|(a=%s)\n\t(b=%s))":        "(|(a=%s)\n\t(b=%s))", // newlines are not Postfix's (continuations drop them)
		"(|(a=%s)    (b=%s)  )":      "(|(a=%s)(b=%s))",
		"(& (|(a=%s) (b=%s)) (c=1))": "(&(|(a=%s)(b=%s))(c=1))",
		"(cn=a b) ":                  "(cn=a b)",
		"(cn= a )":                   "(cn= a )",
		"( ! (cn=a!) )":              "(!(cn=a!))",
		"(cn=a & (b)":                "(cn=a & (b)",
	} {
		if got := normalizeFilter(in); got != want {
			t.Errorf("normalizeFilter(%q) = %q, want %q", in, got, want)
		}
	}
}

// dirEntry builds an entry with attributes in the given order (as a
// server returns them): name, values..., "", name, values...
func dirEntry(dn string, attrs ...string) *ldap.Entry {
	e := &ldap.Entry{DN: dn}
	var cur *ldap.EntryAttribute
	for _, a := range attrs {
		switch {
		case cur == nil:
			cur = &ldap.EntryAttribute{Name: a}
		case a == "":
			e.Attributes = append(e.Attributes, cur)
			cur = nil
		default:
			cur.Values = append(cur.Values, a)
		}
	}
	if cur != nil {
		e.Attributes = append(e.Attributes, cur)
	}
	return e
}

// TestPostfixGather: special, leaf and terminal result attributes and the
// limits, on an in-memory directory (e2e/postfixcf_test.go checks the same
// against 389-DS and postmap).
func TestPostfixGather(t *testing.T) {
	dir := map[string]*ldap.Entry{}
	for _, e := range []*ldap.Entry{
		dirEntry("cn=alice", "mail", "alice@x", "", "cn", "alice"),
		dirEntry("cn=bob", "mail", "bob@x", "", "mailForwardingAddress", "bob@elsewhere"),
		dirEntry("cn=team", "mail", "team@x", "", "member", "cn=alice", "cn=bob", "cn=ghost"),
		dirEntry("cn=routed", "member", "cn=alice", "", "maildrop", "routed@lists", "", "mail", "routed@x"),
		dirEntry("cn=outer", "member", "cn=team", "cn=routed", "", "mailForwardingAddress", "archive@x"),
		dirEntry("cn=loop", "member", "cn=loop"),
		dirEntry("cn=bad", "member", "not a dn"),
		dirEntry("cn=url", "member", "ldap:///dc=x??sub?(mail=*)"),
		dirEntry("cn=urlattrs", "member", "ldap://ignored.example/dc=x?mail?sub?(mail=*)"),
		dirEntry("cn=badurl", "member", "ldap:///dc=x??sideways"),
		dirEntry("cn=opts", "mail;lang-en", "opts@x", "", "MAIL", "opts2@x"),
	} {
		dir[e.DN] = e
	}
	var searches []string
	search := func(r *ldap.SearchRequest) (*ldap.SearchResult, error) {
		searches = append(searches, r.BaseDN)
		if r.BaseDN == "dc=x" && r.Scope == ldap.ScopeWholeSubtree && r.Filter == "(mail=*)" {
			// the URL's search: alice and bob, with the attributes asked for
			var out []*ldap.Entry
			for _, dn := range []string{"cn=alice", "cn=bob"} {
				e := &ldap.Entry{DN: dn}
				for _, a := range dir[dn].Attributes {
					if slices.ContainsFunc(r.Attributes, func(x string) bool { return strings.EqualFold(x, a.Name) }) {
						e.Attributes = append(e.Attributes, a)
					}
				}
				out = append(out, e)
			}
			return &ldap.SearchResult{Entries: out}, nil
		}
		if r.Scope != ldap.ScopeBaseObject || r.Filter != "(objectClass=*)" {
			t.Errorf("nested search %+v", r)
		}
		if r.BaseDN == "not a dn" {
			return nil, ldap.NewError(ldap.LDAPResultInvalidDNSyntax, errors.New("invalid DN"))
		}
		e, ok := dir[r.BaseDN]
		if !ok {
			return nil, ldap.NewError(ldap.LDAPResultNoSuchObject, errors.New("no such object"))
		}
		return &ldap.SearchResult{Entries: []*ldap.Entry{e}}, nil
	}
	table := LDAPTable{
		ResultAttributes:   []string{"mailForwardingAddress"},
		SpecialAttributes:  []string{"member"},
		LeafAttributes:     []string{"mail"},
		TerminalAttributes: []string{"maildrop"},
	}
	tests := []struct {
		name    string
		mod     func(*LDAPTable)
		sizeLim int
		entries []string // DNs the query found
		want    []string // values, or the error's sentinel name
		wantErr error
	}{
		{"leaf", nil, 0, []string{"cn=alice"}, []string{"alice@x"}, nil},
		{"leaf with a result attribute", nil, 0, []string{"cn=bob"}, []string{"bob@x", "bob@elsewhere"}, nil},
		{"group: members only, missing DN skipped", nil, 0, []string{"cn=team"}, []string{"alice@x", "bob@x", "bob@elsewhere"}, nil},
		{"terminal: only its terminal values", nil, 0, []string{"cn=routed"}, []string{"routed@lists"}, nil},
		{"nested, terminal member, result attribute of a group", nil, 0, []string{"cn=outer"},
			[]string{"alice@x", "bob@x", "bob@elsewhere", "routed@lists", "archive@x"}, nil},
		{"several entries in order", nil, 0, []string{"cn=bob", "cn=alice"}, []string{"bob@x", "bob@elsewhere", "alice@x"}, nil},
		{"attribute options and case", nil, 0, []string{"cn=opts"}, []string{"opts@x", "opts2@x"}, nil},
		{"no leaf attributes: group mail is a plain result", func(l *LDAPTable) {
			l.LeafAttributes, l.ResultAttributes = nil, []string{"mail"}
		}, 0, []string{"cn=team"}, []string{"team@x", "alice@x", "bob@x"}, nil},
		{"result format", func(l *LDAPTable) { l.ResultFormat = "%u+%U@%d" }, 0, []string{"cn=team"},
			[]string{"alice+key@x", "bob+key@x", "bob+key@elsewhere"}, nil},
		{"loop", nil, 0, []string{"cn=loop"}, nil, routing.ErrExpansionLimit},
		{"recursion limit 1: no special attribute followed", func(l *LDAPTable) { l.RecursionLimit = 1 }, 0, []string{"cn=team"}, nil, routing.ErrExpansionLimit},
		{"recursion limit 2: one level", func(l *LDAPTable) { l.RecursionLimit = 2 }, 0, []string{"cn=team"}, []string{"alice@x", "bob@x", "bob@elsewhere"}, nil},
		{"recursion limit 2: two levels", func(l *LDAPTable) { l.RecursionLimit = 2 }, 0, []string{"cn=outer"}, nil, routing.ErrExpansionLimit},
		{"expansion limit reached", func(l *LDAPTable) { l.ExpansionLimit = 3 }, 0, []string{"cn=team"}, []string{"alice@x", "bob@x", "bob@elsewhere"}, nil},
		{"expansion limit exceeded", func(l *LDAPTable) { l.ExpansionLimit = 2 }, 0, []string{"cn=team"}, nil, routing.ErrExpansionLimit},
		{"size limit", nil, 1, []string{"cn=alice", "cn=bob"}, nil, routing.ErrExpansionLimit},
		{"size limit is per search", nil, 1, []string{"cn=outer"}, []string{"alice@x", "bob@x", "bob@elsewhere", "routed@lists", "archive@x"}, nil},
		{"bad DN in a special attribute", nil, 0, []string{"cn=bad"}, nil, routing.ErrUnavailable},
		{"LDAP URL in a special attribute", nil, 0, []string{"cn=url"}, []string{"alice@x", "bob@x", "bob@elsewhere"}, nil},
		{"LDAP URL naming its attributes", nil, 0, []string{"cn=urlattrs"}, []string{"alice@x", "bob@x"}, nil},
		{"malformed LDAP URL", nil, 0, []string{"cn=badurl"}, nil, routing.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := table
			if tt.mod != nil {
				tt.mod(&tb)
			}
			s, err := NewLDAPSource(LDAPConfig{URLs: []string{"ldap://127.0.0.1:1"}, Timeout: time.Second, PoolSize: 2, Base: "dc=x", Filter: "(mail=%s)", SizeLimit: tt.sizeLim, Table: &tb}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			var es []*ldap.Entry
			for _, dn := range tt.entries {
				es = append(es, dir[dn])
			}
			searches = nil
			g := &gather{t: s.table, s: s, search: search, source: "ldap test", k: splitKey("key@k"), key: "key@k"}
			err = g.entries(es, 1)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("got %q, %v; want %v", routing.Values(g.out), err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(routing.Values(g.out), tt.want) {
				t.Errorf("got %q, %v; want %q (searched %q)", routing.Values(g.out), err, tt.want, searches)
			}
			for _, m := range g.out {
				if m.Source != "ldap test" || m.DN == "" || m.Attribute == "" {
					t.Errorf("match without provenance: %+v", m)
				}
			}
		})
	}
}

// A diamond of groups (each level's group has two members that are both
// the next level's group) costs one search per distinct entry, not 2^depth,
// gives Postfix's values, and the whole walk stops at the caller's deadline.
func TestSpecialAttributesDiamondAndDeadline(t *testing.T) {
	const depth = 16
	searches := 0
	search := func(r *ldap.SearchRequest) (*ldap.SearchResult, error) {
		searches++
		var n int
		fmt.Sscanf(r.BaseDN, "cn=g%d,dc=x", &n)
		e := &ldap.Entry{DN: r.BaseDN}
		if n == depth {
			e.Attributes = []*ldap.EntryAttribute{{Name: "mail", Values: []string{"leaf@x"}}}
		} else {
			next := fmt.Sprintf("cn=g%d,dc=x", n+1)
			e.Attributes = []*ldap.EntryAttribute{{Name: "member", Values: []string{next, strings.ToUpper(next)}}}
		}
		return &ldap.SearchResult{Entries: []*ldap.Entry{e}}, nil
	}
	tb := LDAPTable{ResultAttributes: []string{"mail"}, SpecialAttributes: []string{"member"}, ExpansionLimit: 1 << 30}
	s, err := NewLDAPSource(LDAPConfig{URLs: []string{"ldap://127.0.0.1:1"}, Timeout: time.Second, PoolSize: 2, Base: "dc=x", Filter: "(mail=%s)", Table: &tb}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	top := &ldap.Entry{DN: "cn=g0,dc=x", Attributes: []*ldap.EntryAttribute{{Name: "member", Values: []string{"cn=g1,dc=x"}}}}
	g := &gather{ctx: context.Background(), t: s.table, s: s, search: search, source: "ldap test", k: splitKey("key@k"), key: "key@k"}
	err = g.entries([]*ldap.Entry{top}, 1)
	if searches > 2*depth {
		t.Errorf("%d searches for a diamond of depth %d, want one per entry", searches, depth)
	}
	if err == nil && len(g.out) != 1<<(depth-1) {
		t.Errorf("%d values, want Postfix's %d (one per path)", len(g.out), 1<<(depth-1))
	}
	// the walk is bounded: at the expansion limit, or by the entries it visits
	if err != nil && !errors.Is(err, routing.ErrExpansionLimit) {
		t.Errorf("diamond: %v", err)
	}

	// past the deadline: a temporary failure, at once
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	searches = 0
	g = &gather{ctx: ctx, t: s.table, s: s, search: search, source: "ldap test", k: splitKey("key@k"), key: "key@k"}
	if err := g.entries([]*ldap.Entry{top}, 1); !errors.Is(err, routing.ErrUnavailable) || searches > 0 {
		t.Errorf("cancelled: %v after %d searches, want routing.ErrUnavailable before any", err, searches)
	}
}
