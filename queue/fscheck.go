package queue

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsafeFilesystem: the spool is on a filesystem where a completed
// fsync does not mean the data survives a power cut or a reboot, so a 250
// would be a promise the relay cannot keep.
var ErrUnsafeFilesystem = errors.New("the spool's filesystem does not keep synced data over a power cut")

// Filesystem magic numbers (statfs f_type) of filesystems whose syncs do
// not reach stable storage.
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
	fuseMagic  = 0x65735546
)

// CheckDurable refuses a spool directory whose filesystem keeps data in
// memory (tmpfs, ramfs), is a volatile overlay (syncs are dropped), is
// FUSE (the daemon decides what a sync means; virtiofs forwards them and
// is allowed), or is mounted with write barriers off.
func CheckDurable(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	m, merr := mountOf(dir)
	switch uint32(st.Type) {
	case tmpfsMagic:
		return fmt.Errorf("%w: %s is on tmpfs (memory)", ErrUnsafeFilesystem, dir)
	case ramfsMagic:
		return fmt.Errorf("%w: %s is on ramfs (memory)", ErrUnsafeFilesystem, dir)
	case fuseMagic:
		if merr == nil && m.fstype == "virtiofs" {
			return nil
		}
		return fmt.Errorf("%w: %s is on a FUSE filesystem (%s), whose syncs may not reach a disk", ErrUnsafeFilesystem, dir, m.fstype)
	}
	if merr != nil {
		return nil // statfs said enough; no mount table (a container)
	}
	opts := "," + m.options + "," + m.superOptions + ","
	switch {
	case m.fstype == "overlay" && strings.Contains(opts, ",volatile,"):
		return fmt.Errorf("%w: %s is on a volatile overlay (syncs are ignored)", ErrUnsafeFilesystem, dir)
	case strings.Contains(opts, ",nobarrier,") || strings.Contains(opts, ",barrier=0,"):
		return fmt.Errorf("%w: %s is mounted with nobarrier (the disk's cache may lose synced writes)", ErrUnsafeFilesystem, dir)
	}
	return nil
}

type mount struct {
	point, fstype, options, superOptions string
}

// mountOf is the mount /proc/self/mountinfo gives for path: the one with
// the longest mount point that contains it.
func mountOf(path string) (mount, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return mount{}, err
	}
	if p, err := filepath.EvalSymlinks(abs); err == nil {
		abs = p
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mount{}, err
	}
	defer f.Close()
	var best mount
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root point options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 3 {
			continue
		}
		point := unescapeMount(a[4])
		if !within(abs, point) || (found && len(point) < len(best.point)) {
			continue
		}
		best, found = mount{point: point, fstype: b[0], options: a[5], superOptions: b[2]}, true
	}
	if !found {
		return mount{}, fmt.Errorf("no mount for %s", abs)
	}
	return best, sc.Err()
}

func within(path, point string) bool {
	return point == "/" || path == point || strings.HasPrefix(path, point+"/")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
