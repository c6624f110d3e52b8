package testenv

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/errors"
)

// RootlessUser is the user rootless containerd runs as in the tests.
const RootlessUser = "cf-rootless"

// Rootless is containerd run by a user who is not root, the way nerdctl's
// containerd-rootless.sh runs it: in RootlessKit's user, mount and network
// namespaces, its state under the user's $XDG_DATA_HOME and
// $XDG_RUNTIME_DIR.
type Rootless struct {
	UID, GID int
	// Dir holds everything of the user's: Home, RunDir (XDG_RUNTIME_DIR)
	// and Bin (containerd, its shim, ctr, containerd-rootless.sh and
	// what AddBin copies).
	Dir, Home, RunDir, Bin string
	// Addr is containerd's socket as seen from the host.
	Addr string
	Proc *Proc
}

// StartRootless starts rootless containerd as RootlessUser, creating the
// user (with subordinate IDs) when the machine has none. script is nerdctl's
// containerd-rootless.sh. Needs root, rootlesskit, slirp4netns, newuidmap
// and nsenter.
func StartRootless(ctx context.Context, script string) (*Rootless, error) {
	for _, b := range []string{"rootlesskit", "slirp4netns", "newuidmap", "nsenter"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, errors.Errorf("%s not found: run hack/install-deps.sh", b)
		}
	}
	u, err := rootlessUser()
	if err != nil {
		return nil, err
	}
	// slirp4netns opens /dev/net/tun as the user: udev gives it mode 666
	// on a usual Linux; a machine without udev may have left it 600.
	if fi, err := os.Stat("/dev/net/tun"); err == nil && fi.Mode().Perm()&0o006 != 0o006 {
		if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "cf-rootless-")
	if err != nil {
		return nil, err
	}
	r := &Rootless{
		UID: u.uid, GID: u.gid, Dir: dir,
		Home: filepath.Join(dir, "home"), RunDir: filepath.Join(dir, "run"), Bin: filepath.Join(dir, "bin"),
	}
	r.Addr = filepath.Join(r.RunDir, "containerd", "containerd.sock")
	for _, d := range []string{r.Home, r.RunDir, r.Bin} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	for _, b := range []string{"containerd", "containerd-shim-runc-v2", "ctr"} {
		p, err := Bin(b)
		if err != nil {
			return nil, err
		}
		if err := r.AddBin(p); err != nil {
			return nil, err
		}
	}
	if err := r.AddBin(script); err != nil {
		return nil, err
	}
	// containerd's own defaults, which containerd-rootless.sh binds to
	// the user's directories; only the plugins a test needs not load.
	cfg := filepath.Join(r.Home, ".config", "containerd", "config.toml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfg, []byte(`version = 3
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[debug]
  level = "warn"
`), 0o600); err != nil {
		return nil, err
	}
	if err := chownTree(dir, r.UID, r.GID); err != nil {
		return nil, err
	}
	cmd := r.Command(context.Background(), "containerd-rootless.sh")
	cmd.Dir = r.Home
	p, err := startCmd(dir, "containerd-rootless", cmd)
	if err != nil {
		return nil, err
	}
	if err := waitFor(p, 60*time.Second, func() error {
		out, err := r.Command(ctx, "ctr", "--address", r.Addr, "version").CombinedOutput()
		if err != nil {
			return errors.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}); err != nil {
		p.Stop()
		return nil, err
	}
	r.Proc = p
	return r, nil
}

// Stop stops containerd and RootlessKit, and what the user's containers
// left running (their shims), and removes the user's files.
func (r *Rootless) Stop() {
	r.Proc.Stop()
	_ = exec.Command("pkill", "-KILL", "-u", RootlessUser).Run()
	_ = os.RemoveAll(r.Dir)
}

// AddBin copies the executable at p into the user's Bin.
func (r *Rootless) AddBin(p string) error {
	_, err := r.Copy(p, r.Bin)
	return err
}

// Copy copies the file at p into dir, the user's, and returns the copy.
func (r *Rootless) Copy(p, dir string) (string, error) {
	src, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst := filepath.Join(dir, filepath.Base(p))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return dst, os.Chown(dst, r.UID, r.GID)
}

// Command runs name as the user, with the user's environment and no other
// (HOME, XDG_RUNTIME_DIR, PATH with Bin first), on the host.
func (r *Rootless) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"-u", RootlessUser, "--", "env", "-i",
		"HOME=" + r.Home, "XDG_RUNTIME_DIR=" + r.RunDir, "USER=" + RootlessUser,
		"PATH=" + r.Bin + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", name}, args...)
	cmd := exec.CommandContext(ctx, "runuser", full...)
	cmd.Dir = r.Home
	return cmd
}

// Inside runs name as the user inside rootless containerd's namespaces (as
// nerdctl and `containerd-rootless-setuptool.sh nsenter` enter them).
func (r *Rootless) Inside(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	dt, err := os.ReadFile(filepath.Join(r.RunDir, "containerd-rootless", "child_pid"))
	if err != nil {
		return nil, err
	}
	return r.Command(ctx, "nsenter", append([]string{"-U", "--preserve-credentials", "-m", "-n",
		"-t", strings.TrimSpace(string(dt)), "-w" + r.Home, name}, args...)...), nil
}

type idPair struct{ uid, gid int }

// rootlessUser finds RootlessUser, creating it (and its subordinate IDs,
// which its user namespace maps) when missing.
func rootlessUser() (idPair, error) {
	u, err := user.Lookup(RootlessUser)
	if err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", RootlessUser).CombinedOutput(); err != nil {
			return idPair{}, errors.Errorf("creating user %s: %v: %s", RootlessUser, err, out)
		}
		if u, err = user.Lookup(RootlessUser); err != nil {
			return idPair{}, err
		}
	}
	for _, f := range []struct{ file, flag string }{{"/etc/subuid", "--add-subuids"}, {"/etc/subgid", "--add-subgids"}} {
		dt, _ := os.ReadFile(f.file)
		if strings.Contains("\n"+string(dt), "\n"+RootlessUser+":") {
			continue
		}
		if out, err := exec.Command("usermod", f.flag, "400000-465535", RootlessUser).CombinedOutput(); err != nil {
			return idPair{}, errors.Errorf("giving %s subordinate IDs: %v: %s", RootlessUser, err, out)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return idPair{uid, gid}, nil
}

// DelegateCgroup makes a cgroup the user may create its containers'
// cgroups under (and freeze them in), as systemd delegates one to a user's
// session: on cgroup v1 one per controller, on v2 one in the unified
// hierarchy. It returns the cgroup's path and a function that removes it.
func (r *Rootless) DelegateCgroup(name string) (string, func(), error) {
	var dirs []string
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		dirs = []string{filepath.Join("/sys/fs/cgroup", name)}
	} else {
		entries, err := os.ReadDir("/sys/fs/cgroup")
		if err != nil {
			return "", nil, err
		}
		for _, e := range entries {
			if fi, err := os.Lstat(filepath.Join("/sys/fs/cgroup", e.Name())); err != nil || !fi.IsDir() || e.Name() == "unified" {
				continue
			}
			dirs = append(dirs, filepath.Join("/sys/fs/cgroup", e.Name(), name))
		}
	}
	remove := func() {
		for _, d := range dirs {
			removeCgroup(d)
		}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			remove()
			return "", nil, err
		}
		// cpuset's children start with no CPU and no memory node.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if dt, err := os.ReadFile(filepath.Join(filepath.Dir(d), f)); err == nil {
				_ = os.WriteFile(filepath.Join(d, f), dt, 0o644)
			}
		}
		if err := chownTree(d, r.UID, r.GID); err != nil {
			remove()
			return "", nil, err
		}
	}
	return "/" + name, remove, nil
}

// removeCgroup removes a cgroup and the ones under it, deepest first.
func removeCgroup(d string) {
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		if e.IsDir() {
			removeCgroup(filepath.Join(d, e.Name()))
		}
	}
	_ = os.Remove(d)
}

// chownTree gives a tree to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// String names the user and the socket.
func (r *Rootless) String() string {
	return fmt.Sprintf("rootless containerd of %s at %s", RootlessUser, r.Addr)
}
