//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// Memory stays bounded under a flood of idle connections: RSS measured
// with 1,000 open sessions that said nothing after the banner.
func TestIdleConnectionsMemory(t *testing.T) {
	dir := t.TempDir()
	seed, _ := os.ReadFile("../deploy/seed.ldif")
	os.WriteFile(filepath.Join(dir, "dir.ldif"), seed, 0o600)
	addr, _ := freePort()
	cfg := writeConfig(t, filepath.Join(dir, "mailfwd.yaml"), "idle/mailfwd.yaml", vars{"Listen": addr, "NextHop": suite.servers["SINK_ADDR"]})
	cmd := exec.Command(suite.binary, "serve", "-config", cfg)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("relay did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	base := rssKiB(t, cmd.Process.Pid)
	const n = 1000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	buf := make([]byte, 512)
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if k, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:k]), "220 ") {
			t.Fatalf("connection %d: banner %q %v", i, buf[:k], err)
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond)
	loaded := rssKiB(t, cmd.Process.Pid)
	perConn := float64(loaded-base) / n
	t.Logf("RSS: %d KiB idle, %d KiB with %d idle sessions (%.1f KiB per session)", base, loaded, n, perConn)
	if loaded > 128*1024 {
		t.Fatalf("RSS %d KiB with %d idle sessions: over the 128 MiB bound", loaded, n)
	}
	// Over max_connections (1001, one taken by the start probe until it
	// closed), a connection is refused with 421 before any session starts.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if k, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:k]), "220 ") {
		t.Fatalf("connection 1001: banner %q %v", buf[:k], err)
	}
	// One more: refused with 421, or, when some session has idled longer
	// than a stranger must wait (relay/listener.go: strangerIdle, 1 s; on a
	// slow machine the first of the 1000 has), let in by closing that one
	// with a 421 of its own: never a session beyond max_connections.
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	k, _ := extra.Read(buf)
	got := string(buf[:k])
	if strings.HasPrefix(got, "421 4.7.0") {
		return
	}
	if !strings.HasPrefix(got, "220 ") {
		t.Fatalf("connection over max_connections got %q, want 421 4.7.0 or 220", got)
	}
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, c := range append(conns, c) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 512)
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if k, _ := c.Read(b); strings.HasPrefix(string(b[:k]), "421 4.7.0") && strings.Contains(string(b[:k]), "closing an idle one") {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	if closed := closed.Load(); closed != 1 {
		t.Fatalf("connection over max_connections was let in, and %d idle sessions were closed for it, want exactly 1", closed)
	}
	t.Logf("connection over max_connections took the slot of a session idle over 1 s")
}
