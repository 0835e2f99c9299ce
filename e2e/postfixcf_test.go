//go:build e2e

package e2e

// Postfix ldap_table(5) files read by directory.ParsePostfixMap, against the
// running 389-DS, with the real postmap(1) as the oracle.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"mailfwd/routing"
	"mailfwd/routing/directory"
)

// pfAnswer is one lookup's outcome, comparable between postmap and mailfwd.
type pfAnswer struct {
	values []string
	err    string // "" or a short description; compared as "error" / none
}

func (a pfAnswer) String() string {
	if a.err != "" {
		return "error (" + a.err + ")"
	}
	if a.values == nil {
		return "not found"
	}
	return strings.Join(a.values, ",")
}

func (a pfAnswer) same(b pfAnswer) bool {
	return (a.err == "") == (b.err == "") && slices.Equal(a.values, b.values)
}

// postmapQuery runs `postmap -c $PF_CONF -q key ldap:cf`: values are
// printed comma-joined, exit 1 without output is "not found", "fatal" an
// error. -c: the shared Postfix's own config directory, because postmap
// otherwise reads /etc/postfix/main.cf, which Debian's package does not
// create when told "No configuration".
func postmapQuery(t *testing.T, cf, key string) pfAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "postmap", "-c", suite.servers["PF_CONF"], "-q", key, "ldap:"+cf)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	switch {
	case err == nil:
		return pfAnswer{values: strings.Split(strings.TrimRight(out.String(), "\n"), ",")}
	case strings.Contains(errb.String(), "fatal") || strings.Contains(errb.String(), "error"):
		return pfAnswer{err: strings.TrimSpace(errb.String())}
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 && out.Len() == 0 {
			return pfAnswer{}
		}
		t.Errorf("postmap -q %q ldap:%s: %v\n%s", key, cf, err, errb.String())
		return pfAnswer{err: "postmap failed"}
	}
}

// postmapBatch answers keys with one `postmap -q - ldap:cf` (each run
// costs postmap seconds against 389-DS as Directory Manager). A query
// error aborts postmap: then each key is asked on its own.
func postmapBatch(t *testing.T, cf string, keys []string) map[string]pfAnswer {
	t.Helper()
	out := map[string]pfAnswer{}
	var batch []string
	for _, k := range keys {
		if k == "" || strings.ContainsAny(k, "\t\n ") {
			out[k] = postmapQuery(t, cf, k)
		} else {
			batch = append(batch, k)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "postmap", "-c", suite.servers["PF_CONF"], "-q", "-", "ldap:"+cf)
	cmd.Stdin = strings.NewReader(strings.Join(batch, "\n") + "\n")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Run() // exit 1 when some key is not found
	if strings.Contains(stderr.String(), "fatal") {
		for _, k := range batch {
			out[k] = postmapQuery(t, cf, k)
		}
		return out
	}
	for _, k := range batch {
		out[k] = pfAnswer{}
	}
	for _, l := range strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n") {
		if k, v, ok := strings.Cut(l, "\t"); ok {
			out[k] = pfAnswer{values: strings.Split(v, ",")}
		}
	}
	return out
}

// mailfwdQuery looks key up in the map's source as the expander would.
func mailfwdQuery(src routing.Source, key string) pfAnswer {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms, err := src.Lookup(ctx, key)
	if err != nil {
		return pfAnswer{err: err.Error()}
	}
	return pfAnswer{values: routing.Values(ms)}
}

func writeCF(t *testing.T, body string) string {
	t.Helper()
	cf := filepath.Join(t.TempDir(), "map.cf")
	if err := os.WriteFile(cf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return cf
}

func pfSource(t *testing.T, cf string) routing.Source {
	t.Helper()
	m, err := directory.ParsePostfixMap(cf)
	if err != nil {
		t.Fatal(err)
	}
	m.Config.PoolSize = 8 // a .cf has none (the binary gives directory.ldap's)
	src, err := m.Source(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, ok := src.(interface{ Close() }); ok {
			c.Close()
		}
	})
	return src
}

// pfEntries are added under their own OU by TestPostfixCFGroups: groups of
// DNs (uniqueMember) for special_result_attribute, mail as the leaf
// attribute, mailRoutingAddress as the terminal one.
func pfEntries(ou string) []*ldap.AddRequest {
	var reqs []*ldap.AddRequest
	add := func(rdn string, attrs map[string][]string) {
		r := ldap.NewAddRequest(rdn+","+ou, nil)
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range attrs {
				if !yield(k) {
					return
				}
			}
		}) {
			r.Attribute(k, attrs[k])
		}
		reqs = append(reqs, r)
	}
	person := func(cn, mail string, extra map[string][]string) {
		a := map[string][]string{
			"objectClass": {"top", "person", "organizationalPerson", "inetOrgPerson", "mailRecipient"},
			"cn":          {cn}, "sn": {cn}, "mail": {mail},
		}
		for k, v := range extra {
			a[k] = v
		}
		add("cn="+cn, a)
	}
	group := func(cn, mail string, members []string, extra map[string][]string) {
		a := map[string][]string{
			"objectClass": {"top", "groupOfUniqueNames", "mailRecipient"},
			"cn":          {cn}, "mail": {mail},
		}
		for _, m := range members {
			a["uniqueMember"] = append(a["uniqueMember"], "cn="+m+","+ou)
		}
		for k, v := range extra {
			a[k] = v
		}
		add("cn="+cn, a)
	}
	person("alice", "alice@pfcf.test", nil)
	person("bob", "bob@pfcf.test", nil)
	person("carol", "carol@pfcf.test", nil)
	person("fwd", "fwd@pfcf.test", map[string][]string{"mailForwardingAddress": {"fwd@elsewhere.test"}})
	person("dup1", "dup@pfcf.test", nil)
	person("dup2", "dup@pfcf.test", nil)
	group("team", "team@pfcf.test", []string{"alice", "bob"}, nil)
	group("outer", "outer@pfcf.test", []string{"team", "carol", "ghost"}, nil)
	group("routed", "routed@pfcf.test", []string{"alice", "bob"},
		map[string][]string{"mailRoutingAddress": {"routed@lists.pfcf.test"}})
	group("withrouted", "withrouted@pfcf.test", []string{"routed", "carol"}, nil)
	group("fwdgroup", "fwdgroup@pfcf.test", []string{"carol"},
		map[string][]string{"mailForwardingAddress": {"archive@pfcf.test"}})
	group("big", "big@pfcf.test", []string{"alice", "bob", "carol"}, nil)
	group("loop", "loop@pfcf.test", []string{"loop"}, nil)
	return reqs
}

func dmConn(t *testing.T) *ldap.Conn {
	t.Helper()
	c, err := ldap.DialURL(suite.servers["DS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bind(suite.servers["DS_ROOT_DN"], suite.servers["DS_ROOT_PW"]); err != nil {
		c.Close()
		t.Fatal(err)
	}
	return c
}

// pfTree adds pfEntries under an OU of their own in the suite's 389-DS
// (removed when t ends) and returns it, with a Directory Manager connection.
func pfTree(t *testing.T) (string, *ldap.Conn) {
	t.Helper()
	base := suite.servers["DS_BASE"]
	if base == "" {
		base = "dc=example,dc=net"
	}
	ou := fmt.Sprintf("ou=pfcf-%d,%s", time.Now().UnixNano(), base)
	c := dmConn(t)
	top := ldap.NewAddRequest(ou, nil)
	top.Attribute("objectClass", []string{"top", "organizationalUnit"})
	top.Attribute("ou", []string{strings.TrimPrefix(strings.SplitN(ou, ",", 2)[0], "ou=")})
	if err := c.Add(top); err != nil {
		t.Fatalf("adding %s: %v", ou, err)
	}
	reqs := pfEntries(ou)
	t.Cleanup(func() {
		c := dmConn(t)
		defer c.Close()
		for i := len(reqs) - 1; i >= 0; i-- {
			c.Del(ldap.NewDelRequest(reqs[i].DN, nil))
		}
		if err := c.Del(ldap.NewDelRequest(ou, nil)); err != nil {
			t.Errorf("removing %s: %v", ou, err)
		}
	})
	for _, r := range reqs {
		if err := c.Add(r); err != nil {
			t.Fatalf("adding %s: %v", r.DN, err)
		}
	}
	return ou, c
}

// pfCommon is the groups map over ou, with first (if not "") as a server
// tried before the suite's 389-DS.
func pfCommon(ou, first string) string {
	return fmt.Sprintf(`# groups for mailfwd's e2e test
server_host = %s
    %s
search_base = %s
query_filter = (mail=%%s)
result_attribute = mailForwardingAddress
special_result_attribute = uniqueMember
leaf_result_attribute = mail
terminal_result_attribute = mailRoutingAddress
bind_dn = %s
bind_pw = %s
timeout = 5
version = 3
`, first, suite.servers["DS_URL"], ou, suite.servers["DS_ROOT_DN"], suite.servers["DS_ROOT_PW"])
}

// TestPostfixCFGroups: special, leaf and terminal result attributes,
// recursion, expansion and size limits and server failover, each answer
// checked against postmap and against what ldap_table(5) says.
func TestPostfixCFGroups(t *testing.T) {
	ou, c := pfTree(t)
	defer c.Close()
	// A first server where nothing listens: mailfwd must fall over to the
	// second, quickly.
	common := pfCommon(ou, "ldap://127.0.0.1:1")

	const errLimit = "limit"
	tests := []struct {
		name, extra, key string
		want             []string // nil: not found
		wantErr          string   // errLimit: ErrExpansionLimit
	}{
		{"leaf", "", "alice@pfcf.test", []string{"alice@pfcf.test"}, ""},
		{"leaf, key folded", "", "Alice@PFCF.test", []string{"alice@pfcf.test"}, ""},
		{"group: members' leaf values, not its own", "", "team@pfcf.test", []string{"alice@pfcf.test", "bob@pfcf.test"}, ""},
		{"nested groups, a missing member DN skipped", "", "outer@pfcf.test", []string{"alice@pfcf.test", "bob@pfcf.test", "carol@pfcf.test"}, ""},
		{"terminal: only the terminal value, no recursion", "", "routed@pfcf.test", []string{"routed@lists.pfcf.test"}, ""},
		{"terminal member of a group", "", "withrouted@pfcf.test", []string{"routed@lists.pfcf.test", "carol@pfcf.test"}, ""},
		{"result attribute of a group is always returned", "", "fwdgroup@pfcf.test", []string{"archive@pfcf.test", "carol@pfcf.test"}, ""},
		{"leaf with a result attribute", "", "fwd@pfcf.test", []string{"fwd@pfcf.test", "fwd@elsewhere.test"}, ""},
		{"two entries", "", "dup@pfcf.test", []string{"dup@pfcf.test", "dup@pfcf.test"}, ""},
		{"unknown", "", "nobody@pfcf.test", nil, ""},
		{"group loop hits recursion_limit", "recursion_limit = 5\n", "loop@pfcf.test", nil, errLimit},
		{"expansion_limit", "expansion_limit = 2\nsize_limit = 0\n", "big@pfcf.test", nil, errLimit},
		{"expansion_limit not reached", "expansion_limit = 3\nsize_limit = 0\n", "big@pfcf.test", []string{"alice@pfcf.test", "bob@pfcf.test", "carol@pfcf.test"}, ""},
		{"size_limit", "size_limit = 1\n", "dup@pfcf.test", nil, errLimit},
		{"size_limit per search", "size_limit = 1\n", "outer@pfcf.test", []string{"alice@pfcf.test", "bob@pfcf.test", "carol@pfcf.test"}, ""},
		{"result_format on group values", "result_format = <%u> at %d for %U\n", "team@pfcf.test", []string{"<alice> at pfcf.test for team", "<bob> at pfcf.test for team"}, ""},
	}
	// postmap gets the same files without the dead server (which costs
	// OpenLDAP seconds per run), all keys of a file at once.
	keys := map[string][]string{} // by extra settings
	for _, tt := range tests {
		keys[tt.extra] = append(keys[tt.extra], tt.key)
	}
	oracle := map[string]map[string]pfAnswer{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for extra, ks := range keys {
		pcf := writeCF(t, pfCommon(ou, "")+extra)
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := postmapBatch(t, pcf, ks)
			mu.Lock()
			oracle[extra] = a
			mu.Unlock()
		}()
	}
	wg.Wait()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cf := writeCF(t, common+tt.extra)
			start := time.Now()
			got := mailfwdQuery(pfSource(t, cf), tt.key)
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("lookup took %v: failover from the dead first server is too slow", d)
			}
			switch {
			case tt.wantErr == errLimit:
				ms, err := pfSource(t, cf).Lookup(context.Background(), tt.key)
				if !errors.Is(err, routing.ErrExpansionLimit) {
					t.Errorf("Lookup(%s) = %v, %v; want ErrExpansionLimit", tt.key, routing.Values(ms), err)
				}
			case !slices.Equal(got.values, tt.want) || got.err != "":
				t.Errorf("Lookup(%s) = %s, want %q", tt.key, got, tt.want)
			}
			if pm := oracle[tt.extra][tt.key]; !pm.same(got) {
				t.Errorf("%s: postmap says %s, mailfwd %s", tt.key, pm, got)
			}
		})
	}

	t.Run("LDAP URL members, as postmap", func(t *testing.T) {
		// RFC 4516 URLs in a special attribute (memberURL of groupOfURLs):
		// a search of their own, with their scope, filter and attributes.
		for dn, urls := range map[string][]string{
			"cn=team," + ou:       {"ldap:///" + ou + "??sub?(mail=carol@pfcf.test)"},         // a subtree search
			"cn=big," + ou:        {"ldap://elsewhere.invalid/" + ou + "?mail?one?(cn=dup*)"}, // attributes named, host ignored
			"cn=outer," + ou:      {"ldap:///cn=fwd," + ou},                                   // no scope: base
			"cn=withrouted," + ou: {"ldap:///" + ou + "??sub?(mail=nobody-here@pfcf.test)"},   // no match
			"cn=fwdgroup," + ou:   {"ldap:///" + ou + "??sideways?(mail=*)"},                  // malformed: a temporary failure
		} {
			m := ldap.NewModifyRequest(dn, nil)
			m.Add("objectClass", []string{"groupOfURLs"})
			m.Add("memberURL", urls)
			if err := c.Modify(m); err != nil {
				t.Fatalf("%s: %v", dn, err)
			}
		}
		withURLs := strings.Replace(common, "special_result_attribute = uniqueMember", "special_result_attribute = uniqueMember, memberURL", 1)
		keys := []string{"team@pfcf.test", "big@pfcf.test", "outer@pfcf.test", "withrouted@pfcf.test", "fwdgroup@pfcf.test"}
		pm := postmapBatch(t, writeCF(t, strings.Replace(withURLs, "ldap://127.0.0.1:1\n", "\n", 1)), keys)
		want := map[string][]string{
			"team@pfcf.test": {"alice@pfcf.test", "bob@pfcf.test", "carol@pfcf.test"},
			"big@pfcf.test":  {"alice@pfcf.test", "bob@pfcf.test", "carol@pfcf.test", "dup@pfcf.test", "dup@pfcf.test"},
			// team (now with its URL member carol) and carol herself
			"outer@pfcf.test":      {"alice@pfcf.test", "bob@pfcf.test", "carol@pfcf.test", "carol@pfcf.test", "fwd@pfcf.test", "fwd@elsewhere.test"},
			"withrouted@pfcf.test": {"routed@lists.pfcf.test", "carol@pfcf.test"},
		}
		src := pfSource(t, writeCF(t, withURLs))
		for _, k := range keys {
			got := mailfwdQuery(src, k)
			t.Logf("%s: postmap %s, mailfwd %s", k, pm[k], got)
			if !pm[k].same(got) {
				t.Errorf("%s: postmap says %s, mailfwd %s", k, pm[k], got)
			}
			if w, ok := want[k]; ok && !slices.Equal(sorted(got.values), sorted(w)) {
				t.Errorf("%s: %s, want %q (any order)", k, got, w)
			}
		}
		if _, err := src.Lookup(context.Background(), "fwdgroup@pfcf.test"); !errors.Is(err, routing.ErrUnavailable) {
			t.Errorf("malformed URL: %v, want a temporary failure", err)
		}
	})
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }

// TestPostmapSeed compares postmap -q with mailfwd's reading of the same
// files for the seed data, as the read-only account Postfix uses.
func TestPostmapSeed(t *testing.T) {
	head := fmt.Sprintf(`server_host = %s
search_base = dc=example,dc=net
bind_dn = uid=postfix-ldap,ou=system,dc=example,dc=net
bind_pw = postfix-ldap-secret
timeout = 5
`, suite.servers["DS_URL"])
	maps := map[string]string{
		"seed": `query_filter = (|(mail=%s)
        (mailAlternateAddress=%s))
result_attribute = mailForwardingAddress
`,
		"parts": `# %u, %d and a domain list: keys outside it are not searched for
query_filter = (&(uid=%u)(mail=*@%d))
result_attribute = mail, mailForwardingAddress
result_format = relay:%d:%s:%U
domain = company.com, !domain.com, domain.ro
`,
		"dynamic base": `search_base = cn=%u,ou=people,dc=%2,dc=%1
scope = base
query_filter = objectClass=*
result_attribute = mailAlternateAddress
result_format = %u@alias.%D
`,
		"defaults": "version = 2\nresult_attribute = mail\nquery_filter = mail=%s\n",
	}
	keys := []string{
		"old.address@domain.com", "sales@company.com", "internal.user@company.com",
		"central@company.com", "info@company.com", "new.address@domain.ro",
		"SALES@Company.COM", "unknown@company.com", "nobody@example.org",
		"@company.com", "central", "company.com", "*@company.com",
		"sales@company.com)(mail=*", "user.example@domain.ro", "central@net",
		"central@example.net", "internal.user@x.company.com", "",
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range maps {
			if !yield(k) {
				return
			}
		}
	}) {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // postmap takes seconds per run, mostly waiting
			body := head + maps[name]
			if strings.HasPrefix(maps[name], "search_base") {
				body = strings.Replace(body, "search_base = dc=example,dc=net\n", "", 1)
			}
			cf := writeCF(t, body)
			src := pfSource(t, cf)
			found := 0
			oracle := postmapBatch(t, cf, keys)
			for _, k := range keys {
				got, want := mailfwdQuery(src, k), oracle[k]
				if !want.same(got) {
					t.Errorf("%q: postmap %s, mailfwd %s", k, want, got)
				}
				if want.values != nil {
					found++
				}
				t.Logf("%-32q %s", k, got)
			}
			if found == 0 {
				t.Errorf("no key found by postmap: the map tests nothing")
			}
		})
	}
}

// TestPostfixCFReplica: a .cf map with groups answered from the directory
// replica (389-DS's content sync) gives postmap's answers with no LDAP
// query, follows an ldapmodify of a group's members within a second, and
// hands a lookup that needs an entry outside its search base to a live
// query.
func TestPostfixCFReplica(t *testing.T) {
	ou, c := pfTree(t)
	defer c.Close()
	cf := writeCF(t, pfCommon(ou, ""))
	src, ok := pfSource(t, cf).(*directory.LDAPSource)
	if !ok {
		t.Fatal("a .cf map is not an LDAP source")
	}
	r, err := directory.NewLDAPReplica(src, src, directory.ReplicaConfig{MaxStale: time.Hour})
	if err != nil {
		t.Fatalf("no replica for the groups map: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(30 * time.Second); !r.Synced(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("replica of the .cf map not in sync after 30s: %+v", r.Stats())
		}
	}
	compare := func(keys ...string) {
		t.Helper()
		pm := postmapBatch(t, cf, keys)
		for _, k := range keys {
			if got := mailfwdQuery(r, k); !pm[k].same(got) {
				t.Errorf("%s: postmap says %s, the replica %s", k, pm[k], got)
			}
		}
	}
	keys := []string{"alice@pfcf.test", "Alice@PFCF.test", "team@pfcf.test", "outer@pfcf.test", "routed@pfcf.test",
		"withrouted@pfcf.test", "fwdgroup@pfcf.test", "fwd@pfcf.test", "dup@pfcf.test", "big@pfcf.test", "nobody@pfcf.test"}
	compare(keys...)
	if st := r.Stats(); st.Live != 0 || st.Local != uint64(len(keys)) {
		t.Errorf("answers: %d from the replica, %d live; want all %d from the replica", st.Local, st.Live, len(keys))
	}

	// The admin changes a group: carol joins team, bob leaves.
	m := ldap.NewModifyRequest("cn=team,"+ou, nil)
	m.Add("uniqueMember", []string{"cn=carol," + ou})
	m.Delete("uniqueMember", []string{"cn=bob," + ou})
	if err := c.Modify(m); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if got := mailfwdQuery(r, "team@pfcf.test"); !slices.Equal(sorted(got.values), []string{"alice@pfcf.test", "carol@pfcf.test"}) {
		t.Errorf("team one second after the change: %s, want alice and carol", got)
	}
	compare("team@pfcf.test", "outer@pfcf.test")

	// A member outside the search base: that lookup is a live query.
	live := r.Stats().Live
	m = ldap.NewModifyRequest("cn=big,"+ou, nil)
	m.Add("uniqueMember", []string{suite.servers["DS_ROOT_DN"]})
	if err := c.Modify(m); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	compare("big@pfcf.test")
	if st := r.Stats(); st.Live != live+1 {
		t.Errorf("a member outside the base: %d live answers, want %d", st.Live, live+1)
	}
	t.Logf("replica of the .cf map: %+v", r.Stats())
}
