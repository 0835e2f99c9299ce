//go:build e2e && powercut

package e2e

// The power-loss test (make powercut): the relay runs in a qemu guest whose
// disk is served by nbdkit with its cache filter in writeback mode, so the
// disk keeps every write in a cache and passes it on to its backing file
// only at a flush (or a FUA write). Cutting the power is killing nbdkit and
// qemu together: whatever the guest's kernel wrote but did not flush is
// gone, exactly what a disk with a volatile write cache loses. The load
// generator of the crash harness (crash_test.go) sends without pause; each
// cycle the power is cut at a random moment (under load, or during the
// recovery that follows the last cut), and the guest boots again on the
// same disk. The next hop is down in most cycles so the spool fills up and
// every cut puts the whole backlog at risk, not just the messages in
// flight. At the end the guest boots once more with the next hop up and
// every message that ever got a 250 must arrive.
//
// A control relay, the same binary built with -tags powercut_nosync (it
// answers 250 with nothing synced), runs the same cycles: it must lose
// mail, or the test cannot tell a relay that syncs from one that does not.
//
// The guest is Debian's own kernel (the linux-image-amd64 package, taken
// with apt-get download and cached under ~/.cache/mailfwd-e2e), booted
// under qemu's software emulation with an initramfs this file writes:
// busybox, the kernel modules for virtio and ext4, the relay and its
// config. The spool is ext4 (made on the host, mounted with its defaults:
// data=ordered, barriers on). E2E_POWERCUT_SEED=n replays the random
// choices; E2E_POWERCUT_CUTS=n changes the number of cuts of mailfwd.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	powerCuts        = 20 // of mailfwd (the issue asks for at least 20)
	powerControlCuts = 5
	powerClients     = 6
	powerMaxLoad     = 12 * time.Second // a cut lands uniformly within this under load
	powerBootTimeout = 3 * time.Minute  // kernel, module loading, journal replay, spool recovery
	powerDrainLimit  = 5 * time.Minute
)

func TestPowerCut(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("E2E_POWERCUT_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("E2E_POWERCUT_SEED: %v", err)
		}
	}
	cuts := powerCuts
	if v := os.Getenv("E2E_POWERCUT_CUTS"); v != "" {
		var err error
		if cuts, err = strconv.Atoi(v); err != nil {
			t.Fatalf("E2E_POWERCUT_CUTS: %v", err)
		}
	}
	t.Logf("seed %d (E2E_POWERCUT_SEED=%d replays the random choices)", seed, seed)
	for _, tool := range []string{"qemu-system-x86_64", "nbdkit", "mkfs.ext4", "apt-get", "dpkg-deb", "depmod", "modprobe"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (e2e/scripts/install-deps.sh installs it): %v", tool, err)
		}
	}
	kernel, err := fetchGuestKernel()
	if err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(t.TempDir(), "mailfwd-nosync")
	if out, err := exec.Command("../deploy/build-static.sh", control, "-tags", "powercut_nosync").CombinedOutput(); err != nil {
		t.Fatalf("building the control relay: %v\n%s", err, out)
	}

	var results []string
	t.Run("mailfwd", func(t *testing.T) {
		r := runPowerCuts(t, kernel, suite.binary, cuts, seed, false)
		results = append(results, "mailfwd: "+r.String())
		if r.cuts < cuts {
			t.Errorf("only %d power cuts, want %d", r.cuts, cuts)
		}
		if r.lost > 0 {
			t.Errorf("%d acknowledged messages lost over %d power cuts", r.lost, r.cuts)
		}
		if r.cutsWithBacklog < cuts/2 {
			t.Errorf("only %d of %d cuts found mail in the spool: the test did not put a backlog at risk", r.cutsWithBacklog, r.cuts)
		}
		if r.accepted < 200 {
			t.Errorf("only %d messages accepted, want hundreds", r.accepted)
		}
	})
	t.Run("control", func(t *testing.T) {
		r := runPowerCuts(t, kernel, control, powerControlCuts, seed+1, true)
		results = append(results, "control (no syncs): "+r.String())
		if r.lost == 0 {
			t.Errorf("the control relay (answers 250 before anything is synced) lost nothing over %d cuts: the test cannot see a missing sync", r.cuts)
		}
	})
	for _, r := range results {
		t.Log(r)
	}
}

// powerResult is what one relay's run of cuts came to.
type powerResult struct {
	cuts, cutsInRecovery, cutsWithBacklog int
	accepted, failed, lost, duplicated    int
	quarantined                           int // guest log lines about quarantined files
	wall                                  time.Duration
}

func (r powerResult) String() string {
	return fmt.Sprintf("%d power cuts (%d during recovery, %d with mail in the spool), %d messages acknowledged, %d lost, %d delivered twice, %d failed without a 250, %d quarantine log lines, %v",
		r.cuts, r.cutsInRecovery, r.cutsWithBacklog, r.accepted, r.lost, r.duplicated, r.failed, r.quarantined, r.wall.Round(time.Second))
}

// runPowerCuts cuts the power under relay cuts times, then drains it. The
// guest's disk and logs are kept when the run failed or lost mail against
// expectLoss.
func runPowerCuts(t *testing.T, k guestKernel, relay string, cuts int, seed uint64, expectLoss bool) (r powerResult) {
	rng := rand.New(rand.NewPCG(seed, 0))
	began := time.Now()
	// Not t.TempDir: on failure the disk image and the guest's logs are kept.
	dir, err := os.MkdirTemp("", "mailfwd-powercut-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() || (r.lost > 0) != expectLoss {
			t.Logf("kept for inspection: %s (disk.img, serial-N.log, nbdkit-N.log)", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	smtpAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	sinkAddr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	_, sinkPort, _ := net.SplitHostPort(sinkAddr)
	_, smtpPort, _ := net.SplitHostPort(smtpAddr)
	g := &powerGuest{dir: dir, kernel: k, smtpAddr: smtpAddr, smtpPort: smtpPort}
	g.initrd = filepath.Join(dir, "initrd.cpio")
	if err := writeGuestInitramfs(g.initrd, k, relay, powerGuestConfig(t, sinkPort)); err != nil {
		t.Fatal(err)
	}
	g.disk = filepath.Join(dir, "disk.img")
	if err := os.WriteFile(g.disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(g.disk, 1<<30); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "spool", g.disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	sinkDir := filepath.Join(dir, "sink")
	sink := &powerSink{addr: sinkAddr, dir: sinkDir}
	defer sink.stop()
	load := &crashLoad{prefix: fmt.Sprintf("power-%d-%d-", os.Getpid(), seed), refused: map[string]int{}}
	scan := newSinkScanner(sinkDir, load.prefix, began.Add(-2*time.Second))

	for cycle := 1; cycle <= cuts+1; cycle++ {
		final := cycle == cuts+1
		// The next hop is up in a third of the cycles (deliveries, and
		// the removals after them, are cut too) and for the final drain.
		if final || rng.IntN(3) == 0 {
			if err := sink.start(); err != nil {
				t.Fatal(err)
			}
		} else {
			sink.stop()
		}
		if err := g.boot(cycle); err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		if !final && rng.IntN(5) == 0 {
			// Cut while the guest replays its journal and recovers the spool.
			time.Sleep(time.Duration(rng.Int64N(int64(4 * time.Second))))
			backlog := g.spoolLines()
			g.cut()
			r.cuts++
			r.cutsInRecovery++
			if backlog {
				r.cutsWithBacklog++
			}
			t.Logf("cycle %2d: power cut during boot/recovery; accepted so far %d", cycle, load.acceptedCount())
			continue
		}
		if err := g.waitSMTP(powerBootTimeout); err != nil {
			t.Fatalf("cycle %d: %v", cycle, err)
		}
		if final {
			break
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range powerClients {
			wg.Add(1)
			wrng := rand.New(rand.NewPCG(seed, uint64(cycle*1000+i)))
			go func() {
				defer wg.Done()
				load.worker(smtpAddr, cycle, stop, wrng)
			}()
		}
		d := time.Duration(rng.Int64N(int64(powerMaxLoad)))
		time.Sleep(d)
		inData := load.inData.Load()
		backlog := g.spoolLines()
		g.cut()
		close(stop)
		wg.Wait()
		r.cuts++
		if backlog {
			r.cutsWithBacklog++
		}
		t.Logf("cycle %2d: power cut after %v of load, %d sessions waiting for the DATA reply; accepted so far %d",
			cycle, d.Round(time.Millisecond), inData, load.acceptedCount())
	}

	// The final boot drains the spool to the sink.
	accepted, failed := load.snapshot()
	deadline := time.Now().Add(powerDrainLimit)
	lastFiles, lastProgress := -1, time.Now()
	var missing []string
	for {
		if err := scan.scan(); err != nil {
			t.Fatal(err)
		}
		if scan.files != lastFiles {
			lastFiles, lastProgress = scan.files, time.Now()
		}
		if missing = scan.missing(accepted); len(missing) == 0 || time.Now().After(deadline) || time.Since(lastProgress) > 45*time.Second {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // late duplicates
	if err := scan.scan(); err != nil {
		t.Fatal(err)
	}
	g.cut()
	missing = scan.missing(accepted)
	r.accepted, r.failed, r.wall = len(accepted), len(failed), time.Since(began)
	lostMsgs := map[string]bool{}
	for _, m := range missing {
		lostMsgs[strings.Fields(m)[0]] = true
	}
	r.lost = len(lostMsgs)
	for _, m := range accepted {
		for _, f := range crashRoutes[m.route].finals {
			if scan.got[m.tok][f] > 1 {
				r.duplicated++
				break
			}
		}
	}
	r.quarantined = g.countLog(regexp.MustCompile(`(?i)quarantin`))
	if len(missing) > 0 {
		t.Logf("%d acknowledged deliveries never arrived, e.g.:\n%s", len(missing), strings.Join(abbrev(missing, 10), "\n"))
	}
	t.Log(r.String())
	return r
}

// powerGuestConfig is the relay's config inside the guest
// (testdata/powercut/mailfwd.yaml), both next hops on the host's sink at
// sinkPort.
func powerGuestConfig(t *testing.T, sinkPort string) string {
	t.Helper()
	cfg, err := renderConfig("powercut/mailfwd.yaml", vars{"SinkPort": sinkPort})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// powerGuest boots the guest on its disk, one boot per cycle.
type powerGuest struct {
	dir, initrd, disk  string
	kernel             guestKernel
	smtpAddr, smtpPort string

	// disks are served by one nbdkit each, the first being the spool
	// (/dev/vda); nil: the spool disk behind the writeback cache.
	disks   []guestDisk
	cmdline string // appended to the kernel's (mailfwd.mount=OPTIONS for the spool's mount)

	boots  int
	qemu   *exec.Cmd
	nbdkit []*exec.Cmd
	serial string // this boot's console log
}

// guestDisk is an image and the nbdkit filters in front of it.
type guestDisk struct {
	image   string
	filters []string // --filter=NAME ...
	params  []string // the filters' KEY=VALUE parameters
}

func (g *powerGuest) boot(cycle int) error {
	g.boots++
	disks := g.disks
	if disks == nil {
		// -f below: in the foreground, so that SIGKILL reaches the process
		// that holds the cache (its cache file is already unlinked: it dies
		// with it).
		disks = []guestDisk{{image: g.disk, filters: []string{"--filter=cache"}, params: []string{"cache=writeback"}}}
	}
	nlog, err := os.Create(filepath.Join(g.dir, fmt.Sprintf("nbdkit-%d.log", cycle)))
	if err != nil {
		return err
	}
	defer nlog.Close()
	var drives []string
	for i, d := range disks {
		sock := filepath.Join(g.dir, fmt.Sprintf("nbd%d.sock", i))
		os.Remove(sock)
		args := append(append([]string{"-f", "-U", sock}, d.filters...), "file", d.image)
		cmd := exec.Command("nbdkit", append(args, d.params...)...)
		cmd.Stdout, cmd.Stderr = nlog, nlog
		if err := cmd.Start(); err != nil {
			g.cut()
			return fmt.Errorf("nbdkit: %w", err)
		}
		g.nbdkit = append(g.nbdkit, cmd)
		for i := 0; ; i++ {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if i > 100 {
				g.cut()
				return errors.New("nbdkit did not create its socket in 10s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// cache=writeback: the guest sees a volatile write cache and sends
		// flushes, which reach nbdkit as NBD flushes.
		drives = append(drives, "-drive", "file=nbd+unix:///?socket="+sock+",format=raw,if=virtio,cache=writeback")
	}
	g.serial = filepath.Join(g.dir, fmt.Sprintf("serial-%d.log", cycle))
	slog, err := os.Create(g.serial)
	if err != nil {
		return err
	}
	defer slog.Close()
	args := []string{"-machine", "q35", "-m", "768", "-smp", "2", "-nographic", "-no-reboot",
		"-kernel", g.kernel.vmlinuz, "-initrd", g.initrd,
		"-append", strings.TrimSpace("console=ttyS0 quiet panic=-1 " + g.cmdline)}
	args = append(args, drives...)
	g.qemu = exec.Command("qemu-system-x86_64", append(args,
		"-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:"+g.smtpPort+"-:2525",
		"-device", "virtio-net-pci,netdev=n0,romfile=")...)
	g.qemu.Stdout, g.qemu.Stderr = slog, slog
	if err := g.qemu.Start(); err != nil {
		g.cut()
		return fmt.Errorf("qemu: %w", err)
	}
	deadline := time.Now().Add(powerBootTimeout)
	for {
		log, _ := os.ReadFile(g.serial)
		if bytes.Contains(log, []byte("POWERCUT-MOUNTED")) {
			return nil
		}
		if bytes.Contains(log, []byte("POWERCUT-MOUNT-FAILED")) || bytes.Contains(log, []byte("Kernel panic")) {
			g.cut()
			return fmt.Errorf("the guest could not mount its spool (boot %d), console: %s", g.boots, tail(string(log), 3000))
		}
		if time.Now().After(deadline) {
			g.cut()
			return fmt.Errorf("the guest did not mount its disk in %v, console: %s", powerBootTimeout, tail(string(log), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitSMTP waits for the relay's banner through qemu's port forward (which
// accepts at once and closes when nothing listens in the guest yet).
func (g *powerGuest) waitSMTP(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", g.smtpAddr, 2*time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if err == nil && strings.HasPrefix(line, "220") {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	log, _ := os.ReadFile(g.serial)
	return fmt.Errorf("no SMTP banner from the guest in %v, console: %s", limit, tail(string(log), 3000))
}

// spoolLines tells whether the guest's relay reported mail in its spool
// at this boot (recovered, or accepted since): a cut then had a backlog.
func (g *powerGuest) spoolLines() bool {
	log, _ := os.ReadFile(g.serial)
	return bytes.Contains(log, []byte("(queue active)")) || spoolIndexedRe.Match(log)
}

var spoolIndexedRe = regexp.MustCompile(`msg="spool indexed" messages=[1-9]`)

// cut is the power cut: nbdkit first, so nothing more reaches the disk,
// then qemu.
func (g *powerGuest) cut() {
	procs := append(append([]*exec.Cmd(nil), g.nbdkit...), g.qemu)
	for _, c := range procs {
		if c != nil && c.Process != nil {
			c.Process.Signal(syscall.SIGKILL)
		}
	}
	for _, c := range procs {
		if c != nil && c.Process != nil {
			c.Wait()
		}
	}
	g.nbdkit, g.qemu = nil, nil
}

func (g *powerGuest) countLog(re *regexp.Regexp) int {
	n := 0
	for i := 1; i <= g.boots+1; i++ {
		data, err := os.ReadFile(filepath.Join(g.dir, fmt.Sprintf("serial-%d.log", i)))
		if err == nil {
			n += len(re.FindAll(data, -1))
		}
	}
	return n
}

// powerSink is smtp-sink on the host, started and stopped between cycles
// (its dumps accumulate in one directory).
type powerSink struct {
	addr, dir string
	cmd       *exec.Cmd
}

func (s *powerSink) start() error {
	if s.cmd != nil {
		return nil
	}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	s.cmd = exec.Command("/usr/sbin/smtp-sink", "-4", "-u", "root", "-d", s.dir+"/%Y%m%d%H%M%S.", s.addr, "256")
	if err := s.cmd.Start(); err != nil {
		s.cmd = nil
		return fmt.Errorf("smtp-sink: %w", err)
	}
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", s.addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("smtp-sink on %s did not answer", s.addr)
}

func (s *powerSink) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}
