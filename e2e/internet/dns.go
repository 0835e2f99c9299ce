//go:build e2e

package internet

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ZoneKind says how a zone is published.
type ZoneKind int

const (
	// Unsigned: delegated without DS, so answers are insecure (no AD).
	Unsigned ZoneKind = iota
	// Signed: signed by knot, DS in the parent: answers are secure (AD).
	Signed
	// Bogus: signed by knot, but the DS published in the parent matches
	// none of its keys (the digest is altered): the resolver answers
	// SERVFAIL for every name in it (and its answer with CD set).
	Bogus
)

func (k ZoneKind) String() string {
	switch k {
	case Unsigned:
		return "unsigned"
	case Signed:
		return "signed"
	case Bogus:
		return "bogus"
	}
	return "unknown"
}

// nsName is the one name server of every zone (knot, in mfwnet-dns).
const nsName = "ns1.nic.test."

// Zone is one zone served by knot.
type Zone struct {
	Name string // fully qualified, lower case: "dane.test."
	Kind ZoneKind
	// DS is, after Start, the DS record (SHA-256) published in the
	// parent for a Signed or Bogus zone (for Bogus: the altered one),
	// and TrueDS the one that matches the zone's key.
	DS, TrueDS string

	records []string
}

// Records are the zone's records added so far (absolute names).
func (z *Zone) Records() []string { return append([]string(nil), z.records...) }

func fqdn(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// AddZone adds a zone under "test." (or "." itself), delegated from its
// closest enclosing zone to ns1.nic.test. "." and "test." exist from New
// (both Signed). Call it before Start.
func (n *Net) AddZone(name string, kind ZoneKind) *Zone {
	n.t.Helper()
	name = fqdn(name)
	if name != "." && name != "test." && !strings.HasSuffix(name, ".test.") {
		n.t.Fatalf("internet: zone %q is not under test.", name)
	}
	if dns.IsSubDomain("nic.test.", name) {
		n.t.Fatalf("internet: nic.test. is reserved")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		n.t.Fatalf("internet: AddZone(%s) after Start", name)
	}
	if _, ok := n.zones[name]; ok {
		n.t.Fatalf("internet: zone %s exists", name)
	}
	z := &Zone{Name: name, Kind: kind}
	n.zones[name] = z
	return z
}

// Zone returns the zone named name, or nil.
func (n *Net) Zone(name string) *Zone {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.zones[fqdn(name)]
}

// zoneFor is the closest zone that holds name (n.mu held).
func (n *Net) zoneFor(name string) *Zone {
	name = fqdn(name)
	for {
		if z, ok := n.zones[name]; ok {
			return z
		}
		if name == "." {
			return nil
		}
		_, rest, _ := strings.Cut(name, ".")
		if rest == "" {
			rest = "."
		}
		name = rest
	}
}

// parentOf is the closest zone strictly above z (n.mu held).
func (n *Net) parentOf(z *Zone) *Zone {
	if z.Name == "." {
		return nil
	}
	_, rest, _ := strings.Cut(z.Name, ".")
	if rest == "" {
		rest = "."
	}
	return n.zoneFor(rest)
}

// AddRecord adds one record in zone-file syntax to zone, e.g.
// AddRecord("dane.test", "dane.test. MX 10 mx.dane.test.") (relative
// names are relative to the zone; TTL 300 unless given). Call it before
// Start.
func (n *Net) AddRecord(zone, rr string) {
	n.t.Helper()
	zone = fqdn(zone)
	zp := dns.NewZoneParser(strings.NewReader(rr+"\n"), zone, "")
	zp.SetDefaultTTL(300)
	var parsed []dns.RR
	for r, ok := zp.Next(); ok; r, ok = zp.Next() {
		parsed = append(parsed, r)
	}
	if err := zp.Err(); err != nil {
		n.t.Fatalf("internet: record %q: %v", rr, err)
	}
	if len(parsed) != 1 {
		n.t.Fatalf("internet: record %q: want one record, got %d", rr, len(parsed))
	}
	r := parsed[0]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started {
		n.t.Fatalf("internet: AddRecord(%s) after Start", rr)
	}
	z, ok := n.zones[zone]
	if !ok {
		n.t.Fatalf("internet: AddRecord: no zone %s (AddZone first)", zone)
	}
	owner := strings.ToLower(r.Header().Name)
	if !dns.IsSubDomain(zone, owner) {
		n.t.Fatalf("internet: record %q is not in zone %s", rr, zone)
	}
	if holder := n.zoneFor(owner); holder != z {
		n.t.Fatalf("internet: record %q belongs in zone %s, not %s", rr, holder.Name, zone)
	}
	z.records = append(z.records, r.String())
}

// Add adds rr to the closest zone that holds its owner name.
func (n *Net) Add(rr string) {
	n.t.Helper()
	r, err := dns.NewRR(rr)
	if err != nil || r == nil {
		n.t.Fatalf("internet: record %q: %v", rr, err)
	}
	n.mu.Lock()
	z := n.zoneFor(r.Header().Name)
	n.mu.Unlock()
	if z == nil {
		n.t.Fatalf("internet: no zone for %q", rr)
	}
	n.AddRecord(z.Name, rr)
}

// AddA publishes "name A addr".
func (n *Net) AddA(name, addr string) { n.t.Helper(); n.Add(fqdn(name) + " A " + addr) }

// AddMXRecord publishes "domain MX pref host" (host "." for a null MX).
func (n *Net) AddMXRecord(domain string, pref int, host string) {
	n.t.Helper()
	n.Add(fmt.Sprintf("%s MX %d %s", fqdn(domain), pref, fqdn(host)))
}

// AddTXT publishes a TXT record (split into 255-byte strings).
func (n *Net) AddTXT(name, text string) {
	n.t.Helper()
	var parts []string
	for len(text) > 255 {
		parts = append(parts, text[:255])
		text = text[255:]
	}
	parts = append(parts, text)
	var q []string
	for _, p := range parts {
		q = append(q, `"`+strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p)+`"`)
	}
	n.Add(fqdn(name) + " TXT " + strings.Join(q, " "))
}

// AddTLSRPT publishes "_smtp._tls.domain TXT v=TLSRPTv1; rua=…" with the
// given rua URIs (mailto: or https:).
func (n *Net) AddTLSRPT(domain string, rua ...string) {
	n.t.Helper()
	n.AddTXT("_smtp._tls."+fqdn(domain), "v=TLSRPTv1; rua="+strings.Join(rua, ","))
}

// startDNS writes knot's configuration and zones (generating the signing
// keys first, so the DS records go into the parents before knot loads
// them), starts knot and then unbound, and waits until both answer.
func (n *Net) startDNS() {
	t := n.t
	t.Helper()
	kd := filepath.Join(n.dir, "knot")
	for _, d := range []string{kd, kd + "/run", kd + "/db", kd + "/zones"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	n.mu.Lock()
	var names []string
	for name := range n.zones {
		names = append(names, name)
	}
	n.mu.Unlock()
	// parents first ("." has the fewest labels)
	sort.Slice(names, func(i, j int) bool {
		li, lj := dns.CountLabel(names[i]), dns.CountLabel(names[j])
		if li != lj {
			return li < lj
		}
		return names[i] < names[j]
	})
	file := func(z string) string {
		if z == "." {
			return "root.zone"
		}
		return strings.TrimSuffix(z, ".") + ".zone"
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, `# knot for the simulated Internet (mailfwd/e2e/internet)
server:
    rundir: %[1]s/run
    listen: %[2]s@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: %[1]s/db
policy:
  - id: manual
    manual: on
    algorithm: ecdsap256sha256
template:
  - id: default
    storage: %[1]s/zones
    zonefile-sync: -1
    semantic-checks: on
zone:
`, kd, n.dns.Addr)
	for _, name := range names {
		z := n.zones[name]
		fmt.Fprintf(&conf, "  - domain: %q\n    file: %s\n", name, file(name))
		if z.Kind != Unsigned {
			conf.WriteString("    dnssec-signing: on\n    dnssec-policy: manual\n")
		}
	}
	confFile := filepath.Join(kd, "knot.conf")
	if err := os.WriteFile(confFile, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	// keys (a CSK per signed zone) and their DS
	for _, name := range names {
		z := n.zones[name]
		if z.Kind == Unsigned {
			continue
		}
		if out, err := exec.Command("keymgr", "-c", confFile, name, "generate",
			"algorithm=ecdsap256sha256", "ksk=yes", "zsk=yes").CombinedOutput(); err != nil {
			t.Fatalf("internet: keymgr generate %s: %v\n%s", name, err, out)
		}
		out, err := exec.Command("keymgr", "-c", confFile, name, "ds").Output()
		if err != nil {
			t.Fatalf("internet: keymgr ds %s: %v", name, err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 6 && f[1] == "DS" && f[4] == "2" {
				z.TrueDS = l
			}
		}
		if z.TrueDS == "" {
			t.Fatalf("internet: keymgr ds %s: no SHA-256 DS in %q", name, out)
		}
		z.DS = z.TrueDS
		if z.Kind == Bogus {
			f := strings.Fields(z.TrueDS)
			d := []byte(f[5])
			if d[0] == '0' {
				d[0] = '1'
			} else {
				d[0] = '0'
			}
			f[5] = string(d)
			z.DS = strings.Join(f, " ")
		}
	}
	// zone files
	for _, name := range names {
		z := n.zones[name]
		var b strings.Builder
		fmt.Fprintf(&b, "$ORIGIN %s\n$TTL 300\n", name)
		fmt.Fprintf(&b, "@ SOA %s hostmaster.nic.test. 1 3600 600 86400 60\n@ NS %s\n", nsName, nsName)
		for _, r := range z.records {
			b.WriteString(r + "\n")
		}
		for _, cn := range names {
			c := n.zones[cn]
			if c == z || n.parentOf(c) != z {
				continue
			}
			fmt.Fprintf(&b, "; delegation (%s)\n%s 300 IN NS %s\n", c.Kind, c.Name, nsName)
			if c.DS != "" {
				f := strings.Fields(c.DS) // NAME DS tag alg type digest
				fmt.Fprintf(&b, "%s 300 IN DS %s\n", c.Name, strings.Join(f[2:], " "))
			}
		}
		if name == "." {
			fmt.Fprintf(&b, "; glue\n%s 300 IN A %s\n", nsName, n.dns.Addr)
		}
		if err := os.WriteFile(filepath.Join(kd, "zones", file(name)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("knotc", "-c", confFile, "conf-check").CombinedOutput(); err != nil {
		t.Fatalf("internet: knotc conf-check: %v\n%s", err, out)
	}
	knotLog := filepath.Join(kd, "knot.log")
	kp := n.startProc("knotd", n.dns.Command("knotd", "-c", confFile), knotLog)
	for _, name := range names {
		z := n.zones[name]
		n.poll("knot zone "+name, 20*time.Second, kp, knotLog, func() error {
			m, err := query(n.AuthServer(), name, dns.TypeSOA, false)
			if err != nil {
				return err
			}
			if m.Rcode != dns.RcodeSuccess || !m.Authoritative || len(m.Answer) == 0 {
				return fmt.Errorf("SOA %s: %s aa=%v", name, dns.RcodeToString[m.Rcode], m.Authoritative)
			}
			if z.Kind != Unsigned {
				for _, r := range m.Answer {
					if _, ok := r.(*dns.RRSIG); ok {
						return nil
					}
				}
				return fmt.Errorf("SOA %s: not signed yet", name)
			}
			return nil
		})
	}
	n.startUnbound()
}

func (n *Net) startUnbound() {
	t := n.t
	t.Helper()
	ud := filepath.Join(n.dir, "unbound")
	if err := os.MkdirAll(ud, 0o755); err != nil {
		t.Fatal(err)
	}
	hints := fmt.Sprintf(".  3600000 NS %s\n%s 3600000 A %s\n", nsName, nsName, n.dns.Addr)
	if err := os.WriteFile(filepath.Join(ud, "root.hints"), []byte(hints), 0o644); err != nil {
		t.Fatal(err)
	}
	root := n.zones["."]
	conf := fmt.Sprintf(`# unbound for the simulated Internet (mailfwd/e2e/internet)
server:
    interface: %[2]s
    port: 53
    do-ip4: yes
    do-ip6: no
    do-udp: yes
    do-tcp: yes
    access-control: 0.0.0.0/0 refuse
    access-control: 10.98.0.0/16 allow
    access-control: 127.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "%[1]s"
    pidfile: "%[1]s/unbound.pid"
    use-syslog: no
    logfile: ""
    log-time-ascii: yes
    verbosity: 1
    val-log-level: 2
    log-servfail: yes
    ede: yes
    num-threads: 1
    so-reuseport: no
    module-config: "validator iterator"
    root-hints: "%[1]s/root.hints"
    trust-anchor: "%[3]s"
    harden-dnssec-stripped: yes
    prefetch: no
    # test. is a special-use name unbound answers itself by default
    local-zone: "test." nodefault
    cache-max-negative-ttl: 10
    val-bogus-ttl: 5
    infra-host-ttl: 5
remote-control:
    control-enable: no
`, ud, n.resolver.Addr, root.DS)
	confFile := filepath.Join(ud, "unbound.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unbound-checkconf", confFile).CombinedOutput(); err != nil {
		t.Fatalf("internet: unbound-checkconf: %v\n%s", err, out)
	}
	logf := filepath.Join(ud, "unbound.log")
	up := n.startProc("unbound", n.resolver.Command("unbound", "-d", "-c", confFile), logf)
	n.poll("unbound", 20*time.Second, up, logf, func() error {
		m, err := query(n.Resolver(), "test.", dns.TypeSOA, true)
		if err != nil {
			return err
		}
		if m.Rcode != dns.RcodeSuccess || !m.AuthenticatedData {
			return fmt.Errorf("test. SOA: %s ad=%v", dns.RcodeToString[m.Rcode], m.AuthenticatedData)
		}
		return nil
	})
}

// query asks server (host:port) one question with DO set (and RD when
// recursive), over UDP, TCP when truncated.
func query(server, name string, qtype uint16, recursive bool) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(fqdn(name), qtype)
	m.RecursionDesired = recursive
	m.SetEdns0(1232, true)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err == nil && r.Truncated {
		c.Net = "tcp"
		r, _, err = c.Exchange(m, server)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// Query asks the resolver (DO and RD set) for name/qtype: what the sender
// gets. Answers of signed zones have AuthenticatedData set.
func (n *Net) Query(name string, qtype uint16) (*dns.Msg, error) {
	if !n.isStarted() {
		return nil, errors.New("internet: not started")
	}
	return query(n.Resolver(), name, qtype, true)
}

func (n *Net) isStarted() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.started
}
