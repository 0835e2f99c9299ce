package queue

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

func TestCheckDurable(t *testing.T) {
	if err := CheckDurable(t.TempDir()); err != nil {
		// The test's own temp dir may be a tmpfs: then that is the
		// answer, and the mount below says the same.
		if !errors.Is(err, ErrUnsafeFilesystem) {
			t.Fatal(err)
		}
		t.Logf("TMPDIR: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: no tmpfs of our own to try")
		return
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	if err := CheckDurable(dir); !errors.Is(err, ErrUnsafeFilesystem) {
		t.Fatalf("tmpfs: %v, want ErrUnsafeFilesystem", err)
	}
}

func TestMountOf(t *testing.T) {
	m, err := mountOf("/proc/self")
	if err != nil || m.point != "/proc" || m.fstype != "proc" {
		t.Fatalf("mountOf(/proc/self) = %+v, %v", m, err)
	}
	if got := unescapeMount(`/mnt/a\040b`); got != "/mnt/a b" {
		t.Fatalf("unescape: %q", got)
	}
}
