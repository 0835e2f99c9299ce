//go:build e2e && powercut

package e2e

// The power-loss test's guest: Debian's kernel and the modules it needs
// for a virtio disk and network and ext4, and an initramfs with busybox,
// the relay and its config, whose init mounts the disk and runs the relay.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

type guestKernel struct {
	vmlinuz string
	modules []string // .ko files, in the order they must be loaded
}

// guestModules are what the guest needs before it can mount its spool
// (Debian builds them as modules); modprobe --show-depends on the unpacked
// kernel gives them with their dependencies, in load order.
var guestModules = []string{"virtio_pci", "virtio_blk", "virtio_net", "crc32c_generic", "ext4"}

// fetchGuestKernel takes the package linux-image-amd64 depends on (apt-get
// download: nothing is installed on the host) and unpacks it once into
// ~/.cache/mailfwd-e2e/<package>.
func fetchGuestKernel() (guestKernel, error) {
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return guestKernel{}, fmt.Errorf("apt-cache depends linux-image-amd64: %w", err)
	}
	pkg := ""
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
		}
	}
	if pkg == "" {
		return guestKernel{}, fmt.Errorf("no kernel package in apt-cache depends linux-image-amd64:\n%s", out)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return guestKernel{}, err
	}
	root := filepath.Join(cache, "mailfwd-e2e", pkg)
	if _, err := os.Stat(root); err != nil {
		if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
			return guestKernel{}, err
		}
		tmp, err := os.MkdirTemp(filepath.Dir(root), pkg+".tmp")
		if err != nil {
			return guestKernel{}, err
		}
		defer os.RemoveAll(tmp)
		// _apt cannot write to a root-owned temp dir: apt downloads as root then.
		if out, err := runIn(tmp, "apt-get", "download", pkg); err != nil {
			return guestKernel{}, fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
		}
		debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
		if len(debs) != 1 {
			return guestKernel{}, fmt.Errorf("apt-get download %s left %d .deb files", pkg, len(debs))
		}
		if out, err := runIn(tmp, "dpkg-deb", "-x", debs[0], "root"); err != nil {
			return guestKernel{}, fmt.Errorf("dpkg-deb -x: %w\n%s", err, out)
		}
		if err := os.Rename(filepath.Join(tmp, "root"), root); err != nil {
			return guestKernel{}, err
		}
	}
	vm, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(vm) != 1 {
		return guestKernel{}, fmt.Errorf("%s: want one boot/vmlinuz-*, found %v", root, vm)
	}
	ver := strings.TrimPrefix(filepath.Base(vm[0]), "vmlinuz-")
	if out, err := exec.Command("depmod", "-b", root, ver).CombinedOutput(); err != nil {
		return guestKernel{}, fmt.Errorf("depmod: %w\n%s", err, out)
	}
	k := guestKernel{vmlinuz: vm[0]}
	seen := map[string]bool{}
	for _, m := range guestModules {
		out, err := exec.Command("modprobe", "-d", root, "-S", ver, "--show-depends", m).CombinedOutput()
		if err != nil {
			return guestKernel{}, fmt.Errorf("modprobe --show-depends %s: %w\n%s", m, err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "insmod" && !seen[f[1]] {
				seen[f[1]] = true
				k.modules = append(k.modules, f[1])
			}
		}
	}
	return k, nil
}

func runIn(dir, name string, args ...string) ([]byte, error) {
	c := exec.Command(name, args...)
	c.Dir = dir
	return c.CombinedOutput()
}

// guestInit is the guest's PID 1. It stays PID 1 (the relay is its child)
// and powers off when the relay exits, so a crash of the relay shows on the
// console instead of as a kernel panic.
const guestInit = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m 2>/dev/null || echo "insmod $m: not loaded (a CPU-specific driver the emulated CPU may not have)"; done
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
mkdir -p /spool
opts=$(sed -n 's/.*mailfwd\.mount=\([^ ]*\).*/\1/p' /proc/cmdline)
mount -t ext4 ${opts:+-o $opts} /dev/vda /spool || { echo POWERCUT-MOUNT-FAILED; poweroff -f; }
echo POWERCUT-MOUNTED
cd /spool
/mailfwd serve -config /etc/mailfwd.yaml
echo "POWERCUT-RELAY-EXITED $?"
poweroff -f
`

// writeGuestInitramfs writes an uncompressed newc cpio archive.
func writeGuestInitramfs(path string, k guestKernel, relay, config string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := &cpioWriter{w: bufio.NewWriterSize(f, 1<<20)}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "spool"} {
		w.add(d, 0o40755, nil)
	}
	var order []string
	for _, m := range k.modules {
		data, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		w.add("lib/modules/"+filepath.Base(m), 0o100644, data)
		order = append(order, filepath.Base(m))
	}
	w.add("modules.order", 0o100644, []byte(strings.Join(order, "\n")+"\n"))
	for _, file := range []struct{ src, dst string }{{"/bin/busybox", "bin/busybox"}, {relay, "mailfwd"}} {
		data, err := os.ReadFile(file.src)
		if err != nil {
			return fmt.Errorf("%w (busybox-static provides /bin/busybox)", err)
		}
		w.add(file.dst, 0o100755, data)
	}
	w.add("init", 0o100755, []byte(guestInit))
	w.add("etc/mailfwd.yaml", 0o100644, []byte(config))
	w.add("TRAILER!!!", 0, nil)
	err = w.err
	if err == nil {
		err = w.w.Flush()
	}
	return errors.Join(err, f.Close())
}

// cpioWriter writes the "newc" format the kernel unpacks into its rootfs.
type cpioWriter struct {
	w   *bufio.Writer
	ino int
	n   int64
	err error
}

func (c *cpioWriter) add(name string, mode uint32, data []byte) {
	if c.err != nil {
		return
	}
	c.ino++
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name + "\x00"))
	c.pad()
	c.write(data)
	c.pad()
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}
