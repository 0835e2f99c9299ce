package directory

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

// A replica of a Postfix ldap_table(5) map answers as tableLookup does: the
// same key folding and eligibility, the query filter evaluated in memory,
// and the entries found passed through the same gather (result_format,
// special, leaf and terminal attributes, size, expansion and recursion
// limits). A special attribute's DN is read from the replica, which then
// holds every entry under the search base; a DN outside it, or an RFC 4516
// URL, needs a search the replica cannot do, and the whole lookup goes to
// the live source (errNotHeld). Maps the replica cannot answer at all
// (a search base made from the key, %1…%9 in the filter, filters beyond
// equality/presence/AND/OR/NOT) stay live queries.

// errNotHeld: answering needs an entry the replica does not hold.
var errNotHeld = errors.New("entry not in the replica")

// tableFilterTemplate turns a table's query filter into the replica
// filter's template language: %S %U %D mean %s %u %d in a query (expandKey).
func tableFilterTemplate(f string) string {
	var b strings.Builder
	for i := 0; i < len(f); i++ {
		b.WriteByte(f[i])
		if f[i] == '%' && i+1 < len(f) {
			i++
			switch c := f[i]; c {
			case 'S', 'U', 'D':
				b.WriteByte(c + 'a' - 'A')
			default:
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

// newTableReplica is NewLDAPReplica for a source with Postfix semantics.
func newTableReplica(src *LDAPSource, live routing.Source, cfg ReplicaConfig) (*Replica, error) {
	t := src.table
	if t.dynamicBase || strings.Contains(t.base, "%") {
		return nil, fmt.Errorf("%w: search_base %q is made from the key", errFilterNotLocal, t.base)
	}
	r, err := newReplica(live, tableFilterTemplate(t.filter), Schema{}, t.attrs, cfg.MaxStale, src.log)
	if err != nil {
		return nil, err
	}
	r.table, r.src = t, src
	if len(t.SpecialAttributes) > 0 {
		r.store.byDN = map[[16]byte]*replEntry{}
		base, err := ldap.ParseDN(t.base)
		if err != nil {
			return nil, fmt.Errorf("%w: search_base %q: %v", errFilterNotLocal, t.base, err)
		}
		r.followBase = base
	}
	return r, nil
}

// tableAnswer is tableLookup answered from the replica.
func (r *Replica) tableAnswer(key string) ([]routing.Match, error) {
	t := r.table
	if !utf8.ValidString(key) {
		return nil, nil
	}
	k := splitKey(strings.ToLower(key))
	if !t.eligible(k) {
		return nil, nil
	}
	s := r.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	found := s.matching(r.filter, k.key)
	es := make([]*ldap.Entry, len(found))
	for i, e := range found {
		es[i] = s.ldapEntry(e, t.attrs)
	}
	var notHeld error
	search := func(req *ldap.SearchRequest) (*ldap.SearchResult, error) {
		if req.Scope == ldap.ScopeBaseObject && req.Filter == "(objectClass=*)" && s.byDN != nil {
			if e := s.withDN(req.BaseDN); e != nil {
				return &ldap.SearchResult{Entries: []*ldap.Entry{s.ldapEntry(e, req.Attributes)}}, nil
			}
			if r.holdsDN(req.BaseDN) {
				// Under the base, where the replica holds every entry:
				// there is no such entry.
				return nil, ldap.NewError(ldap.LDAPResultNoSuchObject, errors.New("no such entry in the replica"))
			}
		}
		notHeld = fmt.Errorf("%w: %s", errNotHeld, req.BaseDN)
		return nil, notHeld
	}
	g := &gather{t: t, s: r.src, search: search, source: r.source(), k: k, key: key}
	err := g.entries(es, 1)
	if notHeld != nil {
		return nil, notHeld
	}
	if err != nil {
		return nil, err
	}
	return g.out, nil
}

// holdsDN tells whether dn is inside the search base and scope, where a
// replica that follows DNs holds every entry.
func (r *Replica) holdsDN(dn string) bool {
	d, err := ldap.ParseDN(dn)
	if err != nil || r.followBase == nil {
		return false
	}
	switch r.src.scope {
	case ldap.ScopeBaseObject:
		return r.followBase.EqualFold(d)
	case ldap.ScopeSingleLevel:
		return len(d.RDNs) == len(r.followBase.RDNs)+1 && r.followBase.AncestorOfFold(d)
	default:
		return r.followBase.EqualFold(d) || r.followBase.AncestorOfFold(d)
	}
}

// ldapEntry is e as a search for attrs would return it.
func (s *replicaStore) ldapEntry(e *replEntry, attrs []string) *ldap.Entry {
	out := &ldap.Entry{DN: e.dn}
	get := s.getter(e)
	for _, a := range attrs {
		if vs := get(a); len(vs) > 0 {
			out.Attributes = append(out.Attributes, &ldap.EntryAttribute{Name: a, Values: vs})
		}
	}
	return out
}
