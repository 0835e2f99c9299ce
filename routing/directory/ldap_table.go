package directory

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

// LDAPTable is what an LDAP source needs to answer as a Postfix
// ldap_table(5) map does (see ParsePostfixMap), beyond LDAPConfig: with it
// LDAPConfig.Base and LDAPConfig.Filter are Postfix templates (%s %u %d,
// %S %U %D, %1…%9, %%), the key is lower-cased first, and keys a template
// cannot be filled for are "not found" without a query.
type LDAPTable struct {
	// ResultFormat is applied to each value (%s %u %d the value's parts,
	// %S %U %D %1…%9 the key's); empty means "%s".
	ResultFormat string
	// The four kinds of result attributes, as Postfix names them.
	ResultAttributes   []string // always returned (unless terminal)
	SpecialAttributes  []string // DNs followed with base-scope searches
	LeafAttributes     []string // returned only by entries without special values
	TerminalAttributes []string // when present, the only values of an entry
	// Domains, if not empty, restricts lookups to user@domain keys with
	// one of these domains; "!domain" excludes, the first match decides.
	Domains []string
	// ExpansionLimit caps the values of one lookup (0: no limit).
	ExpansionLimit int
	// RecursionLimit caps special-attribute nesting (0: Postfix's 1000).
	RecursionLimit int
}

// Template flags, as Postfix's db_common computes them over all templates
// of a map: a key must have every part any template asks for.
type tmplFlags struct {
	keyUser, keyDomain     bool // %u %U; %d %D %1-9 on the key
	valueUser, valueDomain bool // %u, %d in the result format
	nparts                 int  // the highest %1-9
}

// parseTemplate checks tmpl and adds what it uses to f. It reports whether
// tmpl expands anything (a "dynamic" template). An unknown %x is an error,
// as it is fatal in Postfix.
func parseTemplate(name, tmpl string, query bool, f *tmplFlags) (bool, error) {
	dynamic := false
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] != '%' {
			continue
		}
		i++
		if i == len(tmpl) {
			return false, fmt.Errorf("%s %q ends in a lone %%", name, tmpl)
		}
		switch c := tmpl[i]; c {
		case '%':
			continue
		case 's', 'S':
		case 'u':
			if query {
				f.keyUser = true
			} else {
				f.valueUser = true
			}
		case 'd':
			if query {
				f.keyDomain = true
			} else {
				f.valueDomain = true
			}
		case 'U':
			f.keyUser = true
		case 'D':
			f.keyDomain = true
		case '1', '2', '3', '4', '5', '6', '7', '8', '9':
			f.keyDomain = true
			f.nparts = max(f.nparts, int(c-'0'))
		default:
			return false, fmt.Errorf("%s %q: unknown expansion %%%c", name, tmpl, c)
		}
		dynamic = true
	}
	return dynamic, nil
}

// compiledTable is an LDAPTable with its templates checked.
type compiledTable struct {
	LDAPTable
	base, filter string
	flags        tmplFlags
	dynamicBase  bool
	attrs        []string // terminal, leaf, result, special: Postfix's order
	nTerminal    int
	nLeaf        int // leaf attributes are attrs[nTerminal:nTerminal+nLeaf]
	nPlain       int // attrs[:nPlain] are returned, attrs[nPlain:] followed
}

func compileTable(base, filter string, t LDAPTable) (*compiledTable, error) {
	c := &compiledTable{LDAPTable: t, base: base, filter: normalizeFilter(filter)}
	if c.ResultFormat == "" {
		c.ResultFormat = "%s"
	}
	if c.RecursionLimit <= 0 {
		c.RecursionLimit = 1000
	}
	if _, err := parseTemplate("query filter", filter, true, &c.flags); err != nil {
		return nil, err
	}
	dyn, err := parseTemplate("search base", base, true, &c.flags)
	if err != nil {
		return nil, err
	}
	c.dynamicBase = dyn
	if _, err := parseTemplate("result format", c.ResultFormat, false, &c.flags); err != nil {
		return nil, err
	}
	c.attrs = append(c.attrs, t.TerminalAttributes...)
	c.nTerminal = len(c.attrs)
	c.attrs = append(c.attrs, t.LeafAttributes...)
	c.nLeaf = len(c.attrs) - c.nTerminal
	c.attrs = append(c.attrs, t.ResultAttributes...)
	c.nPlain = len(c.attrs)
	c.attrs = append(c.attrs, t.SpecialAttributes...)
	if len(c.attrs) == 0 {
		return nil, errors.New("no result attributes")
	}
	c.Domains = nil
	for _, d := range t.Domains {
		c.Domains = append(c.Domains, strings.ToLower(d))
	}
	return c, nil
}

// normalizeFilter makes a filter as OpenLDAP accepts it one go-ldap
// accepts too: outer parentheses added when missing, and whitespace
// between the parts of the structure (parentheses and the operators
// & | ! after an opening one, as continuation lines leave it) removed.
// Whitespace inside an assertion value is kept.
func normalizeFilter(f string) string {
	f = strings.TrimSpace(f)
	if !strings.HasPrefix(f, "(") {
		f = "(" + f + ")"
	}
	var out []byte
	structural := func() bool { // the last byte written is structure
		n := len(out)
		switch {
		case n == 0:
			return false
		case out[n-1] == '(' || out[n-1] == ')':
			return true
		}
		return strings.IndexByte("&|!", out[n-1]) >= 0 && n > 1 && out[n-2] == '('
	}
	for i := 0; i < len(f); i++ {
		if c := f[i]; (c == ' ' || c == '\t') && structural() {
			j := i
			for j < len(f) && (f[j] == ' ' || f[j] == '\t') {
				j++
			}
			if j < len(f) && (f[j] == '(' || f[j] == ')' || (out[len(out)-1] == '(' && strings.IndexByte("&|!", f[j]) >= 0)) {
				i = j - 1
				continue
			}
		}
		out = append(out, f[i])
	}
	return string(out)
}

// tableKey is a lookup key and its parts.
type tableKey struct {
	key, user, domain string
	qualified         bool     // has an '@'
	labels            []string // domain labels, most significant first
}

func splitKey(key string) tableKey {
	k := tableKey{key: key, user: key}
	if i := strings.LastIndexByte(key, '@'); i >= 0 {
		k.user, k.domain, k.qualified = key[:i], key[i+1:], true
	}
	for _, l := range strings.Split(k.domain, ".") {
		if l != "" {
			k.labels = append([]string{l}, k.labels...)
		}
	}
	return k
}

// eligible applies Postfix's rules for keys that are not searched for: an
// empty key, a key outside the domain list, a key lacking a part some
// template needs (%u of "@domain", %d of "user", %3 of "a@example.com").
func (t *compiledTable) eligible(k tableKey) bool {
	if k.key == "" {
		return false
	}
	if len(t.Domains) > 0 {
		if !k.qualified || k.user == "" || !matchDomain(t.Domains, k.domain) {
			return false
		}
	}
	if t.flags.keyDomain && k.domain == "" {
		return false
	}
	if t.flags.keyUser && k.qualified && k.user == "" {
		return false
	}
	return len(k.labels) >= t.flags.nparts
}

// matchDomain is Postfix's string list match: the first pattern equal to
// domain decides, "!pattern" excluding.
func matchDomain(list []string, domain string) bool {
	for _, p := range list {
		neg := strings.HasPrefix(p, "!")
		if strings.TrimPrefix(p, "!") == domain {
			return !neg
		}
	}
	return false
}

// expandKey fills a query template (search base or filter) with the key's
// parts, each passed through quote. Lower- and upper-case expansions are
// the same here. eligible(k) must hold.
func expandKey(tmpl string, k tableKey, quote func(string) string) string {
	var b strings.Builder
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] != '%' || i+1 == len(tmpl) {
			b.WriteByte(tmpl[i])
			continue
		}
		i++
		switch c := tmpl[i]; c {
		case '%':
			b.WriteByte('%')
		case 's', 'S':
			b.WriteString(quote(k.key))
		case 'u', 'U':
			b.WriteString(quote(k.user))
		case 'd', 'D':
			b.WriteString(quote(k.domain))
		default: // 1-9, checked by parseTemplate and eligible
			b.WriteString(quote(k.labels[c-'1']))
		}
	}
	return b.String()
}

// expandResult applies the result format to one value. It reports false
// for a value Postfix skips: empty, or lacking a part the format needs.
func (t *compiledTable) expandResult(v string, k tableKey) (string, bool) {
	if v == "" {
		return "", false
	}
	vk := splitKey(v)
	if t.flags.valueDomain && vk.domain == "" || t.flags.valueUser && vk.qualified && vk.user == "" {
		return "", false
	}
	tmpl := t.ResultFormat
	var b strings.Builder
	for i := 0; i < len(tmpl); i++ {
		if tmpl[i] != '%' || i+1 == len(tmpl) {
			b.WriteByte(tmpl[i])
			continue
		}
		i++
		switch c := tmpl[i]; c {
		case '%':
			b.WriteByte('%')
		case 's':
			b.WriteString(v)
		case 'u':
			b.WriteString(vk.user)
		case 'd':
			b.WriteString(vk.domain)
		case 'S':
			b.WriteString(k.key)
		case 'U':
			b.WriteString(k.user)
		case 'D':
			b.WriteString(k.domain)
		default:
			b.WriteString(k.labels[c-'1'])
		}
	}
	return b.String(), true
}

// quoteDN escapes a DN attribute value as Postfix's rfc2253_quote does
// (every space, tab and special character as \XX, harmless where the RFC
// would not require it), plus NUL, which a C string cannot hold.
func quoteDN(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.IndexByte(" \t\"#+,;<>\\=\x00", c) >= 0 {
			fmt.Fprintf(&b, "\\%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// tableLookup is dict_ldap_lookup: fold the key, skip ineligible keys,
// search, and collect the values with special, leaf and terminal rules.
func (s *LDAPSource) tableLookup(ctx context.Context, key string) ([]routing.Match, error) {
	t := s.table
	if !utf8.ValidString(key) {
		return nil, nil // as Postfix: such a key is not in any table
	}
	k := splitKey(strings.ToLower(key))
	if !t.eligible(k) {
		return nil, nil
	}
	base := expandKey(t.base, k, quoteDN)
	filter := expandKey(t.filter, k, ldap.EscapeFilter)
	timeout, secs := s.searchTimeout(ctx)
	return s.run(ctx, func(c *ldapConn) ([]routing.Match, error) {
		c.SetTimeout(timeout)
		req := ldap.NewSearchRequest(base, s.scope, s.cfg.Deref, s.cfg.SizeLimit, secs, false, filter, t.attrs, nil)
		res, err := c.Search(req)
		if err != nil {
			if t.dynamicBase && ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
				// A base made from the key that does not exist is a key
				// that is not there, as in Postfix.
				return nil, nil
			}
			return nil, s.searchError(err, key, base, false)
		}
		g := &gather{ctx: ctx, t: t, s: s, search: c.Search, source: "ldap " + c.url, k: k, key: key, secs: secs}
		if err := g.entries(res.Entries, 1); err != nil {
			return nil, err
		}
		return g.out, nil
	})
}

// gather collects the values of one lookup, following special attributes.
// Each entry it follows is searched for once (a diamond of groups would
// otherwise cost a search per path: 2^depth), the walk visits at most
// maxFollow entries, and it ends at ctx's deadline (the client's RCPT is
// waiting): both are a temporary failure, never a wrong answer.
type gather struct {
	ctx    context.Context
	cache  map[string]*ldap.SearchResult
	visits int
	t      *compiledTable
	s      *LDAPSource
	search func(*ldap.SearchRequest) (*ldap.SearchResult, error)
	source string // routing.Match.Source
	k      tableKey
	key    string
	secs   int
	out    []routing.Match
}

// attrKind returns the index in t.attrs of the first attribute desc
// matches (an attribute with options matching its base name), or -1.
func (t *compiledTable) attrKind(desc string) int {
	for i, a := range t.attrs {
		if strings.EqualFold(a, desc) || len(desc) > len(a) && desc[len(a)] == ';' && strings.EqualFold(a, desc[:len(a)]) {
			return i
		}
	}
	return -1
}

// entries is dict_ldap_get_values at recursion depth depth (1 for the
// query's own results).
func (g *gather) entries(es []*ldap.Entry, depth int) error {
	t := g.t
	if n := g.s.cfg.SizeLimit; n > 0 && len(es) > n {
		return errFinal{fmt.Errorf("%w: a search for %s returned more than %d entries", routing.ErrExpansionLimit, g.key, n)}
	}
	for _, e := range es {
		// Postfix decides per entry: terminal if any terminal attribute
		// has a value, else a leaf unless a special attribute has one.
		terminal, leaf := false, true
		for _, a := range e.Attributes {
			if len(a.Values) == 0 {
				continue
			}
			switch i := t.attrKind(a.Name); {
			case i >= 0 && i < t.nTerminal:
				terminal = true
			case i >= t.nPlain:
				leaf = false
			}
		}
		for _, a := range e.Attributes {
			i := t.attrKind(a.Name)
			if i < 0 || len(a.Values) == 0 {
				continue
			}
			switch {
			case terminal && i >= t.nTerminal, !leaf && i >= t.nTerminal && i < t.nTerminal+t.nLeaf:
				continue // not a terminal value of a terminal entry; a leaf value of a group
			case i < t.nPlain || terminal:
				for _, v := range a.Values {
					r, ok := t.expandResult(v, g.k)
					if !ok {
						continue
					}
					if t.ExpansionLimit > 0 && len(g.out) >= t.ExpansionLimit {
						return errFinal{fmt.Errorf("%w: %s has more than %d values", routing.ErrExpansionLimit, g.key, t.ExpansionLimit)}
					}
					g.out = append(g.out, routing.Match{Value: r, Source: g.source, DN: e.DN, Attribute: t.attrs[i]})
				}
			case depth >= t.RecursionLimit:
				return errFinal{fmt.Errorf("%w: %s: %s of %s nests deeper than %d", routing.ErrExpansionLimit, g.key, a.Name, e.DN, t.RecursionLimit)}
			default:
				for _, dn := range a.Values {
					if err := g.follow(dn, depth); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// follow reads the entry dn names (a special attribute's value) and
// gathers its values one level deeper. An RFC 4516 URL instead of a DN is
// searched for as Postfix does: its base, scope and filter, and its
// attributes if it names any, on the connection in use (its host part is
// ignored).
func (g *gather) follow(dn string, depth int) error {
	if g.ctx != nil && g.ctx.Err() != nil {
		return errFinal{fmt.Errorf("%w: %s: lookup time used up following %s: %v", routing.ErrUnavailable, g.key, dn, g.ctx.Err())}
	}
	if g.visits++; g.visits > maxFollow {
		return errFinal{fmt.Errorf("%w: %s: more than %d entries to follow", routing.ErrExpansionLimit, g.key, maxFollow)}
	}
	base, scope, filter, attrs := dn, ldap.ScopeBaseObject, "(objectClass=*)", g.t.attrs
	if isLDAPURL(dn) {
		u, err := parseLDAPURL(dn)
		if err != nil {
			g.s.log.Error("ldap: bad LDAP URL in a special result attribute", "key", g.key, "url", dn, "err", err)
			return errFinal{fmt.Errorf("%w: %s: LDAP URL %q: %v", routing.ErrUnavailable, g.key, dn, err)}
		}
		base, scope, filter = u.base, u.scope, u.filter
		if len(u.attrs) > 0 {
			attrs = u.attrs
		}
	}
	ck := strings.ToLower(fmt.Sprint(base, "\x00", scope, "\x00", filter, "\x00", attrs))
	if res, ok := g.cache[ck]; ok {
		if res == nil {
			return nil // not found, as the first time
		}
		return g.entries(res.Entries, depth+1)
	}
	req := ldap.NewSearchRequest(base, scope, g.s.cfg.Deref, g.s.cfg.SizeLimit, g.secs, false, filter, attrs, nil)
	res, err := g.search(req)
	if g.cache == nil {
		g.cache = map[string]*ldap.SearchResult{}
	}
	if err == nil {
		g.cache[ck] = res
	} else if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		g.cache[ck] = nil
	}
	if err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
			// Postfix treats it as an entry without result attributes.
			g.s.log.Warn("ldap: DN in a special result attribute not found, skipping", "key", g.key, "dn", dn)
			return nil
		}
		return g.s.searchError(err, g.key, dn, true)
	}
	return g.entries(res.Entries, depth+1)
}

// maxFollow bounds the entries one lookup follows (paths, not distinct
// entries: a diamond's are many).
const maxFollow = 100_000

func isLDAPURL(s string) bool {
	l := strings.ToLower(s)
	return strings.HasPrefix(l, "ldap://") || strings.HasPrefix(l, "ldaps://") || strings.HasPrefix(l, "ldapi://")
}

// ldapURL is what a search needs of an RFC 4516 URL.
type ldapURL struct {
	base, filter string
	scope        int
	attrs        []string
}

// parseLDAPURL reads scheme://host/dn?attributes?scope?filter?extensions,
// percent-decoded, with OpenLDAP's defaults: scope base, filter
// (objectClass=*). A critical extension ("!name") cannot be honoured, so it
// is an error.
func parseLDAPURL(s string) (ldapURL, error) {
	u := ldapURL{scope: ldap.ScopeBaseObject, filter: "(objectClass=*)"}
	_, rest, _ := strings.Cut(s, "://")
	_, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return u, nil // no DN: the root DSE
	}
	parts := strings.SplitN(rest, "?", 5)
	for len(parts) < 5 {
		parts = append(parts, "")
	}
	dec := func(p string) (string, error) {
		v, err := url.PathUnescape(p)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", p)
		}
		return v, nil
	}
	var err error
	if u.base, err = dec(parts[0]); err != nil {
		return u, err
	}
	if parts[1] != "" {
		for _, a := range strings.Split(parts[1], ",") {
			a, err := dec(a)
			if err != nil {
				return u, err
			}
			if a = strings.TrimSpace(a); a != "" {
				u.attrs = append(u.attrs, a)
			}
		}
	}
	switch sc, _ := dec(parts[2]); strings.ToLower(sc) {
	case "", "base":
	case "one", "onelevel":
		u.scope = ldap.ScopeSingleLevel
	case "sub", "subtree":
		u.scope = ldap.ScopeWholeSubtree
	default:
		return u, fmt.Errorf("unknown scope %q", parts[2])
	}
	if parts[3] != "" {
		if u.filter, err = dec(parts[3]); err != nil {
			return u, err
		}
		if !strings.HasPrefix(u.filter, "(") {
			u.filter = "(" + u.filter + ")"
		}
		if _, err := ldap.CompileFilter(u.filter); err != nil {
			return u, fmt.Errorf("filter %q: %v", u.filter, err)
		}
	}
	for _, e := range strings.Split(parts[4], ",") {
		if strings.HasPrefix(strings.TrimSpace(e), "!") {
			return u, fmt.Errorf("critical extension %q not supported", e)
		}
	}
	return u, nil
}
