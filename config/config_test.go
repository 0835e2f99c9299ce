package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"mailfwd/deploy"
)

// minimal is the smallest valid configuration.
const minimal = `relay_domains: [example.com]
directory:
  ldif:
    file: dir.ldif
delivery:
  next_hop: 127.0.0.1:25
`

// ldapMinimal is the smallest valid LDAP configuration.
const ldapMinimal = `relay_domains: [example.com]
directory:
  ldap:
    servers: [ldap://127.0.0.1:389]
    search_base: dc=example,dc=com
delivery:
  next_hop: 127.0.0.1:25
`

// lineOf is the 1-based line of the first line of y containing s.
func lineOf(t *testing.T, y, s string) int {
	t.Helper()
	for i, l := range strings.Split(y, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the YAML", s)
	return 0
}

func TestParseEmbeddedDefault(t *testing.T) {
	// The embedded file is the one in deploy/.
	onDisk, err := os.ReadFile("../deploy/mailfwd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != string(deploy.DefaultConfig) {
		t.Fatal("deploy.DefaultConfig is not deploy/mailfwd.yaml")
	}
	c, err := Parse(deploy.DefaultConfig, "/work/dir")
	if err != nil {
		t.Fatalf("Parse(default): %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", c.Hostname, "mailfwd.localhost"},
		{"listen", c.Listen, []string{"127.0.0.1:2525"}},
		{"relay_domains", c.RelayDomains, []string{"domain.com", "domain.ro", "company.com"}},
		{"spool_dir", c.Path(c.SpoolDir), "/work/dir/mailfwd-spool"},
		{"ldif set", c.Directory.LDIF != nil, true},
		{"ldap unset", c.Directory.LDAP == nil, true},
		{"next_hop", c.Delivery.NextHop, "127.0.0.1:2526"},
		{"retry_min", c.Delivery.RetryMin, 5 * time.Second},
		{"retry_max", c.Delivery.RetryMax, time.Minute},
		// defaults
		{"lookup_timeout", c.LookupTimeout, 10 * time.Second},
		{"max_message_size", c.MaxMessageSize, int64(50 << 20)},
		{"max_recipients", c.MaxRecipients, 1000},
		{"workers", c.Delivery.Workers, 16},
		{"connect_timeout", c.Delivery.ConnectTimeout, 30 * time.Second},
		{"log level", c.Log.Level, "info"},
		{"log format", c.Log.Format, "text"},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.Directory.LDIF != nil {
		if c.Directory.LDIF.File != "" {
			t.Errorf("ldif.file = %q, want empty (the embedded seed)", c.Directory.LDIF.File)
		}
		if s := c.Directory.LDIF.Schema; !reflect.DeepEqual(s, Defaults().Directory.LDIF.Schema) {
			t.Errorf("ldif schema = %+v, want the mailRecipient schema", s)
		}
	}
	// The relay domains cover the seed's scenarios.
	for _, a := range []string{"old.address@domain.com", "new.address@domain.ro", "sales@company.com"} {
		_, domain, _ := strings.Cut(a, "@")
		found := false
		for _, d := range c.RelayDomains {
			found = found || d == domain
		}
		if !found {
			t.Errorf("%s is not in a relay domain", a)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(ldapMinimal), "/etc/mailfwd")
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	l := c.Directory.LDAP
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", c.Hostname == host || (host == "" && c.Hostname == "localhost"), true},
		{"listen", c.Listen, []string{"127.0.0.1:2525"}},
		{"spool_dir", c.SpoolDir, "/var/spool/mailfwd"},
		{"lookup_timeout", c.LookupTimeout, 10 * time.Second},
		{"query_filter", l.QueryFilter, "(|(mail=%s)(mailAlternateAddress=%s))"},
		{"result_attributes", l.ResultAttributes, []string{"mailForwardingAddress"}},
		{"ldap timeout", l.Timeout, 5 * time.Second},
		{"pool_size", l.PoolSize, 8},
		{"retry_min", c.Delivery.RetryMin, 10 * time.Second},
		{"retry_max", c.Delivery.RetryMax, 5 * time.Minute},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if !l.TLSRequireCert || l.FallbackAttr != "mail" || l.SizeLimit != 0 {
		t.Errorf("ldap = %+v, want tls_require_cert, fallback mail, no size limit", l)
	}
}

func TestParseSettings(t *testing.T) {
	y := `hostname: relay.example.com
listen: ["0.0.0.0:25", "[::1]:2525"]
relay_domains: [Example.COM, bücher.example]
spool_dir: /var/spool/x
lookup_timeout: 3s
max_message_size: 1000
max_recipients: 7
directory:
  ldap:
    servers: [ldaps://a:636, ldap://b:389]
    start_tls: true
    ca_file: ca.pem
    tls_require_cert: false
    bind_dn: uid=relay,dc=x
    bind_password_env: MAILFWD_TEST_PW
    search_base: dc=x
    query_filter: (&(uid=%u)(dc=%d))
    result_attributes: [mailRoutingAddress, mailForwardingAddress]
    fallback_attribute: ""
    timeout: 2s
    pool_size: 3
    size_limit: 50
delivery:
  next_hop: "[::1]:25"
  workers: 4
  retry_min: 1s
  retry_max: 1s
  connect_timeout: 4s
log:
  level: debug
  format: json
`
	t.Setenv("MAILFWD_TEST_PW", "pw from env")
	c, err := Parse([]byte(y), "/etc/mailfwd")
	if err != nil {
		t.Fatal(err)
	}
	wantLDAP := LDAP{
		Servers: []string{"ldaps://a:636", "ldap://b:389"}, StartTLS: true, CAFile: "ca.pem", TLSRequireCert: false,
		BindDN: "uid=relay,dc=x", BindPasswordEnv: "MAILFWD_TEST_PW", SearchBase: "dc=x", QueryFilter: "(&(uid=%u)(dc=%d))",
		ResultAttributes: []string{"mailRoutingAddress", "mailForwardingAddress"},
		FallbackAttr:     "", // fallback_attribute: "" switches the fallback off
		Timeout:          2 * time.Second, PoolSize: 3, SizeLimit: 50,
	}
	if !reflect.DeepEqual(*c.Directory.LDAP, wantLDAP) {
		t.Errorf("ldap =\n%+v\nwant\n%+v", *c.Directory.LDAP, wantLDAP)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", c.Hostname, "relay.example.com"},
		{"listen", c.Listen, []string{"0.0.0.0:25", "[::1]:2525"}},
		{"spool_dir", c.Path(c.SpoolDir), "/var/spool/x"},
		{"lookup_timeout", c.LookupTimeout, 3 * time.Second},
		{"max_message_size", c.MaxMessageSize, int64(1000)},
		{"max_recipients", c.MaxRecipients, 7},
		{"delivery", c.Delivery, Delivery{NextHop: "[::1]:25", Workers: 4, RetryMin: time.Second, RetryMax: time.Second, ConnectTimeout: 4 * time.Second,
			// defaults
			MXPort: 25, ExternalRetryMin: 5 * time.Minute, ExternalRetryMax: 4 * time.Hour, Lifetime: 120 * time.Hour,
			DelayWarning: 4 * time.Hour, DestinationConcurrency: 20, TLSPolicy: TLSOpportunistic, ForwardDSN: "authenticated",
			ExternalWorkers: 100, ActiveLimit: 5000, InitialConcurrency: 5, RecipientLimit: 100, DeadAfter: 3,
			DANE: true, MTASTS: true, TLSRPT: TLSRPT{Organization: "relay.example.com", Contact: "postmaster@relay.example.com"}}},
		{"log", c.Log, Log{Level: "debug", Format: "json"}},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestLDIFSchema(t *testing.T) {
	y := strings.Replace(minimal, "    file: dir.ldif\n",
		"    file: dir.ldif\n    query_attributes: [uid]\n    result_attributes: [mailRoutingAddress]\n    fallback_attribute: cn\n", 1)
	c, err := Parse([]byte(y), "/etc/mailfwd")
	if err != nil {
		t.Fatal(err)
	}
	got := c.Directory.LDIF.Schema
	want := Schema{QueryAttributes: []string{"uid"}, ResultAttributes: []string{"mailRoutingAddress"}, FallbackAttribute: "cn"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("schema = %+v, want %+v", got, want)
	}
	if p := c.Path(c.Directory.LDIF.File); p != "/etc/mailfwd/dir.ldif" {
		t.Errorf("ldif file resolves to %q", p)
	}
	// The defaults must not have been changed through the override.
	if d := Defaults().Directory.LDIF.Schema; d.FallbackAttribute != "mail" || d.QueryAttributes[0] != "mail" {
		t.Errorf("the default schema changed: %+v", d)
	}
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		keys []string // each must be named, with its line
	}{
		{
			name: "top level",
			yaml: "listn: [127.0.0.1:25]\n" + minimal,
			keys: []string{"listn"},
		},
		{
			name: "top level, further down",
			yaml: minimal + "hostnme: x\n",
			keys: []string{"hostnme"},
		},
		{
			name: "nested under directory.ldap",
			yaml: strings.Replace(ldapMinimal, "    search_base:", "    serach_base: dc=oops\n    search_base:", 1),
			keys: []string{"serach_base"},
		},
		{
			name: "nested under directory",
			yaml: strings.Replace(minimal, "directory:\n", "directory:\n  ldiff:\n    file: x\n", 1),
			keys: []string{"ldiff"},
		},
		{
			name: "nested under delivery",
			yaml: minimal + "  retry_maximum: 1m\n",
			keys: []string{"retry_maximum"},
		},
		{
			name: "two at once",
			yaml: "listn: x\n" + strings.Replace(ldapMinimal, "    search_base:", "    bind_pasword_file: /x\n    search_base:", 1),
			keys: []string{"listn", "bind_pasword_file"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "/etc/mailfwd")
			if err == nil {
				t.Fatalf("Parse accepted:\n%s", tt.yaml)
			}
			for _, k := range tt.keys {
				n := lineOf(t, tt.yaml, k+":")
				want := "line " + strconv.Itoa(n) + ": unknown key \"" + k + "\""
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error: the key, the value
	}{
		{"empty relay_domains", strings.Replace(minimal, "relay_domains: [example.com]\n", "", 1), []string{"relay_domains"}},
		{"no directory source", strings.Replace(minimal, "  ldif:\n    file: dir.ldif\n", "", 1), []string{"directory", "ldif, ldap or postfix_map"}},
		{"both directory sources", strings.Replace(ldapMinimal, "directory:\n", "directory:\n  ldif:\n    file: x.ldif\n", 1), []string{"directory", "not several"}},
		{"no next_hop", strings.Replace(minimal, "  next_hop: 127.0.0.1:25\n", "  workers: 2\n", 1), []string{"delivery.next_hop"}},
		{"next_hop without port", strings.Replace(minimal, "127.0.0.1:25", "postfix.example.com", 1), []string{"delivery.next_hop", "postfix.example.com"}},
		{"bad listen", "listen: [localhost]\n" + minimal, []string{"listen", "localhost"}},
		{"ldap without servers", strings.Replace(ldapMinimal, "    servers: [ldap://127.0.0.1:389]\n", "", 1), []string{"directory.ldap.servers"}},
		{"ldap with bad server", strings.Replace(ldapMinimal, "ldap://127.0.0.1:389", "127.0.0.1:389", 1), []string{"directory.ldap.servers", "127.0.0.1:389"}},
		{"ldap without search_base", strings.Replace(ldapMinimal, "    search_base: dc=example,dc=com\n", "", 1), []string{"search_base"}},
		{"ldap filter without %", strings.Replace(ldapMinimal, "    search_base:", "    query_filter: (mail=x)\n    search_base:", 1), []string{"query_filter", "(mail=x)"}},
		{"bind_dn without password", strings.Replace(ldapMinimal, "    search_base:", "    bind_dn: uid=x\n    search_base:", 1), []string{"bind_dn", "bind_password_file", "bind_password_env"}},
		{"password file and env", strings.Replace(ldapMinimal, "    search_base:", "    bind_dn: uid=x\n    bind_password_file: pw\n    bind_password_env: PW\n    search_base:", 1), []string{"bind_password_file", "bind_password_env", "not both"}},
		{"retry_max below retry_min", minimal + "  retry_min: 1m\n  retry_max: 10s\n", []string{"retry_max", "retry_min"}},
		// Defaults count: retry_max's default 5m is below 10m.
		{"retry_min above the default retry_max", minimal + "  retry_min: 10m\n", []string{"retry_max", "retry_min"}},
		{"bad log level", minimal + "log:\n  level: verbose\n", []string{"log.level", "verbose"}},
		{"bad log format", minimal + "log:\n  format: xml\n", []string{"log.format", "xml"}},
		{"bad duration", minimal + "lookup_timeout: soon\n", []string{"line " + strconv.Itoa(strings.Count(minimal, "\n")+1), "soon"}},
		{"scalar for a list", strings.Replace(minimal, "[example.com]", "example.com", 1), []string{"line 1"}},
		{"not YAML", "relay_domains: [\n", []string{"line"}},
		{
			name: "several errors reported together",
			yaml: "relay_domains: []\ndirectory: {}\nlog:\n  level: loud\n",
			want: []string{"relay_domains", "directory", "delivery.next_hop", "log.level"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), "/etc/mailfwd")
			if err == nil {
				t.Fatalf("Parse accepted:\n%s\nas %+v", tt.yaml, c)
			}
			if c != nil {
				t.Errorf("config returned along with error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPath(t *testing.T) {
	c, err := Parse([]byte(minimal), "/etc/mailfwd")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ in, want string }{
		{"", ""},
		{"spool", "/etc/mailfwd/spool"},
		{"./a/../b/dir.ldif", "/etc/mailfwd/b/dir.ldif"},
		{"../shared/ca.pem", "/etc/shared/ca.pem"},
		{"/var/spool/mailfwd", "/var/spool/mailfwd"},
	}
	for _, tt := range tests {
		if got := c.Path(tt.in); got != tt.want {
			t.Errorf("Path(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mailfwd.yaml")
	y := strings.Replace(minimal, "relay_domains", "spool_dir: spool\nrelay_domains", 1)
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Path(c.SpoolDir), filepath.Join(dir, "spool"); got != want {
		t.Errorf("spool_dir resolves to %q, want %q", got, want)
	}
	if got, want := c.Path(c.Directory.LDIF.File), filepath.Join(dir, "dir.ldif"); got != want {
		t.Errorf("ldif file resolves to %q, want %q", got, want)
	}

	// A relative config path resolves against its own directory, not ".".
	t.Chdir(filepath.Dir(dir))
	c, err = Load(filepath.Join(filepath.Base(dir), "mailfwd.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Path("spool"), filepath.Join(dir, "spool"); got != want {
		t.Errorf("relative config: spool resolves to %q, want %q", got, want)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listn: x\n"+minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "line 1") || !strings.Contains(err.Error(), "listn") {
		t.Errorf("Load(bad) = %v; want the file, line 1 and the key named", err)
	}
}
