package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"mailfwd/config"
	"mailfwd/routing/directory"
)

// ldapRelay is a relay in front of a 389-DS, with no LDAP setting beyond
// where the server is and where to search.
const ldapRelay = `relay_domains: [company.com]
directory:
  ldap:
    servers: [ldap://ds.company.com:389]
    search_base: ou=people,dc=company,dc=com
delivery:
  next_hop: postfix.company.com:25
`

func parse(t *testing.T, y, dir string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(y), dir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The LDAP source gets the config's defaults, and the routing package
// takes them as they are.
func TestLDAPConfigDefaults(t *testing.T) {
	rc, err := ldapConfig(parse(t, ldapRelay, "/etc/mailfwd"))
	if err != nil {
		t.Fatal(err)
	}
	want := directory.LDAPConfig{
		URLs: []string{"ldap://ds.company.com:389"}, RequireCert: true,
		Base: "ou=people,dc=company,dc=com", Filter: "(|(mail=%s)(mailAlternateAddress=%s))",
		Schema:  directory.Schema{QueryAttributes: []string{"mail", "mailAlternateAddress"}, ResultAttributes: []string{"mailForwardingAddress"}, FallbackAttribute: "mail"},
		Timeout: 5 * time.Second, PoolSize: 8,
	}
	if !reflect.DeepEqual(rc, want) {
		t.Errorf("ldapConfig =\n%+v\nwant\n%+v", rc, want)
	}
	if _, err := directory.NewLDAPSource(rc, nil); err != nil {
		t.Errorf("the routing package refuses the default LDAP config: %v", err)
	}
}

func TestLDAPConfigSettings(t *testing.T) {
	c := parse(t, ldapRelay, "/etc/mailfwd")
	*c.Directory.LDAP = config.LDAP{
		Servers: []string{"ldaps://a:636", "ldap://b:389"}, StartTLS: true, CAFile: "ca.pem", TLSRequireCert: false,
		BindDN: "uid=relay,dc=x", BindPasswordEnv: "MAILFWD_TEST_PW", SearchBase: "dc=x", QueryFilter: "(&(uid=%u)(dc=%d))",
		ResultAttributes: []string{"mailRoutingAddress", "mailForwardingAddress"}, FallbackAttr: "",
		Timeout: 2 * time.Second, PoolSize: 3, SizeLimit: 50,
	}
	t.Setenv("MAILFWD_TEST_PW", "pw from env")
	rc, err := ldapConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	want := directory.LDAPConfig{
		URLs: []string{"ldaps://a:636", "ldap://b:389"}, StartTLS: true, CAFile: "/etc/mailfwd/ca.pem",
		RequireCert: false, BindDN: "uid=relay,dc=x", BindPassword: "pw from env", Base: "dc=x",
		Filter: "(&(uid=%u)(dc=%d))",
		// fallback_attribute: "" switches the fallback off
		Schema:  directory.Schema{QueryAttributes: []string{"mail", "mailAlternateAddress"}, ResultAttributes: []string{"mailRoutingAddress", "mailForwardingAddress"}},
		Timeout: 2 * time.Second, PoolSize: 3, SizeLimit: 50,
	}
	if !reflect.DeepEqual(rc, want) {
		t.Errorf("ldapConfig =\n%+v\nwant\n%+v", rc, want)
	}
}

func TestBindPassword(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("pw", "s3cret\n")
	write("pw-crlf", "s3cret\r\n")
	write("pw-bare", "s3cret")
	write("pw-spaces", " s3 cret \n\n")
	const env = "MAILFWD_TEST_BIND_PASSWORD"
	const unset = "MAILFWD_TEST_BIND_PASSWORD_UNSET"
	t.Setenv(env, "from env\n")
	t.Setenv(unset, "")
	os.Unsetenv(unset) // t.Setenv restores the original state afterwards

	tests := []struct {
		name    string
		setting string // the bind_password_* line
		want    string
		wantErr string
	}{
		{name: "file, newline trimmed", setting: "bind_password_file: pw", want: "s3cret"},
		{name: "file, CRLF trimmed", setting: "bind_password_file: pw-crlf", want: "s3cret"},
		{name: "file, no newline", setting: "bind_password_file: pw-bare", want: "s3cret"},
		{name: "file, spaces kept", setting: "bind_password_file: pw-spaces", want: " s3 cret "},
		{name: "file, absolute path", setting: "bind_password_file: " + filepath.Join(dir, "pw"), want: "s3cret"},
		{name: "file missing", setting: "bind_password_file: nope", wantErr: "bind_password_file"},
		{name: "env, as is", setting: "bind_password_env: " + env, want: "from env\n"},
		{name: "env unset", setting: "bind_password_env: " + unset, wantErr: unset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := strings.Replace(ldapRelay, "    search_base:", "    bind_dn: uid=x\n    "+tt.setting+"\n    search_base:", 1)
			rc, err := ldapConfig(parse(t, y, dir))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ldapConfig = %+v, want error", rc)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not mention %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error %q shows a password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.BindPassword != tt.want || rc.BindDN != "uid=x" {
				t.Errorf("bind as %q with %q, want uid=x with %q", rc.BindDN, rc.BindPassword, tt.want)
			}
		})
	}
	if rc, err := ldapConfig(parse(t, ldapRelay, dir)); err != nil || rc.BindPassword != "" {
		t.Errorf("anonymous: %+v, %v", rc, err)
	}
}

// checkNames refuses what the other packages would, naming the key.
func TestCheckNames(t *testing.T) {
	const minimal = "relay_domains: [example.com]\ndirectory: {ldif: {}}\ndelivery:\n  next_hop: 127.0.0.1:25\n"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "srs.secrets"), []byte("s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"bad relay domain", strings.Replace(minimal, "[example.com]", "[example.com, \"bad..domain\"]", 1), []string{"relay_domains", "bad..domain"}},
		{"relay domain with trailing dot", strings.Replace(minimal, "[example.com]", "[example.com.]", 1), []string{"relay_domains", "example.com."}},
		{"bad local domain", minimal + "local_domains: [\"[127.0.0.1]\"]\n", []string{"local_domains", "[127.0.0.1]"}},
		{"bad rewrite", minimal + "routing:\n  domain_rewrites: {old.example: \"new..example\"}\n", []string{"routing.domain_rewrites", "new..example"}},
		{"srs domain is a relay domain", minimal + "srs: {domain: Example.com, secrets_file: srs.secrets}\n", []string{"srs.domain", "example.com", "srs.example.com"}},
		{"bad srs domain", minimal + "srs: {domain: \"srs..example\", secrets_file: srs.secrets}\n", []string{"srs.domain", "srs..example"}},
		{"bad transport", minimal + "  transports: {x.example: \"smtp:[a\"}\n", []string{"delivery.transports[x.example]", "unbalanced"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkNames(parse(t, tt.yaml, dir))
			if err == nil {
				t.Fatalf("checkNames accepted:\n%s", tt.yaml)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if err := checkNames(parse(t, minimal, dir)); err != nil {
		t.Errorf("minimal config: %v", err)
	}
}
