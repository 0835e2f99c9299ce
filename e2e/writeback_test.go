//go:build e2e

package e2e

// A disk that fails writes while mail comes in: the spool is ext4 on a
// loop device whose backing file lives on a tmpfs that is all but full,
// so the writeback of some messages' pages fails (I/O error) while others
// fit (then the journal aborts, and the filesystem turns read-only).
// Every message that got 250 must survive a remount (the page cache
// dropped) and arrive whole; the others got a 4xx. (A relay that syncs
// with one shared syncfs passed this too in our runs: the journal abort
// fails every batch alike; the case it loses, an error consumed by an
// earlier batch, is a race this test does not force.)

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func TestSpoolWritebackErrors(t *testing.T) {
	for _, b := range []string{"mkfs.ext4", "fsck.ext4", "mount", "umount"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not installed (e2fsprogs, mount): %v", b, err)
		}
	}
	dir := filepath.Join(t.TempDir(), "wb")
	back := filepath.Join(dir, "backing")
	msg := filepath.Join(dir, "spool", "msg")
	for _, d := range []string{back, msg} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", back)
	defer exec.Command("umount", "-l", back).Run()
	img := filepath.Join(back, "spool.img")
	run(t, "truncate", "-s", "32m", img)
	// ext4 as mkfs makes it (a journal, data=ordered), with inode tables
	// and journal written now: their blocks exist in the backing file, so
	// only new data blocks fail.
	// (Without a journal, ext4 itself loses an fdatasynced file at the
	// moment the device fills: a plain write+fdatasync+rename program
	// does too; that is no oracle for a relay.)
	run(t, "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-N", "8192", img)
	mount := func() { run(t, "mount", "-o", "loop,errors=continue", img, msg) }
	mount()
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", "-l", msg).Run()
		}
	}()

	// The next hop is down while the disk fails: nothing may be delivered
	// from the page cache, which still holds what the disk lost.
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	writeCfg := func(nextHop string) string {
		path, err := suite.relayConfig(dir, "relay/mailfwd.yaml", vars{"Hostname": "wb.e2e.test", "Listen": addr, "NextHop": nextHop, "Extra": "spool: {min_free: 0}\n"})
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
	p, err := suite.startRelayConfig(dir, writeCfg(down.Addr().String()), addr, "")
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.stop()
		}
	}()

	// The spool's directories exist now (the relay makes them at start):
	// write their blocks home before the disk fills, so that only new
	// data blocks fail. A directory block whose checkpoint write fails
	// after its journal commit is a fault of the filesystem's own (after
	// fsck, a rename the journal had committed was lost in one CI run:
	// the message's file was back at its temporary name), not one a relay
	// can answer for.
	run(t, "sync")

	// Leave the tmpfs ~1.5 MiB: some messages' pages fit, the rest fail
	// at writeback.
	junk := filepath.Join(back, "junk")
	fillDisk(t, junk)
	if fi, err := os.Stat(junk); err == nil {
		os.Truncate(junk, fi.Size()-3<<19)
	}

	const n, size = 120, 40 << 10
	prefix := fmt.Sprintf("wb-%d-%d-", os.Getpid(), time.Now().UnixNano())
	var mu sync.Mutex
	acked, refused := map[string]string{}, 0 // token: queue ID
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				tk := fmt.Sprintf("%s%03dz", prefix, i) // no token is the start of another
				qid, stage, err := sendSized(p.addr, tk, []string{"sales@company.com"}, size)
				var se *smtp.SMTPError
				mu.Lock()
				switch {
				case err == nil:
					acked[tk] = qid
				case stage == "end of DATA" && errors.As(err, &se) && se.Code/100 == 4:
					refused++
				default:
					t.Errorf("%s: %s: %v", tk, stage, err)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("%d messages: %d acknowledged, %d refused with a 4xx", n, len(acked), refused)
	if refused == 0 {
		t.Fatalf("no commit saw the failing disk: the test did not fail any write (tmpfs free %d)", spoolFree(t, back))
	}

	// Power back with a disk that works: the page cache goes with the
	// unmount, room is made, the filesystem checked, the relay restarted
	// with the next hop up.
	p.stop()
	stopped = true
	exec.Command("umount", msg).Run() // its writeback fails again: what the disk lost stays lost
	mounted = false
	os.Remove(junk)
	out, err := exec.Command("fsck.ext4", "-fy", img).CombinedOutput()
	t.Logf("fsck.ext4: %v\n%s", err, lastLines(string(out), 12))
	mount()
	mounted = true
	p, err = suite.startRelayConfig(dir, writeCfg(suite.servers["PF_SMTP"]), addr, "")
	if err != nil {
		t.Fatal(err)
	}
	stopped = false
	p.spool = msg

	// Every acknowledged message arrives, whole.
	deadline := time.Now().Add(90 * time.Second)
	var missing []string
	for {
		dumps, err := ReadSinkDumps(suite.servers["SINK_DIR"])
		if err != nil {
			t.Fatal(err)
		}
		whole := map[string]bool{}
		for _, d := range dumps {
			if !strings.Contains(d.RawHeader, prefix) {
				continue
			}
			for tk := range acked {
				// whole: about its size (the sink's dump leaves out the
				// envelope lines) and no zeroed page
				if strings.Contains(d.RawHeader, tk) && len(d.Raw) >= size-1024 && !strings.Contains(string(d.Raw), "\x00") {
					whole[tk] = true
				}
			}
		}
		missing = missing[:0]
		for tk := range acked {
			if !whole[tk] {
				missing = append(missing, tk)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(missing) > 0 {
		q, _ := os.ReadDir(filepath.Join(dir, "spool", "corrupt"))
		files, _ := listSpool(msg)
		for _, tk := range missing {
			b, _ := os.ReadFile(p.log.Name())
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, acked[tk]) {
					t.Logf("%s: %s", tk, l)
				}
			}
		}
		t.Logf("spool: %v", files)
		for _, tk := range missing {
			b, err := os.ReadFile(filepath.Join(dir, "spool", "corrupt", acked[tk]+".msg"))
			first, zeros := -1, 0
			for i, c := range b {
				if c == 0 {
					zeros++
					if first < 0 {
						first = i
					}
				}
			}
			t.Logf("%s quarantined: %d bytes (%v), %d zero bytes from %d; tail %q", acked[tk], len(b), err, zeros, first, b[max(0, len(b)-60):])
		}
		t.Fatalf("%d of %d acknowledged messages lost after the disk failed (%d files quarantined, %d in the spool): %v\nrelay log:\n%s",
			len(missing), len(acked), len(q), len(files), abbrev(missing, 5), p.logTail(t))
	}
	t.Logf("all %d acknowledged messages arrived whole", len(acked))
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
