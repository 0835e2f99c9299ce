package directory

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"mailfwd/routing"
)

// PostfixMap is a Postfix ldap_table(5) file (the NAME.cf of
// "virtual_alias_maps = ldap:NAME.cf"), read unchanged so that a site can
// move from Postfix without rewriting its map. Source answers each key as
// `postmap -q KEY ldap:NAME.cf` does, with each value of the
// comma-joined answer as its own Match.
//
// Every key ldap_table(5) documents is understood, or refused with its
// line: a setting mailfwd would silently not honour could route mail
// differently from Postfix. Unknown keys are refused too (Postfix ignores
// them), since they are most often typos.
type PostfixMap struct {
	Name string
	// Params are the file's settings as written, continuation lines joined.
	Params map[string]string
	// Config is the LDAP source the file describes.
	Config LDAPConfig
	// Warnings are settings accepted but not honoured (Postfix ignores
	// them too, or they cannot change an answer), for the operator.
	Warnings []string
}

// ParsePostfixMap reads a Postfix ldap_table(5) file.
func ParsePostfixMap(path string) (*PostfixMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("postfix map: %w", err)
	}
	return ParsePostfixMapBytes(data, path)
}

// cfLine is one logical line of a main.cf-style file.
type cfLine struct {
	name, value string
	line        int
}

// parseCF splits main.cf syntax as Postfix's dict_load_fp does: comments
// are lines whose first non-blank character is '#' ('#' elsewhere is part
// of the value), blank and comment lines are skipped without ending a
// logical line, a line starting with whitespace continues the previous
// one (joined as written, leading whitespace kept), and the name and value
// are trimmed. The last setting of a name wins.
func parseCF(data []byte, name string) ([]cfLine, error) {
	var out []cfLine
	var cur *cfLine
	var text []string
	flush := func() error {
		if cur == nil {
			return nil
		}
		l := strings.Join(text, "")
		eq := strings.IndexByte(l, '=')
		if eq < 0 {
			return fmt.Errorf("%s: line %d: missing '=' after %q", name, cur.line, strings.TrimSpace(l))
		}
		cur.name = strings.TrimSpace(l[:eq])
		cur.value = strings.TrimSpace(l[eq+1:])
		if cur.name == "" {
			return fmt.Errorf("%s: line %d: missing name before '='", name, cur.line)
		}
		if strings.ContainsAny(cur.name, " \t") {
			return fmt.Errorf("%s: line %d: name %q contains whitespace", name, cur.line, cur.name)
		}
		out = append(out, *cur)
		cur, text = nil, nil
		return nil
	}
	for i, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSuffix(l, "\r")
		t := strings.TrimSpace(l)
		switch {
		case t == "" || t[0] == '#':
			continue
		case l[0] == ' ' || l[0] == '\t':
			if cur == nil {
				return nil, fmt.Errorf("%s: line %d: continuation line without a setting to continue", name, i+1)
			}
			text = append(text, l)
		default:
			if err := flush(); err != nil {
				return nil, err
			}
			cur, text = &cfLine{line: i + 1}, []string{l}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// postfixKeys are the ldap_table(5) settings mailfwd understands; their
// values are checked by ParsePostfixMapBytes.
var postfixKeys = map[string]bool{
	"server_host": true, "server_port": true, "search_base": true, "query_filter": true,
	"result_attribute": true, "special_result_attribute": true, "leaf_result_attribute": true,
	"terminal_result_attribute": true, "result_format": true, "result_filter": true,
	"domain": true, "scope": true, "bind": true, "bind_dn": true, "bind_pw": true,
	"version": true, "start_tls": true, "tls_ca_cert_file": true, "tls_ca_cert_dir": true,
	"tls_cert": true, "tls_key": true, "tls_require_cert": true, "timeout": true,
	"size_limit": true, "expansion_limit": true, "recursion_limit": true,
	"dereference": true, "chase_referrals": true, "debuglevel": true,
	// Accepted and ignored, with a warning.
	"cache": true, "cache_expiry": true, "cache_size": true,
	"tls_random_file": true, "tls_cipher_suite": true,
}

// ignoredKeys are accepted with a warning saying why they change nothing.
var ignoredKeys = map[string]string{
	"cache":            "no longer supported by Postfix either (ignored with a warning there)",
	"cache_expiry":     "no longer supported by Postfix either (ignored with a warning there)",
	"cache_size":       "no longer supported by Postfix either (ignored with a warning there)",
	"tls_random_file":  "Go's crypto/rand is used",
	"tls_cipher_suite": "Go's TLS cipher suite selection is used",
}

// ParsePostfixMapBytes parses the content of a Postfix ldap_table(5) file;
// name is used in messages.
func ParsePostfixMapBytes(data []byte, name string) (*PostfixMap, error) {
	lines, err := parseCF(data, name)
	if err != nil {
		return nil, fmt.Errorf("postfix map %w", err)
	}
	m := &PostfixMap{Name: name, Params: map[string]string{}}
	lineOf := map[string]int{}
	for _, l := range lines {
		if !postfixKeys[l.name] {
			why := ""
			if strings.HasPrefix(l.name, "sasl_") {
				why = ": SASL binds are not supported"
			}
			return nil, fmt.Errorf("postfix map %s: unsupported key %q (line %d)%s", name, l.name, l.line, why)
		}
		if prev, ok := lineOf[l.name]; ok {
			m.warn("%s is set on line %d and again on line %d: the last one is used, as in Postfix", l.name, prev, l.line)
		}
		m.Params[l.name], lineOf[l.name] = l.value, l.line
	}
	p := cfParams{m: m, line: lineOf}
	if err := p.build(); err != nil {
		return nil, fmt.Errorf("postfix map %s: %w", name, err)
	}
	return m, nil
}

func (m *PostfixMap) warn(format string, args ...any) {
	m.Warnings = append(m.Warnings, m.Name+": "+fmt.Sprintf(format, args...))
}

// cfParams reads typed settings, with Postfix's defaults and errors that
// name the setting and its line.
type cfParams struct {
	m    *PostfixMap
	line map[string]int
}

func (p cfParams) str(key, def string) string {
	if v, ok := p.m.Params[key]; ok {
		return v
	}
	return def
}

func (p cfParams) errorf(key, format string, args ...any) error {
	return fmt.Errorf("%s = %q (line %d): %s", key, p.m.Params[key], p.line[key], fmt.Sprintf(format, args...))
}

func (p cfParams) integer(key string, def, min int) (int, error) {
	v, ok := p.m.Params[key]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, p.errorf(key, "not a number")
	}
	if n < min {
		return 0, p.errorf(key, "must be at least %d", min)
	}
	return n, nil
}

// boolean accepts what Postfix's cfg_get_bool does: yes or no.
func (p cfParams) boolean(key string, def bool) (bool, error) {
	v, ok := p.m.Params[key]
	if !ok {
		return def, nil
	}
	switch strings.ToLower(v) {
	case "yes":
		return true, nil
	case "no":
		return false, nil
	}
	return false, p.errorf(key, "want yes or no")
}

// cfList splits a value as Postfix splits lists: on commas and whitespace.
func cfList(v string) []string {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' || r == '\n' })
}

var paramRef = regexp.MustCompile(`\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)`)

func (p cfParams) build() error {
	m := p.m
	cfg := &m.Config
	tbl := &LDAPTable{}
	cfg.Table = tbl

	// Postfix reads these files with dict_load_fp, which expands no
	// $name: "$x" stays "$x" (a password may well contain '$'). Say so
	// when it looks like a reference, since main.cf would expand it.
	for _, k := range sortedKeys(m.Params) {
		for _, ref := range paramRef.FindAllStringSubmatch(m.Params[k], -1) {
			if _, ok := m.Params[strings.Trim(ref[1], "{}")]; ok {
				m.warn("%s (line %d) contains %s: Postfix does not expand parameters in ldap table files, so neither does mailfwd", k, p.line[k], ref[0])
			}
		}
	}
	for _, k := range sortedKeys(m.Params) {
		if why, ok := ignoredKeys[k]; ok {
			m.warn("%s (line %d) ignored: %s", k, p.line[k], why)
		}
	}

	port, err := p.integer("server_port", 389, 1)
	if err != nil {
		return err
	}
	for _, h := range cfList(p.str("server_host", "localhost")) {
		lh := strings.ToLower(h)
		switch {
		case strings.HasPrefix(lh, "ldapi://"):
			return p.errorf("server_host", "%s: ldapi:// (UNIX socket) servers are not supported", h)
		case strings.HasPrefix(lh, "ldap://"), strings.HasPrefix(lh, "ldaps://"):
			scheme, rest, _ := strings.Cut(h, "://")
			// The URL's DN, attributes and filter play no part in
			// server_host (OpenLDAP only uses its host and port).
			if i := strings.IndexAny(rest, "/?"); i >= 0 {
				rest = rest[:i]
			}
			cfg.URLs = append(cfg.URLs, strings.ToLower(scheme)+"://"+rest)
		case strings.Contains(lh, "://"):
			return p.errorf("server_host", "%s: want host, host:port, ldap:// or ldaps://", h)
		case strings.Contains(h, ":"):
			cfg.URLs = append(cfg.URLs, "ldap://"+h)
		default:
			cfg.URLs = append(cfg.URLs, fmt.Sprintf("ldap://%s:%d", h, port))
		}
	}
	if len(cfg.URLs) == 0 {
		return p.errorf("server_host", "no server")
	}

	cfg.Base = p.str("search_base", "")
	cfg.Filter = p.str("query_filter", "mailacceptinggeneralid=%s")
	if !strings.Contains(strings.ReplaceAll(cfg.Filter, "%%", ""), "%") {
		m.warn("query_filter %q has no %% expansion: every key gets the same answer", cfg.Filter)
	}
	tbl.ResultAttributes = cfList(p.str("result_attribute", "maildrop"))
	tbl.SpecialAttributes = cfList(p.str("special_result_attribute", ""))
	tbl.LeafAttributes = cfList(p.str("leaf_result_attribute", ""))
	tbl.TerminalAttributes = cfList(p.str("terminal_result_attribute", ""))
	// result_filter is result_format's name before Postfix 2.2.
	tbl.ResultFormat = p.str("result_format", p.str("result_filter", "%s"))

	for _, d := range cfList(p.str("domain", "")) {
		if strings.ContainsAny(d, "/:") {
			return p.errorf("domain", "%s: only domain names are supported, not files or type:table lookups", d)
		}
		tbl.Domains = append(tbl.Domains, d)
	}

	switch s := strings.ToLower(p.str("scope", "sub")); s {
	case "sub", "one", "base":
		cfg.Scope = s
	default:
		return p.errorf("scope", "want sub, one or base")
	}

	switch b := strings.ToLower(p.str("bind", "yes")); b {
	case "yes", "simple":
		cfg.BindDN, cfg.BindPassword = p.str("bind_dn", ""), p.str("bind_pw", "")
	case "no", "none":
	case "sasl":
		return p.errorf("bind", "SASL binds are not supported")
	default:
		return p.errorf("bind", "want yes, no, simple or none")
	}

	// Postfix's code defaults to 2, its manual says 3; go-ldap speaks v3
	// only, which a server answers the same for these searches.
	switch v, err := p.integer("version", 3, 0); {
	case err != nil:
		return err
	case v == 2:
		m.warn("version = 2 (line %d): LDAPv3 is used", p.line["version"])
	case v != 3:
		return p.errorf("version", "want 2 or 3")
	}

	if cfg.StartTLS, err = p.boolean("start_tls", false); err != nil {
		return err
	}
	if cfg.RequireCert, err = p.boolean("tls_require_cert", false); err != nil {
		return err
	}
	cfg.CAFile = p.str("tls_ca_cert_file", "")
	cfg.CADir = p.str("tls_ca_cert_dir", "")
	cfg.CertFile, cfg.KeyFile = p.str("tls_cert", ""), p.str("tls_key", "")
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return fmt.Errorf("tls_cert and tls_key (lines %d, %d): set both or neither", p.line["tls_cert"], p.line["tls_key"])
	}

	secs, err := p.integer("timeout", 10, 1)
	if err != nil {
		return err
	}
	cfg.Timeout = time.Duration(secs) * time.Second
	if tbl.ExpansionLimit, err = p.integer("expansion_limit", 0, 0); err != nil {
		return err
	}
	// size_limit defaults to expansion_limit, as in Postfix.
	if cfg.SizeLimit, err = p.integer("size_limit", tbl.ExpansionLimit, 0); err != nil {
		return err
	}
	if tbl.RecursionLimit, err = p.integer("recursion_limit", 1000, 1); err != nil {
		return err
	}
	if cfg.Deref, err = p.integer("dereference", 0, 0); err != nil {
		return err
	}
	if cfg.Deref > 3 {
		return p.errorf("dereference", "want 0 (never), 1 (searching), 2 (finding) or 3 (always)")
	}
	switch strings.ToLower(p.str("chase_referrals", "no")) {
	case "no", "0":
	case "yes", "1":
		return p.errorf("chase_referrals", "following referrals is not supported")
	default:
		return p.errorf("chase_referrals", "want yes or no")
	}
	if _, err := p.integer("debuglevel", 0, 0); err != nil {
		return err
	}
	// The templates are checked here, so that a bad one names the file.
	if _, err := compileTable(cfg.Base, cfg.Filter, *tbl); err != nil {
		return err
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

// Source logs the map's warnings and returns an LDAP source answering as
// the map does. It does not connect.
func (m *PostfixMap) Source(log *slog.Logger) (routing.Source, error) {
	if log == nil {
		log = slog.Default()
	}
	for _, w := range m.Warnings {
		log.Warn("postfix map: " + w)
	}
	cfg := m.Config
	t := *cfg.Table
	cfg.Table = &t
	s, err := NewLDAPSource(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("postfix map %s: %w", m.Name, err)
	}
	return s, nil
}
