package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A postsrsd.conf as postsrsd 2.x ships it, with the keys a site changes.
const postsrsdConf = `# postsrsd.conf
domains = {"example.com", ".sub.example.com"}
# domains-file = "/etc/postsrsd.domains"
srs-domain = ".srs.example.com"   // a leading dot is stripped
socketmap = unix:/var/spool/postfix/srs
milter = unix:/var/spool/postfix/srs_milter
keep-alive = 30
original-envelope = database
envelope-database = "redis:localhost:6379"
secrets-file = "postsrsd.secret"
separator = "+"
hash-length = 6
hash-minimum = 5
always-rewrite = off
unprivileged-user = "nobody"
chroot-dir = ""
`

func TestParsePostsrsd(t *testing.T) {
	p, err := ParsePostsrsd([]byte(postsrsdConf))
	if err != nil {
		t.Fatal(err)
	}
	want := Postsrsd{SRSDomain: "srs.example.com", Domains: []string{"example.com", ".sub.example.com"},
		SecretsFile: "postsrsd.secret", Separator: "+", HashLength: 6, HashMinimum: 5,
		OriginalEnvelope: "database", EnvelopeDatabase: "redis:localhost:6379"}
	if strings.Join(p.Domains, ",") != strings.Join(want.Domains, ",") {
		t.Errorf("domains %q", p.Domains)
	}
	p.Domains, want.Domains = nil, nil
	if fmt.Sprint(*p) != fmt.Sprint(want) {
		t.Errorf("got %+v\nwant %+v", *p, want)
	}
	for _, bad := range []string{
		`srs-domain "x"`, `srs-domain = "x`, `domains = {"a"`, `hash-length = six`, `original-envelope = cloud`,
		`srs-domain = {"a", "b"}`, `= x`,
	} {
		if _, err := ParsePostsrsd([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// srs.postsrsd_config fills the srs section; what the section sets wins.
func TestConfigFromPostsrsd(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "postsrsd.conf"), []byte(postsrsdConf), 0o644)
	write := func(y string) string {
		p := filepath.Join(dir, "mailfwd.yaml")
		os.WriteFile(p, []byte("relay_domains: [company.com]\nspool_dir: spool\ndirectory: {ldif: {}}\ndelivery: {next_hop: \"127.0.0.1:10025\"}\n"+y), 0o644)
		return p
	}
	c, err := Load(write("srs:\n  postsrsd_config: postsrsd.conf\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := c.SRS
	if s.Domain != "srs.example.com" || s.SecretsFile != filepath.Join(dir, "postsrsd.secret") || s.Separator != "+" ||
		s.HashLength != 6 || s.HashMin != 5 || s.Database != "always" || s.Store.Redis == nil ||
		s.Store.Redis.Address != "localhost:6379" || s.Store.Path != "" {
		t.Errorf("srs from postsrsd.conf: %+v (redis %+v)", s, s.Store.Redis)
	}
	c, err = Load(write("srs:\n  postsrsd_config: postsrsd.conf\n  domain: srs.company.com\n  hash_length: 4\n  hash_min: 4\n  store: {path: x.db}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s := c.SRS; s.Domain != "srs.company.com" || s.HashLength != 4 || s.Store.Redis != nil || s.Store.Path != "x.db" {
		t.Errorf("our keys must win: %+v", s)
	}
	// a sqlite database cannot be shared: the config says what to do
	sq := strings.Replace(postsrsdConf, `"redis:localhost:6379"`, `"sqlite:/var/lib/postsrsd/postsrsd.db"`, 1)
	os.WriteFile(filepath.Join(dir, "postsrsd.conf"), []byte(sq), 0o644)
	if _, err := Load(write("srs:\n  postsrsd_config: postsrsd.conf\n")); err == nil || !strings.Contains(err.Error(), "import-postsrsd") {
		t.Errorf("sqlite envelope database: %v", err)
	}
	// the default store is a file in the spool
	os.WriteFile(filepath.Join(dir, "s"), []byte("k\n"), 0o600)
	c, err = Load(write("srs:\n  domain: srs.company.com\n  secrets_file: s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.SRS.Store.Path != filepath.Join("spool", "srs.db") || c.SRS.Database != "auto" {
		t.Errorf("defaults: %+v", c.SRS)
	}
	for _, bad := range []string{
		"srs:\n  domain: srs.company.com\n  secrets_file: s\n  database: sometimes\n",
		"srs:\n  domain: srs.company.com\n  secrets_file: s\n  legacy_until: yesterday\n",
		"srs:\n  domain: srs.company.com\n  secrets_file: s\n  store: {path: a, redis: {address: b:1}}\n",
		"srs:\n  domain: srs.company.com\n  secrets_file: s\n  store: {redis: {db: 1}}\n",
		"srs:\n  domain: srs.company.com\n  secrets_file: s\n  reverse: {rate: -1}\n",
	} {
		if _, err := Load(write(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func FuzzParsePostsrsd(f *testing.F) {
	f.Add(postsrsdConf)
	f.Add(`a = {`)
	f.Add(`x = "\"`)
	f.Fuzz(func(t *testing.T, in string) {
		ParsePostsrsd([]byte(in)) // never panics
	})
}
