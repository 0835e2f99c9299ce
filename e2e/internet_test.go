//go:build e2e

package e2e

// A small Internet on this machine, from real servers: each remote host in
// a network namespace of its own (ip netns), on a veth pair to this host;
// a DNS server (dnsmasq) on this host, which every namespace and mailfwd
// (dns.servers) ask, on an address of this host's lo. Namespaces are named
// mfwe2e-*; what an interrupted run left is removed before the next builds
// its own.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	simPrefix = "mfwe2e-"
	simDNSIP  = "10.99.0.1" // on this host's lo (no dummy interfaces in every kernel)
)

type simNet struct {
	t       *testing.T
	dir     string
	hosts   []string
	records []string // dnsmasq record options
	dns     *exec.Cmd
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// removeSimNet removes every mfwe2e-* namespace, link and resolv.conf.
func removeSimNet() {
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], simPrefix) {
				exec.Command("ip", "netns", "del", f[0]).Run()
			}
		}
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) > 1 {
				name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
				if strings.HasPrefix(name, simPrefix) {
					exec.Command("ip", "link", "del", name).Run()
				}
			}
		}
	}
	exec.Command("ip", "addr", "del", simDNSIP+"/32", "dev", "lo").Run()
	matches, _ := filepath.Glob("/etc/netns/" + simPrefix + "*")
	for _, m := range matches {
		os.RemoveAll(m)
	}
}

func newSimNet(t *testing.T) *simNet {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip (iproute2) not installed: %v", err)
	}
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Fatalf("dnsmasq (dnsmasq-base) not installed: %v", err)
	}
	removeSimNet()
	n := &simNet{t: t, dir: t.TempDir()}
	os.Chmod(n.dir, 0o755)
	t.Cleanup(n.close)
	run(t, "ip", "addr", "add", simDNSIP+"/32", "dev", "lo")
	return n
}

// addHost makes host i (1..250): namespace mfwe2e-NAME, reached at
// 10.99.i.2; this host is 10.99.i.1 on its side. It returns the address.
func (n *simNet) addHost(name string, i int) string {
	t := n.t
	ns, veth := simPrefix+name, fmt.Sprintf("%sv%d", simPrefix, i)
	local, remote := fmt.Sprintf("10.99.%d.1", i), fmt.Sprintf("10.99.%d.2", i)
	run(t, "ip", "netns", "add", ns)
	n.hosts = append(n.hosts, ns)
	run(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(t, "ip", "addr", "add", local+"/24", "dev", veth)
	run(t, "ip", "link", "set", veth, "up")
	run(t, "ip", "netns", "exec", ns, "ip", "addr", "add", remote+"/24", "dev", "eth0")
	run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
	run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", local)
	if err := os.MkdirAll("/etc/netns/"+ns, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/etc/netns/"+ns+"/resolv.conf", []byte("nameserver "+simDNSIP+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return remote
}

// in runs name in host's namespace (its resolv.conf is ours).
func (n *simNet) in(host string, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", simPrefix + host, name}, args...)...)
}

// txt publishes a TXT record (long values are split into strings).
func (n *simNet) txt(name, value string) {
	var parts []string
	for len(value) > 250 {
		parts = append(parts, value[:250])
		value = value[250:]
	}
	parts = append(parts, value)
	// no quotes: dnsmasq keeps them on its command line; the values hold no comma
	n.records = append(n.records, "--txt-record="+name+","+strings.Join(parts, ","))
}

// startDNS starts dnsmasq on simDNSIP:53 with the records so far; it
// answers only them (no upstream, no /etc/hosts) and REFUSES nothing else:
// a name it does not hold is NXDOMAIN.
func (n *simNet) startDNS() {
	t := n.t
	logf := filepath.Join(n.dir, "dnsmasq.log")
	args := append([]string{"--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
		"--listen-address=" + simDNSIP, "--port=53", "--log-queries", "--log-facility=" + logf, "--pid-file=",
		"--user=root", "--local=/example/", "--local=/test/", "--local=/com/", "--local=/net/", "--local=/org/"}, n.records...)
	n.dns = exec.Command("dnsmasq", args...)
	out, _ := os.Create(filepath.Join(n.dir, "dnsmasq.out"))
	n.dns.Stdout, n.dns.Stderr = out, out
	n.dns.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.dns.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(logf); strings.Contains(string(b), "started") {
			return
		}
		if i > 100 {
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("dnsmasq did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *simNet) close() {
	if n.dns != nil && n.dns.Process != nil {
		n.dns.Process.Kill()
		n.dns.Wait()
	}
	if os.Getenv("E2E_KEEP") == "1" {
		return
	}
	removeSimNet()
}
