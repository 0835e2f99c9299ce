package directory

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"mailfwd/routing"
)

func TestCompileReplicaFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		ok     bool
	}{
		{"(|(mail=%s)(mailAlternateAddress=%s))", true},
		{"(mail=%s)", true},
		{"(&(objectClass=mailRecipient)(|(mail=%s)(mailAlternateAddress=%s)))", true},
		{"(&(!(nsAccountLock=true))(mail=%u@%d))", true},
		{"(&(objectClass=inetOrgPerson)(uid=%u))", true},
		{"(|(mail=%s)(objectClass=x))", false}, // an OR branch that ignores the address
		{"(mail=*%s)", false},                  // substrings
		{"(mail>=%s)", false},
		{"(mail:caseExactMatch:=%s)", false},
		{"(objectClass=*)", false},
		{"(mail=%1)", false}, // a Postfix expansion
		{"(mail=%s", false},
		{"(mail=%s))", false},
	} {
		_, err := compileReplicaFilter(tc.filter)
		if (err == nil) != tc.ok {
			t.Errorf("compileReplicaFilter(%q): err %v, want ok=%v", tc.filter, err, tc.ok)
		}
		if err != nil && !errors.Is(err, errFilterNotLocal) {
			t.Errorf("compileReplicaFilter(%q): %v does not wrap errFilterNotLocal", tc.filter, err)
		}
	}
}

// testEntry is an entry as a sync stream delivers it.
type testEntry struct {
	uuid  byte
	dn    string
	attrs map[string][]string
}

func (e testEntry) get(name string) []string {
	for k, v := range e.attrs {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

func newTestReplica(t *testing.T, filter string, live routing.Source) *Replica {
	t.Helper()
	r, err := newReplica(live, filter, MailRecipientSchema, nil, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *Replica) putTest(e testEntry) {
	r.store.put([16]byte{e.uuid}, r.store.makeEntry(e.dn, e.get))
}

// The replica answers what the live search would: the same entries for
// the same filter, each through the schema's result rules.
func TestReplicaLookupMatchesFilter(t *testing.T) {
	r := newTestReplica(t, "(&(objectClass=mailRecipient)(!(nsAccountLock=true))(|(mail=%s)(mailAlternateAddress=%s)))", nil)
	for _, e := range []testEntry{
		{1, "cn=a,dc=x", map[string][]string{"objectClass": {"top", "mailRecipient"}, "mail": {"A@Company.com"}, "mailForwardingAddress": {"a@gmail.com", "a2@gmail.com"}}},
		{2, "cn=b,dc=x", map[string][]string{"objectClass": {"mailRecipient"}, "mail": {"b@company.com"}, "mailAlternateAddress": {"bee@company.com", "shared@company.com"}}},
		{3, "cn=c,dc=x", map[string][]string{"objectClass": {"mailRecipient"}, "mail": {"c@company.com"}, "mailAlternateAddress": {"shared@company.com"}, "mailForwardingAddress": {"c@ext.example"}}},
		{4, "cn=locked,dc=x", map[string][]string{"objectClass": {"mailRecipient"}, "mail": {"locked@company.com"}, "nsAccountLock": {"TRUE"}}},
		{5, "cn=person,dc=x", map[string][]string{"objectClass": {"person"}, "mail": {"person@company.com"}}},
	} {
		r.putTest(e)
	}
	r.markSynced()
	for _, tc := range []struct{ key, want string }{
		{"a@company.com", "a@gmail.com a2@gmail.com"},
		{"A@COMPANY.COM", "a@gmail.com a2@gmail.com"},
		{"bee@company.com", "b@company.com"}, // the fallback attribute
		{"shared@company.com", "b@company.com c@ext.example"},
		{"locked@company.com", ""},
		{"person@company.com", ""},
		{"nobody@company.com", ""},
	} {
		ms, err := r.Lookup(context.Background(), tc.key)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(routing.Values(ms), " "); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.key, got, tc.want)
		}
		for _, m := range ms {
			if m.Source != "replica" || m.DN == "" {
				t.Errorf("%s: match %+v: want source replica and a DN", tc.key, m)
			}
		}
	}
	// A change replaces the entry's values and index slots; a delete and
	// the end of a present phase remove them.
	r.putTest(testEntry{1, "cn=a,dc=x", map[string][]string{"objectClass": {"mailRecipient"}, "mail": {"a-new@company.com"}}})
	r.store.remove([16]byte{3})
	for _, tc := range []struct{ key, want string }{
		{"a@company.com", ""},
		{"a-new@company.com", "a-new@company.com"},
		{"shared@company.com", "b@company.com"},
		{"c@company.com", ""},
	} {
		ms, _ := r.Lookup(context.Background(), tc.key)
		if got := strings.Join(routing.Values(ms), " "); got != tc.want {
			t.Errorf("after changes, %s: %q, want %q", tc.key, got, tc.want)
		}
	}
	if n := r.store.keep(map[[16]byte]bool{{2}: true}); n != 3 || r.store.len() != 1 {
		t.Errorf("keep removed %d, %d left; want 3 removed, 1 left", n, r.store.len())
	}
	if ms, _ := r.Lookup(context.Background(), "a-new@company.com"); len(ms) != 0 {
		t.Errorf("an entry the present phase did not list still answers: %v", ms)
	}
	for j := range r.store.index {
		for v, e := range r.store.index[j] {
			if e.dn != "cn=b,dc=x" {
				t.Errorf("index %d keeps %q -> %s after its entry went", j, v, e.dn)
			}
		}
	}
	if len(r.store.shared) != 0 {
		t.Errorf("shared index slots left: %v", r.store.shared)
	}
}

// fakeLive is the live source behind a replica: answers, or the directory
// unreachable.
type fakeLive struct {
	down    bool
	answers map[string][]routing.Match
	calls   int
}

func (f *fakeLive) Lookup(_ context.Context, key string) ([]routing.Match, error) {
	f.calls++
	if f.down {
		return nil, fmt.Errorf("%w: connection refused", routing.ErrUnavailable)
	}
	return f.answers[key], nil
}

// The freshness contract: answers from the replica only while in sync;
// live queries otherwise (the replica's "not found" never trusted); while
// the directory is unreachable, known addresses from a replica confirmed
// within max_stale, unknown ones the live source's temporary error.
func TestReplicaFreshnessContract(t *testing.T) {
	live := &fakeLive{answers: map[string][]routing.Match{"new@company.com": {{Value: "new@company.com", Source: "ldap"}}}}
	r := newTestReplica(t, "(|(mail=%s)(mailAlternateAddress=%s))", live)
	now := time.Unix(1_800_000_000, 0)
	r.now = func() time.Time { return now }
	flushed := 0
	r.OnDown(func() { flushed++ })
	r.putTest(testEntry{1, "cn=known", map[string][]string{"mail": {"known@company.com"}, "mailForwardingAddress": {"k@gmail.com"}}})
	ctx := context.Background()
	lookup := func(key string) (string, error) {
		ms, err := r.Lookup(ctx, key)
		return strings.Join(routing.Values(ms), " "), err
	}

	// Before the first refresh completes: live only, even when it is down.
	live.down = true
	if _, err := lookup("known@company.com"); !errors.Is(err, routing.ErrUnavailable) {
		t.Errorf("before any sync, directory down: err %v, want routing.ErrUnavailable (the replica is not whole yet)", err)
	}
	live.down = false

	r.markSynced()
	calls := live.calls
	if got, _ := lookup("known@company.com"); got != "k@gmail.com" {
		t.Errorf("in sync: %q", got)
	}
	if got, _ := lookup("new@company.com"); got != "" {
		t.Errorf("in sync, not in the replica: %q, want not found", got)
	}
	if live.calls != calls {
		t.Errorf("in sync: %d live queries, want 0", live.calls-calls)
	}

	// The stream drops: live queries, and the cache behind is flushed.
	r.markDown("down: connection reset")
	if flushed != 1 {
		t.Errorf("OnDown ran %d times, want 1", flushed)
	}
	if got, _ := lookup("new@company.com"); got != "new@company.com" {
		t.Errorf("stream down: %q, want the live answer", got)
	}
	// The directory unreachable too: known from the replica, unknown 451.
	live.down = true
	now = now.Add(30 * time.Minute)
	if got, err := lookup("known@company.com"); err != nil || got != "k@gmail.com" {
		t.Errorf("outage, known address: %q %v, want the replica's answer", got, err)
	}
	if _, err := lookup("nobody@company.com"); !errors.Is(err, routing.ErrUnavailable) {
		t.Errorf("outage, unknown address: %v, want routing.ErrUnavailable (451), never not found", err)
	}
	// Beyond max_stale the replica is not used.
	now = now.Add(time.Hour)
	if _, err := lookup("known@company.com"); !errors.Is(err, routing.ErrUnavailable) {
		t.Errorf("outage beyond max_stale: %v, want ErrUnavailable", err)
	}
	st := r.Stats()
	if st.Local != 2 || st.Stale != 2 || st.State != "down: connection reset" {
		t.Errorf("stats %+v", st)
	}
}

// During an outage a known user's whole expansion completes from the
// replica (its forwarding address, not in the directory, is final), while
// an address the replica does not hold is a temporary failure, not unknown.
func TestReplicaOutageExpansion(t *testing.T) {
	live := &fakeLive{down: true}
	r := newTestReplica(t, "(|(mail=%s)(mailAlternateAddress=%s))", live)
	r.putTest(testEntry{1, "cn=k", map[string][]string{"mail": {"known@company.com"}, "mailForwardingAddress": {"k@gmail.com", "team@company.com"}}})
	r.putTest(testEntry{2, "cn=t", map[string][]string{"mail": {"team@company.com"}, "mailForwardingAddress": {"a@company.com"}}})
	r.markSynced()
	r.markDown("down: test")
	x := &routing.Expander{Source: r, Delimiter: "+", Limits: routing.PostfixLimits}
	got, err := x.Expand(context.Background(), "known+tag@company.com")
	if err != nil || strings.Join(got, " ") != "k@gmail.com a@company.com" {
		t.Errorf("known address during the outage: %v %v, want [k@gmail.com a@company.com]", got, err)
	}
	_, err = x.Expand(context.Background(), "nobody@company.com")
	if !errors.Is(err, routing.ErrUnavailable) || errors.Is(err, routing.ErrNotFound) {
		t.Errorf("unknown address during the outage: %v, want a temporary failure", err)
	}
}

// The memory a replica needs per entry, for docs/directory.md: go test
// -run TestReplicaMemory -v -replica-entries=1000000 ./routing/directory/
var replicaEntries = flag.Int("replica-entries", 200_000, "entries TestReplicaMemory loads")

func TestReplicaMemory(t *testing.T) {
	n := *replicaEntries
	r := newTestReplica(t, "(|(mail=%s)(mailAlternateAddress=%s))", nil)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range n {
		e := testEntry{dn: fmt.Sprintf("uid=user%07d,ou=people,dc=example,dc=net", i), attrs: map[string][]string{
			"mail":                  {fmt.Sprintf("user%07d@company.com", i)},
			"mailForwardingAddress": {fmt.Sprintf("user%07d.private@gmail.com", i)},
		}}
		if i%4 == 0 {
			e.attrs["mailAlternateAddress"] = []string{fmt.Sprintf("alias%07d@company.com", i)}
		}
		var id [16]byte
		copy(id[:], fmt.Sprintf("%016d", i))
		r.store.put(id, r.store.makeEntry(e.dn, e.get))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	t.Logf("%d entries (mail, mailForwardingAddress, a quarter with a mailAlternateAddress): %.0f bytes per entry, %.0f MiB for 1,000,000",
		n, per, per*1e6/(1<<20))
	r.markSynced()
	if ms, _ := r.Lookup(context.Background(), "user0000004@company.com"); len(ms) != 1 || ms[0].Value != "user0000004.private@gmail.com" {
		t.Errorf("lookup in the big replica: %v", ms)
	}
	if per > 512 {
		t.Errorf("%.0f bytes per entry: 1,000,000 entries would not fit in 512 MiB", per)
	}
}
