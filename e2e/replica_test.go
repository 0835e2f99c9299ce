//go:build e2e

package e2e

// The directory replica against real 389-DS (Content Synchronization
// plugin) and real OpenLDAP (syncprov): an admin's ldapmodify is followed
// by the next RCPT one second later, whatever was asked (and would have
// been cached) before; a directory outage costs nothing for the addresses
// the replica holds; a server without sync keeps today's live queries.

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// directoryAdmin changes a directory as its admin would: ldapmodify.
type directoryAdmin struct {
	name, url, dn, pw string
}

func (d directoryAdmin) modify(t *testing.T, ldif string) {
	t.Helper()
	cmd := exec.Command("ldapmodify", "-x", "-H", d.url, "-D", d.dn, "-w", d.pw)
	cmd.Stdin = strings.NewReader(ldif)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("ldapmodify on %s: %v\n%s\n%s", d.name, err, out, ldif)
	}
}

func (d directoryAdmin) addRecipient(t *testing.T, cn, mail string, extra ...string) {
	t.Helper()
	d.modify(t, fmt.Sprintf("dn: cn=%s,ou=people,dc=example,dc=net\nchangetype: add\nobjectClass: top\nobjectClass: person\nobjectClass: inetOrgPerson\nobjectClass: mailRecipient\ncn: %s\nsn: %s\nmail: %s\n%s\n",
		cn, cn, cn, mail, strings.Join(extra, "\n")))
}

func (d directoryAdmin) deleteEntries(t *testing.T, cns []string) {
	var b strings.Builder
	for _, cn := range cns {
		fmt.Fprintf(&b, "dn: cn=%s,ou=people,dc=example,dc=net\nchangetype: delete\n\n", cn)
	}
	cmd := exec.Command("ldapmodify", "-c", "-x", "-H", d.url, "-D", d.dn, "-w", d.pw)
	cmd.Stdin = strings.NewReader(b.String())
	cmd.Run()
}

// startReplicaRelay starts a relay with the suite's config but url as its
// directory, and waits until its replica reports wantState.
func startReplicaRelay(t *testing.T, url string, wantState string) *mailfwdProc {
	return startReplicaRelayList(t, []string{url}, url, wantState)
}

// startReplicaRelayList is startReplicaRelay with a list of servers, the
// replica expected to report wantState with server.
func startReplicaRelayList(t *testing.T, urls []string, server, wantState string) *mailfwdProc {
	t.Helper()
	dir := t.TempDir()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, err := suite.relayConfig(dir, "relay/mailfwd.yaml", vars{"Listen": addr, "Admin": admin, "Directory": urls, "Extra": "log:\n  level: debug\n"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := suite.startRelayConfig(dir, cfgPath, addr, admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.kill)
	waitReplica(t, p, wantState, server, 30*time.Second)
	return p
}

// waitReplica waits for the relay's replica to report state for server.
func waitReplica(t *testing.T, p *mailfwdProc, state, server string, limit time.Duration) {
	t.Helper()
	key := fmt.Sprintf(`mailfwd_directory_replica_state{server=%q,state=%q}`, server, state)
	deadline := time.Now().Add(limit)
	for {
		m := scrapeMetrics(t, p)
		if m[key] == 1 {
			return
		}
		if time.Now().After(deadline) {
			var got []string
			for k := range m {
				if strings.HasPrefix(k, "mailfwd_directory_replica_state") {
					got = append(got, k)
				}
			}
			t.Fatalf("replica not %s with %s after %v: %v\n%s", state, server, limit, got, p.logTail(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rcptReply is the relay's answer to one RCPT (a session of its own).
func rcptReply(addr, to string) (int, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.Hello("client.e2e.test"); err != nil {
		return 0, err
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		return 0, err
	}
	err = c.Rcpt(to, nil)
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, nil
	}
	if err != nil {
		return 0, err
	}
	c.Quit()
	return 250, nil
}

// The seed's workflow, 20 rounds on each server: add, replace and remove
// a forwarding address, add an alternate address, create an address right
// after it was refused; the message sent one second after each change
// goes where the directory now says (asserted at the sink), although the
// old answer had just been asked for.
func TestReplicaFollowsLDAPModify(t *testing.T) {
	const rounds = 20
	for _, d := range []directoryAdmin{
		{"389-DS", suite.servers["DS_URL"], suite.servers["DS_ROOT_DN"], suite.servers["DS_ROOT_PW"]},
		{"OpenLDAP", suite.servers["SLAPD_URL"], suite.servers["SLAPD_ROOT_DN"], suite.servers["SLAPD_ROOT_PW"]},
	} {
		t.Run(d.name, func(t *testing.T) {
			p := startReplicaRelay(t, d.url, "synced")
			pre := fmt.Sprintf("rep%d%s", os.Getpid(), strings.ToLower(d.name[:4]))
			var cns []string
			defer func() { d.deleteEntries(t, cns) }()
			for i := range rounds {
				cn := fmt.Sprintf("%s-%d", pre, i)
				d.addRecipient(t, cn, cn+"@company.com")
				cns = append(cns, cn, cn+"-new")
			}
			type sent struct{ tok, to string }
			var (
				mu     sync.Mutex
				expect []sent
				wg     sync.WaitGroup
			)
			send := func(t *testing.T, what, rcpt, to string) {
				tok := suite.token(t) + "-" + what
				if err := sendGo(p.addr, tok, []string{rcpt}); err != nil {
					t.Errorf("%s: sending to %s: %v", what, rcpt, err)
					return
				}
				mu.Lock()
				expect = append(expect, sent{tok, to})
				mu.Unlock()
			}
			after := func() { time.Sleep(time.Second) }
			for w := range 4 { // four admins at once, five rounds each
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < rounds; i += 4 {
						cn := fmt.Sprintf("%s-%d", pre, i)
						mail, dn := cn+"@company.com", "dn: cn="+cn+",ou=people,dc=example,dc=net\nchangetype: modify\n"
						send(t, "before", mail, mail) // now asked: a cache would keep this answer
						d.modify(t, dn+"add: mailForwardingAddress\nmailForwardingAddress: "+cn+".a@gmail.com\n")
						after()
						send(t, "add-forwarding", mail, cn+".a@gmail.com")
						d.modify(t, dn+"replace: mailForwardingAddress\nmailForwardingAddress: "+cn+".b@gmail.com\n")
						after()
						send(t, "replace-forwarding", mail, cn+".b@gmail.com")
						d.modify(t, dn+"delete: mailForwardingAddress\n")
						after()
						send(t, "remove-forwarding", mail, mail)
						d.modify(t, dn+"add: mailAlternateAddress\nmailAlternateAddress: "+cn+".alt@company.com\n")
						after()
						send(t, "add-alternate", cn+".alt@company.com", mail)
						fresh := cn + "-new@company.com"
						if code, err := rcptReply(p.addr, fresh); err != nil || code != 550 {
							t.Errorf("RCPT %s before it exists: %d %v, want 550", fresh, code, err)
						}
						d.addRecipient(t, cn+"-new", fresh)
						after()
						send(t, "new-after-miss", fresh, fresh)
					}
				}()
			}
			wg.Wait()
			for _, e := range expect {
				suite.arrived(t, e.tok, map[string]int{e.to: 1}, 30*time.Second)
			}
			m := scrapeMetrics(t, p)
			t.Logf("%s: %d messages, each to where the directory said one second before; answers: replica %.0f, live %.0f; LDAP queries %.0f",
				d.name, len(expect), m[`mailfwd_directory_answers_total{origin="replica"}`], m[`mailfwd_directory_answers_total{origin="live"}`],
				m[`mailfwd_ldap_lookup_seconds_count`])
			if m[`mailfwd_directory_answers_total{origin="live"}`] != 0 {
				t.Errorf("%v lookups went live while the replica was in sync", m[`mailfwd_directory_answers_total{origin="live"}`])
			}
		})
	}
}

// ldapProxy stands between the relay and the directory: cut() makes the
// directory unreachable (connections reset, then refused) while its admin
// can still change it; restore() brings the same address back.
type ldapProxy struct {
	addr, backend string
	mu            sync.Mutex
	l             net.Listener
	conns         map[net.Conn]bool
}

func newLDAPProxy(t *testing.T, backend string) *ldapProxy {
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &ldapProxy{addr: addr, backend: backend, conns: map[net.Conn]bool{}}
	if err := p.restore(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cut)
	return p
}

func (p *ldapProxy) restore() error {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[b] = true, true
			p.mu.Unlock()
			go func() { io.Copy(b, c); b.Close(); c.Close() }()
			go func() { io.Copy(c, b); b.Close(); c.Close() }()
		}
	}()
	return nil
}

func (p *ldapProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// A directory outage under steady traffic to 200 known addresses: none is
// deferred, unknown addresses get 451, nothing 5xx; what the admin changed
// during the outage is followed after it (a resync from the cookie, not a
// full reload). E2E_OUTAGE sets the outage's length (the 10m; the
// default, 90s, outlasts the 60s positive cache TTL of the live path).
func TestReplicaDirectoryOutage(t *testing.T) {
	outage := 90 * time.Second
	if v := os.Getenv("E2E_OUTAGE"); v != "" {
		var err error
		if outage, err = time.ParseDuration(v); err != nil {
			t.Fatalf("E2E_OUTAGE: %v", err)
		}
	}
	d := directoryAdmin{"389-DS", suite.servers["DS_URL"], suite.servers["DS_ROOT_DN"], suite.servers["DS_ROOT_PW"]}
	pre := fmt.Sprintf("out%d", os.Getpid())
	var cns []string
	var b strings.Builder
	for i := range 200 {
		cn := fmt.Sprintf("%s-%d", pre, i)
		cns = append(cns, cn)
		fmt.Fprintf(&b, "dn: cn=%s,ou=people,dc=example,dc=net\nchangetype: add\nobjectClass: top\nobjectClass: person\nobjectClass: inetOrgPerson\nobjectClass: mailRecipient\ncn: %s\nsn: %s\nmail: %s@company.com\nmailForwardingAddress: %s@gmail.com\n\n", cn, cn, cn, cn, cn)
	}
	cns = append(cns, pre+"-during")
	defer d.deleteEntries(t, cns)
	d.modify(t, b.String())

	proxy := newLDAPProxy(t, strings.TrimPrefix(d.url, "ldap://"))
	url := "ldap://" + proxy.addr
	p := startReplicaRelay(t, url, "synced")

	var (
		known, unknownDown, unknownUp atomic.Int64
		bad                           sync.Map // reply -> count
		down                          atomic.Bool
		stop                          = make(chan struct{})
		wg                            sync.WaitGroup
	)
	note := func(what string) {
		v, _ := bad.LoadOrStore(what, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := smtp.Dial(p.addr)
				if err != nil {
					note("dial: " + err.Error())
					time.Sleep(100 * time.Millisecond)
					continue
				}
				c.Hello("client.e2e.test")
				for range 20 {
					if err := c.Mail("alice@example.org", nil); err != nil {
						note("MAIL: " + err.Error())
						break
					}
					to := fmt.Sprintf("%s-%d@company.com", pre, rng.IntN(200))
					unknown := rng.IntN(10) == 0
					if unknown {
						to = fmt.Sprintf("nobody-%d-%d@company.com", w, rng.Int())
					}
					wasDown := down.Load()
					err := c.Rcpt(to, nil)
					code := 250
					var se *smtp.SMTPError
					if errors.As(err, &se) {
						code = se.Code
					} else if err != nil {
						note("RCPT: " + err.Error())
						break
					}
					isDown := down.Load()
					switch {
					case !unknown && code == 250:
						known.Add(1)
					case !unknown:
						note(fmt.Sprintf("known %d", code))
					case wasDown && isDown && code == 451:
						unknownDown.Add(1)
					case !wasDown && !isDown && code == 550:
						unknownUp.Add(1)
					case wasDown != isDown && (code == 451 || code == 550):
						// the outage began or ended during this RCPT
					default:
						note(fmt.Sprintf("unknown %d (directory down: %v)", code, isDown))
					}
					c.Reset()
				}
				c.Close()
			}
		}()
	}
	time.Sleep(3 * time.Second)
	proxy.cut()
	down.Store(true)
	t.Logf("directory unreachable for %v", outage)
	time.Sleep(outage / 2)
	// The admin changes the directory while the relay cannot see it.
	d.modify(t, fmt.Sprintf("dn: cn=%s-0,ou=people,dc=example,dc=net\nchangetype: modify\nreplace: mailForwardingAddress\nmailForwardingAddress: %s-0.moved@gmail.com\n", pre, pre))
	d.addRecipient(t, pre+"-during", pre+"-during@company.com")
	time.Sleep(outage - outage/2)
	down.Store(false)
	if err := proxy.restore(); err != nil {
		t.Fatal(err)
	}
	waitReplica(t, p, "synced", url, 60*time.Second)
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()

	tok := suite.token(t)
	if err := sendGo(p.addr, tok, []string{pre + "-0@company.com", pre + "-during@company.com"}); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	suite.arrived(t, tok, map[string]int{pre + "-0.moved@gmail.com": 1, pre + "-during@company.com": 1}, 30*time.Second)

	var bads []string
	bad.Range(func(k, v any) bool {
		bads = append(bads, fmt.Sprintf("%s: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	m := scrapeMetrics(t, p)
	t.Logf("known addresses accepted %d; unknown: 451 during the outage %d, 550 outside it %d; answers: replica %.0f, replica during the outage %.0f, live %.0f; sync events: refresh %.0f, resync %.0f, error %.0f",
		known.Load(), unknownDown.Load(), unknownUp.Load(),
		m[`mailfwd_directory_answers_total{origin="replica"}`], m[`mailfwd_directory_answers_total{origin="replica_stale"}`], m[`mailfwd_directory_answers_total{origin="live"}`],
		m[`mailfwd_directory_replica_events_total{event="refresh"}`], m[`mailfwd_directory_replica_events_total{event="resync"}`], m[`mailfwd_directory_replica_events_total{event="error"}`])
	if len(bads) > 0 {
		t.Errorf("unexpected replies: %v", bads)
	}
	if known.Load() < 1000 || unknownDown.Load() < 10 || unknownUp.Load() < 1 {
		t.Errorf("too little traffic to judge: %d known, %d unknown during the outage, %d outside", known.Load(), unknownDown.Load(), unknownUp.Load())
	}
	if m[`mailfwd_directory_answers_total{origin="replica_stale"}`] == 0 {
		t.Error("no answer came from the replica during the outage")
	}
	if log := p.logTailAll(); !strings.Contains(log, `msg="directory replica in sync"`) || !strings.Contains(log, "full=false") {
		t.Errorf("no resync from the cookie after the outage (want a \"directory replica in sync\" line with full=false):\n%s", tail(log, 3000))
	}
}

// Several servers: the stream goes to the first one that takes it (the
// first here is down), and lookups are answered from the replica.
func TestReplicaServerList(t *testing.T) {
	dead, _ := freePort() // nothing listens there
	p := startReplicaRelayList(t, []string{"ldap://" + dead, suite.servers["DS_URL"]}, suite.servers["DS_URL"], "synced")
	if code, err := rcptReply(p.addr, "sales@company.com"); err != nil || code != 250 {
		t.Fatalf("RCPT: %d %v", code, err)
	}
	m := scrapeMetrics(t, p)
	if m[`mailfwd_directory_answers_total{origin="replica"}`] < 1 {
		t.Errorf("no answer from the replica: %v", m[`mailfwd_directory_answers_total{origin="replica"}`])
	}
	if _, ok := m["mailfwd_directory_replica_lag_seconds"]; !ok {
		t.Error("no mailfwd_directory_replica_lag_seconds")
	}
	resp, err := http.Get(p.admin + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "ok\ndirectory replica: synced with " + suite.servers["DS_URL"]; resp.StatusCode != 200 || !strings.HasPrefix(string(body), want) {
		t.Errorf("/healthz: %d %q, want 200 and %q...", resp.StatusCode, body, want)
	}
}

// 389-DS without its Content Synchronization plugin: the replica follows a
// persistent search instead; an ldapmodify is still followed 1 s later.
func TestReplicaPersistentSearch(t *testing.T) {
	dir := t.TempDir()
	port, _ := freePort()
	_, p, _ := net.SplitHostPort(port)
	env := []string{"DS_DIR=" + filepath.Join(dir, "389ds"), "DS_PORT=" + p, "DS_TLS_PORT=0", "DS_SYNC=0"}
	if _, err := suite.runScriptVars("start-389ds.sh", env...); err != nil {
		t.Fatal(err)
	}
	defer suite.runScriptVars("stop-389ds.sh", env...)
	url := "ldap://" + port
	d := directoryAdmin{"389-DS without sync", url, suite.servers["DS_ROOT_DN"], suite.servers["DS_ROOT_PW"]}
	relay := startReplicaRelay(t, url, "synced")
	logHas(t, relay, 5*time.Second, "following a persistent search instead")
	for i := range 5 {
		cn := fmt.Sprintf("ps%d-%d", os.Getpid(), i)
		d.addRecipient(t, cn, cn+"@company.com")
		time.Sleep(time.Second)
		tok := suite.token(t)
		if err := sendGo(relay.addr, tok, []string{cn + "@company.com"}); err != nil {
			t.Fatalf("round %d, new address: %v", i, err)
		}
		suite.arrived(t, tok, map[string]int{cn + "@company.com": 1}, 30*time.Second)
		d.modify(t, "dn: cn="+cn+",ou=people,dc=example,dc=net\nchangetype: modify\nreplace: mailForwardingAddress\nmailForwardingAddress: "+cn+".ps@gmail.com\n")
		time.Sleep(time.Second)
		tok = suite.token(t)
		if err := sendGo(relay.addr, tok, []string{cn + "@company.com"}); err != nil {
			t.Fatalf("round %d, changed forwarding: %v", i, err)
		}
		suite.arrived(t, tok, map[string]int{cn + ".ps@gmail.com": 1}, 30*time.Second)
		d.deleteEntries(t, []string{cn})
		time.Sleep(time.Second)
		if code, err := rcptReply(relay.addr, cn+"@company.com"); err != nil || code != 550 {
			t.Errorf("round %d, deleted entry: RCPT %d %v, want 550", i, code, err)
		}
	}
	m := scrapeMetrics(t, relay)
	if m[`mailfwd_directory_answers_total{origin="live"}`] != 0 {
		t.Errorf("%v live lookups while following the persistent search", m[`mailfwd_directory_answers_total{origin="live"}`])
	}
}

// A server without content synchronisation: the replica says so (metrics,
// log) and lookups are live queries behind the cache, as before.
func TestReplicaUnsupportedServer(t *testing.T) {
	dir := t.TempDir()
	port, _ := freePort()
	_, p, _ := net.SplitHostPort(port)
	env := []string{"SLAPD_DIR=" + filepath.Join(dir, "slapd"), "SLAPD_PORT=" + p, "SLAPD_TLS_PORT=0", "SLAPD_SYNC=0"}
	if _, err := suite.runScriptVars("start-slapd.sh", env...); err != nil {
		t.Fatal(err)
	}
	defer suite.runScriptVars("stop-slapd.sh", env...)
	url := "ldap://" + port
	relay := startReplicaRelay(t, url, "unsupported")
	if code, err := rcptReply(relay.addr, "sales@company.com"); err != nil || code != 250 {
		t.Fatalf("RCPT through live queries: %d %v", code, err)
	}
	m := scrapeMetrics(t, relay)
	if m[`mailfwd_directory_answers_total{origin="live"}`] < 1 || m[`mailfwd_directory_answers_total{origin="replica"}`] != 0 {
		t.Errorf("answers: live %v, replica %v; want live only", m[`mailfwd_directory_answers_total{origin="live"}`], m[`mailfwd_directory_answers_total{origin="replica"}`])
	}
	logHas(t, relay, 5*time.Second, "directory replica: server has no content synchronisation")
}
