//go:build e2e

package internet

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every network namespace, host-side veth link
// and /etc/netns entry this package makes.
const Prefix = "mfwnet-"

// lockFile serializes runs on one machine: New removes every mfwnet-*
// leftover, which would tear down a concurrent run's Internet.
const lockFile = "/run/lock/mfwnet.lock"

// Host indexes (third octet of the 10.98.N.0/24 subnet) of the fixed hosts.
const (
	idxDNS      = 1 // knot: ns1.nic.test
	idxResolver = 2 // unbound
	idxWeb      = 3 // nginx: mta-sts.<domain> for every policy
	idxReport   = 4 // Go HTTPS server: tlsrpt.report.test
	idxClient   = 5 // a client with resolv.conf -> unbound (posttls-finger, curl)
	idxFirst    = 10
)

// Options tunes New. The zero value (or nil) is what the tests use.
type Options struct {
	// Keep leaves everything running and on disk when the test ends (so
	// is MFWNET_KEEP=1 in the environment): namespaces, servers, the
	// directory. The next New removes them.
	Keep bool
	// LockTimeout bounds the wait for another run on this machine to end
	// (default 10 minutes).
	LockTimeout time.Duration
}

// Host is one machine of the Internet: a network namespace reached from
// this host on a veth pair. This host is HostAddr (10.98.N.1) on its side;
// the namespace is Addr (10.98.N.2), with a route to 10.98.0.0/16 via
// HostAddr and no default route, so nothing in it can reach anything but
// the other hosts of the Internet and this host.
type Host struct {
	Name     string // short name, e.g. "dns", "mx12"
	NS       string // namespace name: Prefix + Name
	Index    int    // N of 10.98.N.0/24
	Addr     string // the namespace's address, 10.98.N.2
	HostAddr string // this host's address on the link, 10.98.N.1
	Link     string // the host-side veth: Prefix + "v" + N
}

// Command returns a command that runs name inside the host's namespace
// (ip netns exec: it also sees /etc/netns/NS/* over /etc).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.NS, name}, args...)...)
}

// Listen opens a listener inside the host's namespace (e.g. "tcp",
// h.Addr+":443"); it serves from any goroutine afterwards. The calling
// goroutine is not moved: a fresh, locked OS thread enters the namespace,
// opens the socket and returns to this host's namespace (a thread that
// cannot return is ended with its goroutine).
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, err}
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + h.NS)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, err}
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- res{nil, fmt.Errorf("setns %s: %w", h.NS, err)}
			return
		}
		ln, lerr := net.Listen(network, addr)
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// stay locked: the thread exits with this goroutine
			if ln != nil {
				ln.Close()
			}
			ch <- res{nil, fmt.Errorf("setns back: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{ln, lerr}
	}()
	r := <-ch
	return r.ln, r.err
}

// Net is one simulated Internet. Make it with New; add zones, records,
// MXes and policies; then Start it.
type Net struct {
	t    testing.TB
	dir  string
	keep bool
	lock *os.File

	mu      sync.Mutex
	hosts   []*Host
	next    int
	started bool
	closed  bool

	ca *CA

	dns, resolver, web, report, client *Host

	zones map[string]*Zone

	mxs      []*MX
	policies []*stsPolicy
	rpt      *ReportServer

	procs []*proc // foreground daemons (knot, unbound, nginx)
	logs  []string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// New builds the hosts of the Internet (namespaces mfwnet-dns,
// mfwnet-resolver, mfwnet-web, mfwnet-report and mfwnet-client), its CA
// and the zones ".", "test." (both signed) after removing whatever an
// earlier run left. Everything is torn down when t ends.
func New(t testing.TB, opts *Options) *Net {
	t.Helper()
	if opts == nil {
		opts = &Options{}
	}
	if os.Geteuid() != 0 {
		t.Fatal("internet: must run as root (network namespaces)")
	}
	for _, b := range []string{"ip", "knotd", "keymgr", "unbound", "nginx", "postfix", "postconf"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("internet: %s not installed (run e2e/internet/install-deps.sh): %v", b, err)
		}
	}
	lock, err := takeLock(opts.LockTimeout, t)
	if err != nil {
		t.Fatal(err)
	}
	n := &Net{t: t, lock: lock, next: idxFirst, keep: opts.Keep || os.Getenv("MFWNET_KEEP") == "1",
		zones: map[string]*Zone{}}
	Cleanup()
	removeStaleDirs()
	dir, err := os.MkdirTemp("", "mfwnet-")
	if err != nil {
		lock.Close()
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	os.WriteFile(filepath.Join(dir, markerFile), nil, 0o644)
	n.dir = dir
	t.Cleanup(n.close)

	n.ca = newCA(t, filepath.Join(dir, "ca"))
	n.dns = n.addHostAt("dns", idxDNS)
	n.resolver = n.addHostAt("resolver", idxResolver)
	n.web = n.addHostAt("web", idxWeb)
	n.report = n.addHostAt("report", idxReport)
	n.client = n.addHostAt("client", idxClient)
	n.setResolvConf(n.client)
	n.writeClientMailConfig()
	n.AddZone(".", Signed)
	n.AddZone("test.", Signed)
	n.AddRecord("test.", fmt.Sprintf("ns1.nic.test. A %s", n.dns.Addr))
	n.AddRecord("test.", fmt.Sprintf("resolver.nic.test. A %s", n.resolver.Addr))
	n.AddRecord("test.", fmt.Sprintf("web.nic.test. A %s", n.web.Addr))
	n.AddRecord("test.", fmt.Sprintf("client.nic.test. A %s", n.client.Addr))
	return n
}

func takeLock(timeout time.Duration, t testing.TB) (*os.File, error) {
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	os.MkdirAll(filepath.Dir(lockFile), 0o755)
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	logged := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("internet: flock %s: %w", lockFile, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("internet: another run holds %s for more than %v", lockFile, timeout)
		}
		if !logged {
			t.Logf("internet: waiting for another run to release %s", lockFile)
			logged = true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Start starts DNS (knot, then unbound), the TLS-RPT server and nginx,
// and waits until they and every MX added so far answer. Zones, records,
// MXes and policies are fixed from here on.
func (n *Net) Start() {
	n.t.Helper()
	n.mu.Lock()
	if n.started {
		n.mu.Unlock()
		n.t.Fatal("internet: Start twice")
	}
	n.started = true
	rpt, mxs := n.rpt, append([]*MX(nil), n.mxs...)
	n.mu.Unlock()
	n.startDNS()
	if rpt != nil {
		n.startReport(rpt)
	}
	n.startWeb()
	for _, m := range mxs {
		m.wait(n.t)
	}
}

// Dir is the directory of all configuration, data and logs.
func (n *Net) Dir() string { return n.dir }

// CAFile is the PEM file of the suite CA: the sender must trust it (and
// nothing else) to verify MTA-STS hosts and MX certificates.
func (n *Net) CAFile() string { return n.ca.File }

// CA is the suite CA (to issue more certificates).
func (n *Net) CA() *CA { return n.ca }

// Resolver is the address of the validating resolver, "10.98.2.2:53",
// for the sender's DNS configuration.
func (n *Net) Resolver() string { return net.JoinHostPort(n.resolver.Addr, "53") }

// AuthServer is the address of the authoritative server (knot),
// "10.98.1.2:53" (answers without recursion, AD never set).
func (n *Net) AuthServer() string { return net.JoinHostPort(n.dns.Addr, "53") }

// Client is a host whose /etc/resolv.conf (via /etc/netns) points at the
// resolver, with "options trust-ad": real clients run in it with
// Client().Command(...) resolve through the Internet's DNS.
func (n *Net) Client() *Host { return n.client }

// DNSHost, ResolverHost, WebHost and ReportHost are the fixed hosts.
func (n *Net) DNSHost() *Host      { return n.dns }
func (n *Net) ResolverHost() *Host { return n.resolver }
func (n *Net) WebHost() *Host      { return n.web }
func (n *Net) ReportHost() *Host   { return n.report }

// Hosts lists every host made so far.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// AddHost makes a new host (namespace Prefix+name) at the next free index
// (10, 11, ...). It runs nothing: its address refuses every connection,
// which makes it a "down" MX when an A record points at it.
func (n *Net) AddHost(name string) *Host {
	n.t.Helper()
	n.mu.Lock()
	i := n.next
	n.next++
	n.mu.Unlock()
	if i > 250 {
		n.t.Fatal("internet: too many hosts")
	}
	return n.addHostAt(name, i)
}

func (n *Net) addHostAt(name string, i int) *Host {
	t := n.t
	t.Helper()
	h := &Host{Name: name, NS: Prefix + name, Index: i,
		Addr: fmt.Sprintf("10.98.%d.2", i), HostAddr: fmt.Sprintf("10.98.%d.1", i),
		Link: fmt.Sprintf("%sv%d", Prefix, i)}
	if len(h.NS) > 60 {
		t.Fatalf("internet: host name too long: %q", name)
	}
	n.mu.Lock()
	for _, o := range n.hosts {
		if o.Name == name {
			n.mu.Unlock()
			t.Fatalf("internet: host %q exists", name)
		}
	}
	n.hosts = append(n.hosts, h)
	n.mu.Unlock()
	must(t, "ip", "netns", "add", h.NS)
	must(t, "ip", "link", "add", h.Link, "type", "veth", "peer", "name", "eth0", "netns", h.NS)
	must(t, "ip", "addr", "add", h.HostAddr+"/24", "dev", h.Link)
	must(t, "ip", "link", "set", h.Link, "up")
	// Forward only what arrives on our links (not net.ipv4.ip_forward):
	// namespaces reach each other through this host; nothing else is
	// routed, as they have no default route.
	if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+h.Link+"/forwarding", []byte("1\n"), 0o644); err != nil {
		t.Fatalf("internet: enable forwarding on %s: %v", h.Link, err)
	}
	must(t, "ip", "-n", h.NS, "addr", "add", h.Addr+"/24", "dev", "eth0")
	must(t, "ip", "-n", h.NS, "link", "set", "eth0", "up")
	must(t, "ip", "-n", h.NS, "link", "set", "lo", "up")
	must(t, "ip", "-n", h.NS, "route", "add", "10.98.0.0/16", "via", h.HostAddr)
	return h
}

// setResolvConf gives h an /etc/resolv.conf naming the resolver.
func (n *Net) setResolvConf(h *Host) {
	d := "/etc/netns/" + h.NS
	if err := os.MkdirAll(d, 0o755); err != nil {
		n.t.Fatal(err)
	}
	rc := fmt.Sprintf("nameserver %s\noptions trust-ad edns0 timeout:2 attempts:2\n", n.resolver.Addr)
	if err := os.WriteFile(d+"/resolv.conf", []byte(rc), 0o644); err != nil {
		n.t.Fatal(err)
	}
	// no /etc/hosts surprises: only localhost
	if err := os.WriteFile(d+"/hosts", []byte("127.0.0.1 localhost\n"), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// ClientMailConfig is a Postfix configuration directory (a main.cf with
// smtp_dns_support_level = dnssec, IPv4 only) for Postfix clients run in
// the client host: MAIL_CONFIG=<it> posttls-finger ... (see PostTLSFinger).
func (n *Net) ClientMailConfig() string { return filepath.Join(n.dir, "client-postfix") }

func (n *Net) writeClientMailConfig() {
	d := n.ClientMailConfig()
	if err := os.MkdirAll(d, 0o755); err != nil {
		n.t.Fatal(err)
	}
	cf := "# posttls-finger in mfwnet-client (mailfwd/e2e/internet)\ncompatibility_level = 3.6\n" +
		"inet_protocols = ipv4\nsmtp_dns_support_level = dnssec\nsmtp_host_lookup = dns\n"
	if err := os.WriteFile(d+"/main.cf", []byte(cf), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// PostTLSFinger runs Postfix's posttls-finger in the client host (DNS
// through the resolver, AD trusted) with args, e.g. ("-c", "-l", "dane",
// "dane.test") or ("-c", "-l", "secure", "-F", n.CAFile(),
// "[mx.sts-enforce.test]"), and returns its combined output. "-t10 -T30"
// come first (the same options in args win).
func (n *Net) PostTLSFinger(args ...string) (string, error) {
	full := append([]string{"MAIL_CONFIG=" + n.ClientMailConfig(), "posttls-finger", "-t10", "-T30"}, args...)
	cmd := n.client.Command("env", full...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func must(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// startProc starts a foreground daemon (killed if this process dies),
// output to logFile.
func (n *Net) startProc(name string, cmd *exec.Cmd, logFile string) *proc {
	n.t.Helper()
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if !n.keep { // kept daemons outlive the test; the next New kills them
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	}
	if err := cmd.Start(); err != nil {
		out.Close()
		n.t.Fatalf("internet: start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.logs = append(n.logs, logFile)
	n.mu.Unlock()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// poll calls ok every 20 ms until it returns nil, p exits (if not nil) or
// timeout passes; it fails the test with the last error and logTail.
func (n *Net) poll(what string, timeout time.Duration, p *proc, logFile string, ok func() error) {
	n.t.Helper()
	poll(n.t, what, timeout, p, logFile, ok)
}

func poll(t testing.TB, what string, timeout time.Duration, p *proc, logFile string, ok func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("internet: %s: process exited (%v); last error: %v\n%s", what, p.err, err, tail(logFile, 30))
		}
		if time.Now().After(deadline) {
			t.Fatalf("internet: %s: not ready after %v: %v\n%s", what, timeout, err, tail(logFile, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(file string, lines int) string {
	if file == "" {
		return ""
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return "--- " + file + "\n" + strings.Join(l, "\n")
}

func (n *Net) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	procs := append([]*proc(nil), n.procs...)
	logs := append([]string(nil), n.logs...)
	mxs := append([]*MX(nil), n.mxs...)
	n.mu.Unlock()
	defer n.lock.Close() // releases the flock
	if n.t.Failed() {
		for _, m := range mxs {
			logs = append(logs, m.LogFile())
		}
		for _, l := range logs {
			if s := tail(l, 25); s != "" {
				n.t.Log(s)
			}
		}
	}
	if n.keep {
		n.t.Logf("internet: kept (MFWNET_KEEP): %s and namespaces %s*", n.dir, Prefix)
		return
	}
	if n.rpt != nil {
		n.rpt.close()
	}
	for _, p := range procs {
		if !p.exited() {
			p.cmd.Process.Kill()
		}
		<-p.done
	}
	Cleanup()
	os.RemoveAll(n.dir)
}

// Cleanup removes every mfwnet-* namespace (killing the processes in it
// first: Postfix daemonizes), every mfwnet-* link and /etc/netns/mfwnet-*.
// New calls it first (leftovers of an interrupted run) and at the end.
// It never touches other names (mfwe2e-* belong to another suite).
func Cleanup() {
	self := os.Getpid()
	for _, ns := range namespaces() {
		for try := 0; try < 100; try++ {
			pids := nsPids(ns)
			live := 0
			for _, p := range pids {
				if p == self {
					continue
				}
				live++
				killPid(p)
			}
			if live == 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 {
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				if strings.HasPrefix(name, Prefix) {
					exec.Command("ip", "link", "del", name).Run()
				}
			}
		}
	}
	matches, _ := filepath.Glob("/etc/netns/" + Prefix + "*")
	for _, m := range matches {
		os.RemoveAll(m)
	}
}

// markerFile marks a directory New made (removeStaleDirs deletes those).
const markerFile = ".mfwnet"

// removeStaleDirs deletes the directories of earlier runs (kept or
// interrupted); only called with the lock held.
func removeStaleDirs() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), "mfwnet-*"))
	for _, m := range matches {
		if _, err := os.Stat(filepath.Join(m, markerFile)); err == nil {
			os.RemoveAll(m)
		}
	}
}

func namespaces() []string {
	ents, _ := os.ReadDir("/run/netns")
	var r []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), Prefix) {
			r = append(r, e.Name())
		}
	}
	sort.Strings(r)
	return r
}

// nsPids lists the processes (not zombies) whose network namespace is ns.
func nsPids(ns string) []int {
	var st unix.Stat_t
	if unix.Stat("/run/netns/"+ns, &st) != nil {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var r []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var ps unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &ps) != nil || ps.Ino != st.Ino || ps.Dev != st.Dev {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/stat"); err == nil {
			if i := strings.LastIndexByte(string(b), ')'); i > 0 && i+2 < len(b) && b[i+2] == 'Z' {
				continue
			}
		}
		r = append(r, pid)
	}
	return r
}

func killPid(p int) { syscall.Kill(p, syscall.SIGKILL) }
