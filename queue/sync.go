//go:build !powercut_nosync

package queue

import (
	"os"

	"golang.org/x/sys/unix"
)

// The spool reaches stable storage only through these two: fdatasync of a
// queue file through its own descriptor (so its writeback errors are
// reported to its commit), and fsync of the directory that names it. The
// power-loss test's control relay is built without them (sync_nosync.go).

// SyncsDisabled is true only in the power-loss test's control build.
const SyncsDisabled = false

func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

func syncDir(f *os.File) error { return f.Sync() }
