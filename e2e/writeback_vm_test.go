//go:build e2e && powercut

package e2e

// A writeback error must reach the commit of the message whose data it
// lost, and no other (make powercut). The spool is ext4 in the qemu guest
// of the power-loss test, with its journal on a second disk: for a moment
// every write to the data disk fails (nbdkit's error filter, triggered by
// a file), while the journal keeps committing, so ext4 (data_err=ignore,
// its default) goes on and the lost data pages are reported only through
// the files' error sequence numbers. A relay that made its batch durable
// with one syncfs on a shared descriptor hands the error to whichever
// batch syncs first: a client whose own data was lost gets 250. Each
// commit's own fdatasync sees its own file's error and answers 452.
// Afterwards the guest boots again on the same disks without errors and
// every message that got a 250 must arrive whole.
//
// E2E_WRITEBACK_RELAY=/path/to/mailfwd runs another build (an earlier
// commit, to see the test fail) instead of this tree's.

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWritebackErrorAttribution(t *testing.T) {
	kernel, err := fetchGuestKernel()
	if err != nil {
		t.Fatal(err)
	}
	relayBin := suite.binary
	if v := os.Getenv("E2E_WRITEBACK_RELAY"); v != "" {
		relayBin = v
	}
	dir, err := os.MkdirTemp("", "mailfwd-writeback-vm-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("kept for inspection: %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	data, journal := filepath.Join(dir, "data.img"), filepath.Join(dir, "journal.img")
	for _, f := range []struct {
		path string
		size int64
	}{{data, 1 << 30}, {journal, 64 << 20}} {
		if err := os.WriteFile(f.path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.path, f.size); err != nil {
			t.Fatal(err)
		}
	}
	// mke2fs takes an external journal only on a block device: a loop device
	// for the moment of mkfs.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "journal_dev", journal).CombinedOutput(); err != nil {
		t.Fatalf("mkfs journal: %v\n%s", err, out)
	}
	loop, err := exec.Command("losetup", "-f", "--show", journal).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(loop))
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-J", "device="+dev, data).CombinedOutput()
	exec.Command("losetup", "-d", dev).Run()
	if err != nil {
		t.Fatalf("mkfs with the external journal: %v\n%s", err, out)
	}

	smtpAddr, _ := freePort()
	sinkAddr, _ := freePort()
	_, sinkPort, _ := net.SplitHostPort(sinkAddr)
	_, smtpPort, _ := net.SplitHostPort(smtpAddr)
	g := &powerGuest{dir: dir, kernel: kernel, smtpAddr: smtpAddr, smtpPort: smtpPort,
		initrd: filepath.Join(dir, "initrd.cpio"), cmdline: "mailfwd.mount=journal_path=/dev/vdb"}
	if err := writeGuestInitramfs(g.initrd, kernel, relayBin, powerGuestConfig(t, sinkPort)); err != nil {
		t.Fatal(err)
	}
	trigger := filepath.Join(dir, "fail-writes")
	g.disks = []guestDisk{
		{image: data, filters: []string{"--filter=error"}, params: []string{
			"error-pwrite=EIO", "error-pwrite-rate=100%", "error-pwrite-file=" + trigger,
			"error-zero=EIO", "error-zero-rate=100%", "error-zero-file=" + trigger}},
		{image: journal},
	}
	if err := g.boot(1); err != nil {
		t.Fatal(err)
	}
	defer g.cut()
	if err := g.waitSMTP(powerBootTimeout); err != nil {
		t.Fatal(err)
	}

	// Load with the next hop down (everything stays in the spool), a
	// window of failing data writes in the middle of it.
	load := &crashLoad{prefix: fmt.Sprintf("wb-%d-", os.Getpid()), refused: map[string]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		go func() {
			defer wg.Done()
			load.worker(smtpAddr, 1, stop, rng)
		}()
	}
	windows := 3
	for range windows {
		time.Sleep(3 * time.Second)
		os.WriteFile(trigger, nil, 0o600)
		time.Sleep(1500 * time.Millisecond)
		os.Remove(trigger)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	g.cut()
	accepted, failed := load.snapshot()
	refused := fmt.Sprint(load.refused)

	// Boot again without errors, the next hop up: every 250 must arrive.
	sink := &powerSink{addr: sinkAddr, dir: filepath.Join(dir, "sink")}
	defer sink.stop()
	if err := sink.start(); err != nil {
		t.Fatal(err)
	}
	g.disks[0].filters, g.disks[0].params = nil, nil
	if err := g.boot(2); err != nil {
		t.Fatal(err)
	}
	if err := g.waitSMTP(powerBootTimeout); err != nil {
		t.Fatal(err)
	}
	scan := newSinkScanner(sink.dir, load.prefix, time.Time{})
	var missing []string
	lastFiles, lastProgress := -1, time.Now()
	for deadline := time.Now().Add(powerDrainLimit); ; time.Sleep(500 * time.Millisecond) {
		if err := scan.scan(); err != nil {
			t.Fatal(err)
		}
		if scan.files != lastFiles {
			lastFiles, lastProgress = scan.files, time.Now()
		}
		if missing = scan.missing(accepted); len(missing) == 0 || time.Now().After(deadline) || time.Since(lastProgress) > 45*time.Second {
			break
		}
	}
	log1, _ := os.ReadFile(filepath.Join(dir, "serial-1.log"))
	log2, _ := os.ReadFile(filepath.Join(dir, "serial-2.log"))
	ioErrors := strings.Count(string(log1), "I/O error") + strings.Count(string(log1), "write back data")
	t.Logf("%d messages acknowledged, %d failed (refusals by code %s); %d guest kernel lines on write errors; %d quarantine lines at recovery; %d acknowledged deliveries missing",
		len(accepted), len(failed), refused, ioErrors, strings.Count(string(log2), "quarantin"), len(missing))
	if ioErrors == 0 {
		t.Errorf("the guest saw no write error: the test injected nothing")
	}
	if load.refused["451"]+load.refused["452"] == 0 {
		t.Errorf("no commit answered 4xx during %d windows of failing writes: the errors reached no one", windows)
	}
	if len(missing) > 0 {
		t.Errorf("%d acknowledged messages lost to writeback errors reported to other commits, e.g.:\n%s", len(missing), strings.Join(abbrev(missing, 10), "\n"))
	}
}
