package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// derived are the keys whose default depends on other keys (derive): the
// docs describe them in words, and Defaults leaves them unset.
var derived = map[string]bool{
	"hostname": true, "spool.min_free": true, "srs.store.path": true, "srs.legacy_until": true,
	"auth.authserv_id": true, "auth.dmarc_forwarding.from": true, "auth.dmarc_forwarding.via": true,
	"delivery.tls_rpt.organization": true, "delivery.tls_rpt.contact": true,
}

// The default column of docs/configuration.md says what Defaults holds:
// a default that is not zero is written first in the cell, as a literal
// (`10s`, `[mail, mailAlternateAddress]`), and that literal is the value;
// a cell in words ("(required)", "none", "system roots") is for a key
// whose default is the zero value, or one derived from other keys.
func TestDocumentedDefaults(t *testing.T) {
	b, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_.]+)` \\| (?:[^|\\\\]|\\\\.)* \\| ((?:[^|\\\\]|\\\\.)*) \\|")
	literal := regexp.MustCompile("^`((?:[^`])*)`")
	def := reflect.ValueOf(Defaults()).Elem()
	checked := 0
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		key, cell := m[1], strings.TrimSpace(m[2])
		v, ok := lookupKey(def, key)
		if !ok {
			continue // TestConfigurationDocumented reports it
		}
		lit := literal.FindStringSubmatch(cell)
		switch {
		case derived[key]:
			if !v.IsZero() {
				t.Errorf("%s is derived from other keys, but Defaults sets it to %v", key, v)
			}
		case lit == nil:
			if !v.IsZero() {
				t.Errorf("%s: the docs say %q, but the default is %v: write it first in the cell, as `literal`", key, cell, v)
			}
		default:
			got, err := parseLiteral(strings.ReplaceAll(lit[1], `\|`, "|"), v.Type())
			if err != nil {
				t.Errorf("%s: the docs' default %q: %v", key, lit[1], err)
				continue
			}
			if !sameValue(got, v) {
				t.Errorf("%s: the docs say the default is %q, Defaults has %v", key, lit[1], v)
			}
			checked++
		}
	}
	if checked < 80 {
		t.Errorf("only %d documented defaults compared: the docs table's format changed?", checked)
	}
	for k := range derived {
		if _, ok := lookupKey(def, k); !ok {
			t.Errorf("derived key %s is not a key", k)
		}
	}
}

// Parse of a file that sets nothing optional gives Defaults, sections
// aside; the derived values follow their keys.
func TestDefaultsAreWhatParseGives(t *testing.T) {
	c, err := Parse([]byte(`hostname: relay.example
relay_domains: [example.com]
max_message_size: 1000
max_recipients: 6000
directory: {ldif: {}}
delivery: {next_hop: "127.0.0.1:25"}
srs: {domain: srs.example.net, secrets_file: s}
auth: {}
`), "/etc/mailfwd")
	if err != nil {
		t.Fatal(err)
	}
	d := Defaults()
	for name, pair := range map[string][2]any{
		"limits.max_errors":             {c.Limits.MaxErrors, d.Limits.MaxErrors},
		"delivery":                      {c.Delivery.Workers, d.Delivery.Workers},
		"directory.cache":               {c.Directory.Cache, d.Directory.Cache},
		"routing":                       {c.Routing, d.Routing},
		"srs.reverse":                   {c.SRS.Reverse, d.SRS.Reverse},
		"srs.store.redis (not written)": {c.SRS.Store.Redis == nil, true},
		"srs.store.path":                {c.SRS.Store.Path, "/var/spool/mailfwd/srs.db"},
		"ldif schema":                   {c.Directory.LDIF.Schema, d.Directory.LDIF.Schema},
		"ldap (not written)":            {c.Directory.LDAP == nil, true},
		"tls (not written)":             {c.TLS == nil, true},
		"auth.dkim (not written)":       {c.Auth.DKIM == nil, true},
		"auth.authserv_id":              {c.Auth.AuthservID, "relay.example"},
		"auth.dmarc_forwarding.from":    {c.Auth.DMARCForwarding.From, "forwarded@example.net"},
		"auth.dmarc_forwarding.via":     {c.Auth.DMARCForwarding.Via, "example.net"},
		"spool.min_free":                {*c.Spool.MinFree, int64(1500)},
		"limits.max_commands":           {c.Limits.MaxCommands, 12010},
		"delivery.tls_rpt.contact":      {c.Delivery.TLSRPT.Contact, "postmaster@relay.example"},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s = %v, want %v", name, pair[0], pair[1])
		}
	}
	// A key written as 0 or false stays so: prefilled defaults, not
	// zero-means-default.
	c, err = Parse([]byte("relay_domains: [example.com]\ndirectory: {ldif: {}, cache: {positive_ttl: 0s}}\n"+
		"delivery: {next_hop: \"127.0.0.1:25\", dane: false}\nrouting: {propagate_unmatched_extensions: false}\n"), "/")
	if err != nil {
		t.Fatal(err)
	}
	if c.Directory.Cache.PositiveTTL != 0 || c.Delivery.DANE || c.Routing.PropagateUnmatchedExtensions || !c.Delivery.MTASTS {
		t.Errorf("written zeros: cache %v, dane %v, propagate %v, mta_sts %v", c.Directory.Cache.PositiveTTL, c.Delivery.DANE,
			c.Routing.PropagateUnmatchedExtensions, c.Delivery.MTASTS)
	}
	// Every call is a fresh copy.
	Defaults().Listen[0] = "changed"
	if Defaults().Listen[0] != "127.0.0.1:2525" {
		t.Error("Defaults shares its slices between calls")
	}
}

// lookupKey finds a dotted key's field in v (a Config), through the yaml
// tags as Keys walks them.
func lookupKey(v reflect.Value, key string) (reflect.Value, bool) {
	for key != "" {
		for v.Kind() == reflect.Pointer {
			if v.IsNil() {
				v = reflect.Zero(v.Type().Elem())
			} else {
				v = v.Elem()
			}
		}
		if v.Kind() != reflect.Struct {
			return v, false
		}
		found := false
		for i := range v.NumField() {
			f := v.Type().Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if opts == "inline" {
				if fv, ok := lookupKey(v.Field(i), key); ok {
					return fv, true
				}
				continue
			}
			if name == "" || name == "-" {
				continue
			}
			if key == name {
				fv := v.Field(i)
				if fv.Kind() == reflect.Pointer && fv.Type().Elem().Kind() != reflect.Struct {
					if fv.IsNil() {
						return reflect.Zero(fv.Type().Elem()), true
					}
					fv = fv.Elem()
				}
				return fv, true
			}
			if rest, ok := strings.CutPrefix(key, name+"."); ok {
				v, key, found = v.Field(i), rest, true
				break
			}
		}
		if !found {
			return v, false
		}
	}
	return v, false
}

var durationType = reflect.TypeOf(time.Duration(0))

// parseLiteral reads a docs literal as a value of type t.
func parseLiteral(s string, t reflect.Type) (reflect.Value, error) {
	out := reflect.New(t).Elem()
	switch {
	case t == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return out, err
		}
		out.SetInt(int64(d))
	case t.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return out, err
		}
		out.SetBool(b)
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return out, err
		}
		out.SetInt(n)
	case t.Kind() == reflect.String:
		if s == `""` {
			s = ""
		}
		out.SetString(s)
	case t.Kind() == reflect.Slice:
		inner, ok := strings.CutPrefix(s, "[")
		if inner, ok2 := strings.CutSuffix(inner, "]"); ok && ok2 {
			if inner != "" {
				out.Set(reflect.ValueOf(strings.Split(inner, ", ")))
			}
			return out, nil
		}
		return out, fmt.Errorf("want [a, b]")
	case t.Kind() == reflect.Map:
		if s != "{}" {
			return out, fmt.Errorf("want {}")
		}
	default:
		return out, fmt.Errorf("no literal form for %s", t)
	}
	return out, nil
}

// sameValue compares a docs literal with a default; empty and nil
// collections are the same.
func sameValue(a, b reflect.Value) bool {
	if (a.Kind() == reflect.Slice || a.Kind() == reflect.Map) && a.Len() == 0 && b.Len() == 0 {
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}
