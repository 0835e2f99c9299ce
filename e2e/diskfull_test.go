//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestDiskFull runs a relay whose spool is a 2 MiB tmpfs: a message that
// does not fit, a full disk, a disk with room for the body but not the
// envelope, and a read-only spool each get 452 4.3.1 to the DATA and leave
// nothing behind; once there is room again the next message gets 250 and
// arrives.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "diskfull")
	// The tmpfs holds the message directory (startMailfwd's spool_dir is
	// dir/spool, messages in spool/msg). The spool's lock file (spool/lock,
	// held open for writing while the relay runs) stays outside: a file
	// open for writing would make the read-only remount below fail (EBUSY).
	mnt, unmount := mountSpoolTmpfs(t, dir, "2m")
	defer unmount()
	p, err := suite.startMailfwdExtra(dir, unsafeSpool)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		p.stop()
		if t.Failed() {
			t.Logf("relay log %s, tail:\n%s", p.log.Name(), p.logTail(t))
		}
	}()
	prefix := fmt.Sprintf("diskfull-%d-%d-", os.Getpid(), time.Now().UnixNano())
	sink := newSinkScanner(suite.servers["SINK_DIR"], prefix, time.Now().Add(-2*time.Second))
	seq := 0
	tok := func() string { seq++; return fmt.Sprintf("%s%d", prefix, seq) }
	rcpts := []string{"sales@company.com"} // through Postfix as central@company.com
	const final = "central@company.com"
	var refusedToks []string

	// expect452 sends one message and wants exactly 452 4.3.1 to the end
	// of its DATA, and a spool with nothing in it afterwards.
	expect452 := func(what string, size int) {
		t.Helper()
		tk := tok()
		refusedToks = append(refusedToks, tk)
		t.Logf("%s: spool free %d bytes, sending %d bytes", what, spoolFree(t, mnt), size)
		qid, stage, err := sendSized(p.addr, tk, rcpts, size)
		var se *smtp.SMTPError
		switch {
		case err == nil:
			t.Errorf("%s: DATA got 250 (queued as %s), want 452 4.3.1", what, qid)
		case stage != "end of DATA" || !errors.As(err, &se):
			t.Errorf("%s: failed at %s with %v, want 452 4.3.1 to the end of DATA", what, stage, err)
		case se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}):
			t.Errorf("%s: reply %d %v %q, want 452 4.3.1", what, se.Code, se.EnhancedCode, se.Message)
		default:
			t.Logf("%s: %d %d.%d.%d %s", what, se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
		}
		if line := lastLine(p.log.Name(), "cannot spool message"); line != "" {
			t.Logf("%s: relay log: %s", what, line)
		}
		if left := spoolFiles(t, p.spool); len(left) > 0 {
			t.Errorf("%s: the refused message left files in the spool: %v", what, left)
		}
	}
	// expect250 sends a small message, wants 250 and its arrival at the sink.
	expect250 := func(what string) {
		t.Helper()
		tk := tok()
		qid, stage, err := sendSized(p.addr, tk, rcpts, 2000)
		if err != nil {
			t.Fatalf("%s: %s: %v, want 250", what, stage, err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for sink.got[tk][final] == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: message %s (queue id %s) got 250 but did not arrive at the sink in 60s", what, tk, qid)
			}
			time.Sleep(100 * time.Millisecond)
			if err := sink.scan(); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: 250, queued as %s, arrived", what, qid)
		waitSpoolEmpty(t, p.spool) // delivered and removed: the space is back
	}

	// 1. A message bigger than the whole spool.
	expect452("3 MiB message, 2 MiB spool", 3<<20)
	expect250("small message after the big one")

	// 2. Disk full: not even a small message fits.
	junk := filepath.Join(mnt, junkName)
	fillDisk(t, junk)
	expect452("small message, spool full", 2000)

	// 3. Room for the body (one page) but not for the envelope the queue
	// file appends to it at the commit.
	fi, err := os.Stat(junk)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(junk, fi.Size()-4096); err != nil {
		t.Fatal(err)
	}
	expect452("one free page: body fits, envelope does not", 3700)

	// 4. Space again.
	if err := os.Remove(junk); err != nil {
		t.Fatal(err)
	}
	expect250("small message after the junk is removed")

	// 5. Spool unwritable: read-only file system (as root, permissions do
	// not stop writes).
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount %s read-only: %v\n%s", mnt, err, out)
	}
	expect452("read-only spool", 2000)
	if out, err := exec.Command("mount", "-o", "remount,rw", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount %s read-write: %v\n%s", mnt, err, out)
	}
	expect250("small message after the remount read-write")

	// Nothing refused was half-accepted: none of it ever arrives.
	time.Sleep(time.Second)
	if err := sink.scan(); err != nil {
		t.Fatal(err)
	}
	for _, tk := range refusedToks {
		if n := sink.got[tk]; len(n) > 0 {
			t.Errorf("message %s got 452 but arrived at the sink: %v", tk, n)
		}
	}
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("the relay exited during the test: %v", err)
	default:
	}
	logData, _ := os.ReadFile(p.log.Name())
	if n := strings.Count(string(logData), "cannot spool message"); n != len(refusedToks) {
		t.Errorf("%d \"cannot spool message\" log lines, want one per refused message (%d)", n, len(refusedToks))
	}
}

// sendSized sends one message of about size bytes with subject tok; stage
// says which step failed ("end of DATA" for the reply to the body).
func sendSized(addr, tok string, rcpts []string, size int) (qid, stage string, err error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return "", "connect", err
	}
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = 30*time.Second, 60*time.Second
	if err := c.Hello("client.e2e.test"); err != nil {
		return "", "EHLO", err
	}
	if err := c.Mail("alice@example.org", nil); err != nil {
		return "", "MAIL", err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return "", "RCPT", err
		}
	}
	w, err := c.Data()
	if err != nil {
		return "", "DATA", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: alice@example.org\r\nSubject: %s\r\nMessage-ID: <%s@e2e.test>\r\n\r\n", tok, tok)
	for b.Len() < size {
		b.WriteString("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz..\r\n")
	}
	if _, err := w.Write([]byte(b.String())); err != nil {
		return "", "sending the body", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", "end of DATA", err
	}
	if m := queuedRe.FindStringSubmatch(resp.StatusText); m != nil {
		qid = m[1]
	}
	c.Quit()
	return qid, "", nil
}

// lastLine is the last line of file containing s ("" if none).
func lastLine(file, s string) string {
	b, _ := os.ReadFile(file)
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// junkName is the file that fills the spool; the relay ignores it.
const junkName = "junk-fill"

// spoolFiles lists everything in the message directory but the junk.
func spoolFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := listSpool(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		if f != junkName {
			names = append(names, f)
		}
	}
	return names
}

func waitSpoolEmpty(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		left := spoolFiles(t, dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool not empty 30s after delivery: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func spoolFree(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// fillDisk writes path in whole pages until the file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096) // tmpfs allocates whole pages: a page-sized write fits or fails
	for {
		if _, err := f.Write(page); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	if free := spoolFree(t, path); free != 0 {
		t.Fatalf("spool still has %d bytes free after filling it", free)
	}
}

// mountSpoolTmpfs mounts a tmpfs of the given size as the message
// directory of a relay whose config dir is dir (startMailfwd's layout:
// dir/spool/msg). The spool's lock file stays outside, on the normal disk:
// a file open for writing would make a read-only remount fail (EBUSY).
// The test needs root and mount(8) and is never skipped. Defer the
// returned unmount before starting the relay, so it runs after the stop.
func mountSpoolTmpfs(t *testing.T, dir, size string) (mnt string, unmount func()) {
	t.Helper()
	mnt = filepath.Join(dir, "spool", "msg")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("cannot mount a %s tmpfs on %s for the spool (needs root and mount(8)): %v\n%s", size, mnt, err, out)
	}
	return mnt, func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	}
}

// A spool on tmpfs is refused at start, saying why and what to set; with
// spool.unsafe_filesystem the relay starts, and says what it risks.
func TestSpoolOnTmpfsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tmpfs-spool")
	_, unmount := mountSpoolTmpfs(t, dir, "4m")
	defer unmount()
	addr, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	relay := vars{"Hostname": "tmpfs.e2e.test", "Listen": addr}
	cfgPath, err := suite.relayConfig(dir, "relay/mailfwd.yaml", relay)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(suite.binary, "serve", "-config", cfgPath)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("serve with its spool on tmpfs is still running after 20 s:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "tmpfs") || !strings.Contains(string(out), "spool.unsafe_filesystem") {
		t.Fatalf("serve on tmpfs: %v, want a refusal naming tmpfs and spool.unsafe_filesystem:\n%s", err, out)
	}
	t.Logf("refused: %s", strings.TrimSpace(string(out)))

	relay["Extra"] = unsafeSpool
	if _, err := suite.relayConfig(dir, "relay/mailfwd.yaml", relay); err != nil {
		t.Fatal(err)
	}
	p, err := suite.startRelayConfig(dir, cfgPath, addr, "")
	if err != nil {
		t.Fatalf("with spool.unsafe_filesystem: %v", err)
	}
	defer p.stop()
	logHas(t, p, 5*time.Second, "spool on an unsafe filesystem")
}
