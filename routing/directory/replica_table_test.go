package directory

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
)

// tableDir is an in-memory directory that answers a Postfix table's
// searches as a server would: the query by scanning every entry, and the
// base-scope reads of special attributes by DN.
type tableDir struct {
	entries []*ldap.Entry
}

func (d *tableDir) search(r *ldap.SearchRequest) (*ldap.SearchResult, error) {
	if r.Scope == ldap.ScopeBaseObject {
		for _, e := range d.entries {
			if dnKey(e.DN) == dnKey(r.BaseDN) {
				return &ldap.SearchResult{Entries: []*ldap.Entry{e}}, nil
			}
		}
		return nil, ldap.NewError(ldap.LDAPResultNoSuchObject, errors.New("no such object"))
	}
	return nil, errors.New("not a test search: " + r.Filter)
}

// query is what the server returns for the table's filter (mail=%s or
// mailAlternateAddress=%s, and not locked) for key.
func (d *tableDir) query(key string) []*ldap.Entry {
	var out []*ldap.Entry
	for _, e := range d.entries {
		locked := strings.EqualFold(e.GetAttributeValue("nsAccountLock"), "true")
		hit := false
		for _, a := range []string{"mail", "mailAlternateAddress"} {
			for _, v := range e.GetEqualFoldAttributeValues(a) {
				hit = hit || strings.EqualFold(v, key)
			}
		}
		if hit && !locked {
			out = append(out, e)
		}
	}
	return out
}

// A replica of a Postfix table gives what tableLookup gives from the
// server for every key: groups followed by DN inside the replica, a
// missing member under the base skipped, limits and result_format applied;
// and it hands the lookup to the live source when it would need an entry
// outside its base or an LDAP URL's search.
func TestTableReplicaAnswersAsServer(t *testing.T) {
	dir := &tableDir{entries: []*ldap.Entry{
		dirEntry("cn=alice,dc=x", "mail", "alice@x", "", "cn", "alice"),
		dirEntry("cn=bob,dc=x", "mail", "bob@x", "", "mailAlternateAddress", "Robert@X", "", "mailForwardingAddress", "bob@elsewhere"),
		dirEntry("cn=team,dc=x", "mail", "team@x", "", "member", "cn=alice,dc=x", "CN=Bob, DC=x", "cn=ghost,dc=x"),
		dirEntry("cn=plain,ou=groups,dc=x", "member", "cn=alice,dc=x"), // a group without mail: only reached by DN
		dirEntry("cn=outer,dc=x", "mail", "outer@x", "", "member", "cn=team,dc=x", "cn=plain,ou=groups,dc=x", "cn=routed,dc=x"),
		dirEntry("cn=routed,dc=x", "mail", "routed@x", "", "maildrop", "routed@lists", "", "member", "cn=alice,dc=x"),
		dirEntry("cn=loop,dc=x", "mail", "loop@x", "", "member", "cn=loop,dc=x"),
		dirEntry("cn=locked,dc=x", "mail", "locked@x", "", "nsAccountLock", "TRUE"),
		dirEntry("cn=dup1,dc=x", "mail", "dup@x"),
		dirEntry("cn=dup2,dc=x", "mail", "dup@x"),
		dirEntry("cn=outside,dc=x", "mail", "outside@x", "", "member", "cn=someone,dc=elsewhere"),
		dirEntry("cn=url,dc=x", "mail", "url@x", "", "member", "ldap:///dc=x??sub?(mail=alice@x)"),
	}}
	base := LDAPTable{
		ResultAttributes:   []string{"mailForwardingAddress"},
		SpecialAttributes:  []string{"member"},
		LeafAttributes:     []string{"mail"},
		TerminalAttributes: []string{"maildrop"},
		Domains:            []string{"x"},
	}
	const filter = "(&(|(mail=%s)(mailAlternateAddress=%S))(!(nsAccountLock=true)))"
	keys := []string{"alice@x", "ALICE@X", "robert@x", "team@x", "outer@x", "routed@x", "loop@x", "locked@x", "dup@x", "nobody@x", "alice@other", "alice", ""}
	tests := []struct {
		name    string
		mod     func(*LDAPTable)
		sizeLim int
	}{
		{"postfix rules", nil, 0},
		{"result format", func(l *LDAPTable) { l.ResultFormat = "%u+%U@%d" }, 0},
		{"expansion limit", func(l *LDAPTable) { l.ExpansionLimit = 2 }, 0},
		{"recursion limit", func(l *LDAPTable) { l.RecursionLimit = 2 }, 0},
		{"size limit", nil, 1},
		{"no special attributes", func(l *LDAPTable) {
			l.SpecialAttributes, l.LeafAttributes = nil, nil
			l.ResultAttributes = []string{"mail", "mailForwardingAddress"}
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := base
			if tt.mod != nil {
				tt.mod(&tb)
			}
			src, err := NewLDAPSource(LDAPConfig{URLs: []string{"ldap://127.0.0.1:1"}, Timeout: time.Second, PoolSize: 2, Base: "dc=x", Filter: filter, SizeLimit: tt.sizeLim, Table: &tb}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewLDAPReplica(src, &fakeLive{}, ReplicaConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if got, want := r.sync.syncFilter(), "(objectClass=*)"; len(tb.SpecialAttributes) > 0 && got != want {
				t.Errorf("sync filter %q, want %q (every entry: members are followed by DN)", got, want)
			}
			for i, e := range dir.entries {
				r.store.put([16]byte{byte(i + 1)}, r.store.makeEntry(e.DN, e.GetEqualFoldAttributeValues))
			}
			for _, key := range keys {
				// the server's answer, through the same gather
				var want []string
				var wantErr error
				k := splitKey(strings.ToLower(key))
				if key != "" && src.table.eligible(k) {
					g := &gather{t: src.table, s: src, search: dir.search, source: "ldap", k: k, key: key}
					wantErr = g.entries(dir.query(k.key), 1)
					want = routing.Values(g.out)
				}
				ms, err := r.answer(key)
				if wantErr != nil {
					if err == nil || errors.Is(err, routing.ErrExpansionLimit) != errors.Is(wantErr, routing.ErrExpansionLimit) {
						t.Errorf("%q: replica %q, %v; server %v", key, routing.Values(ms), err, wantErr)
					}
					continue
				}
				if got := routing.Values(ms); err != nil || len(got)+len(want) > 0 && !reflect.DeepEqual(got, want) {
					t.Errorf("%q: replica %q, %v; server %q", key, routing.Values(ms), err, want)
				}
				for _, m := range ms {
					if !strings.HasPrefix(m.Source, "replica") || m.DN == "" {
						t.Errorf("%q: match without the replica's provenance: %+v", key, m)
					}
				}
			}
			// Entries the replica cannot read: the live source answers.
			for _, key := range []string{"outside@x", "url@x"} {
				if _, err := r.answer(key); len(tb.SpecialAttributes) > 0 && !errors.Is(err, errNotHeld) {
					t.Errorf("%q: %v, want errNotHeld", key, err)
				}
			}
		})
	}

	t.Run("live fallback counted", func(t *testing.T) {
		src, err := NewLDAPSource(LDAPConfig{URLs: []string{"ldap://127.0.0.1:1"}, Timeout: time.Second, PoolSize: 2, Base: "dc=x", Filter: filter, Table: &base}, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		live := &fakeLive{answers: map[string][]routing.Match{"outside@x": {{Value: "someone@elsewhere", Source: "ldap"}}}}
		r, err := NewLDAPReplica(src, live, ReplicaConfig{})
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range dir.entries {
			r.store.put([16]byte{byte(i + 1)}, r.store.makeEntry(e.DN, e.GetEqualFoldAttributeValues))
		}
		r.markSynced()
		ms, err := r.Lookup(context.Background(), "outside@x")
		if err != nil || !reflect.DeepEqual(routing.Values(ms), []string{"someone@elsewhere"}) || live.calls != 1 {
			t.Errorf("outside the base: %q, %v after %d live calls; want the live answer", routing.Values(ms), err, live.calls)
		}
		if ms, err := r.Lookup(context.Background(), "team@x"); err != nil || len(ms) != 3 || live.calls != 1 {
			t.Errorf("team: %q, %v after %d live calls; want the replica's answer", routing.Values(ms), err, live.calls)
		}
		if st := r.Stats(); st.Local != 1 || st.Live != 1 {
			t.Errorf("stats %+v, want 1 local, 1 live", st)
		}
	})
}

// Maps the replica cannot answer stay live queries.
func TestTableReplicaRefuses(t *testing.T) {
	for _, c := range []struct{ base, filter string }{
		{"ou=%d,dc=x", "(mail=%s)"},             // base from the key
		{"dc=x", "(mail=%1@x)"},                 // a domain label
		{"dc=x", "(mail=*%u*)"},                 // substrings
		{"dc=x", "(objectClass=inetOrgPerson)"}, // not keyed by the address
	} {
		tb := LDAPTable{ResultAttributes: []string{"mail"}}
		src, err := NewLDAPSource(LDAPConfig{URLs: []string{"ldap://127.0.0.1:1"}, Timeout: time.Second, PoolSize: 2, Base: c.base, Filter: c.filter, Table: &tb}, quietLog())
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if _, err := NewLDAPReplica(src, &fakeLive{}, ReplicaConfig{}); !errors.Is(err, errFilterNotLocal) {
			t.Errorf("%+v: %v, want errFilterNotLocal", c, err)
		}
	}
}
