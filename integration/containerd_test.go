package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/opencontainers/image-spec/identity"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

const baseName = "docker.io/library/busybox:latest"

var imported sync.Map // namespace → error

// ctrd returns a containerd client for namespace ns with the busybox base
// image imported there.
func ctrd(t *testing.T, ns string) *containerd.Client {
	t.Helper()
	c, err := containerd.New(env.ctrd.Addr, containerd.WithDefaultNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	v, _ := imported.LoadOrStore(ns, &sync.Once{})
	v.(*sync.Once).Do(func() {
		if _, err := env.ctrd.Ctr(context.Background(), ns, "images", "import", "--base-name", "docker.io/library/busybox", env.base.Tar); err != nil {
			t.Fatalf("importing the base image into %s: %v", ns, err)
		}
	})
	return c
}

// container is a real container started with `ctr run`.
type container struct {
	ns, id string
	c      *containerd.Client
}

// startContainer runs script in a new busybox container; with wait it waits
// for the task to exit (a stopped container), else it leaves it running.
func startContainer(t *testing.T, ns, snapshotter, id, script string, wait bool) *container {
	t.Helper()
	return startContainerFrom(t, ns, snapshotter, baseName, id, script, wait)
}

// startContainerFrom is startContainer on another image of the namespace.
func startContainerFrom(t *testing.T, ns, snapshotter, image, id, script string, wait bool) *container {
	t.Helper()
	return startContainerWith(t, ns, snapshotter, image, id, nil, script, wait)
}

// startContainerWith is startContainerFrom with container labels.
func startContainerWith(t *testing.T, ns, snapshotter, image, id string, labels map[string]string, script string, wait bool) *container {
	t.Helper()
	c := ctrd(t, ns)
	args := []string{"run", "-d", "--snapshotter", snapshotter}
	for k, v := range labels {
		args = append(args, "--label", k+"="+v)
	}
	args = append(args, image, id, "sh", "-c", script)
	if _, err := env.ctrd.Ctr(context.Background(), ns, args...); err != nil {
		t.Fatal(err)
	}
	ct := &container{ns: ns, id: id, c: c}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "kill", "-s", "KILL", id)
		time.Sleep(200 * time.Millisecond)
		_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "rm", "-f", id)
		_, _ = env.ctrd.Ctr(ctx, ns, "containers", "rm", id)
	})
	if wait {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if ct.status(t) == containerd.Stopped {
				return ct
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("container %s did not stop", id)
	}
	// Wait for the script to reach its final sleep.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(ct.root(t), "ready")); err == nil {
			return ct
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container %s did not get ready", id)
	return nil
}

func (ct *container) task(t *testing.T) containerd.Task {
	t.Helper()
	ctx := context.Background()
	cont, err := ct.c.LoadContainer(ctx, ct.id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

func (ct *container) status(t *testing.T) containerd.ProcessStatus {
	t.Helper()
	st, err := ct.task(t).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Status
}

// root is the running container's root as its processes see it.
func (ct *container) root(t *testing.T) string {
	return fmt.Sprintf("/proc/%d/root", ct.task(t).Pid())
}

// snapshotTree mounts the container's snapshot read-only and summarises it.
func (ct *container) snapshotTree(t *testing.T, snapshotter string) map[string]string {
	t.Helper()
	ctx := context.Background()
	mounts, err := ct.c.SnapshotService(snapshotter).Mounts(ctx, ct.id)
	if err != nil {
		t.Fatal(err)
	}
	return mountedTree(t, mounts)
}

// upperdir is the upper directory of the container's overlay snapshot.
func (ct *container) upperdir(t *testing.T, snapshotter string) string {
	t.Helper()
	mounts, err := ct.c.SnapshotService(snapshotter).Mounts(context.Background(), ct.id)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				return v
			}
		}
	}
	t.Fatalf("container %s: no overlay upper directory in %+v", ct.id, mounts)
	return ""
}

// mountedTree mounts mounts read-only and summarises the tree.
func mountedTree(t *testing.T, mounts []mount.Mount) map[string]string {
	t.Helper()
	var tree map[string]string
	if err := mount.WithReadonlyTempMount(context.Background(), mounts, func(root string) error {
		tree = summarise(t, root)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return tree
}

// imageTree mounts a view of an image's unpacked snapshot and summarises it.
func imageTree(t *testing.T, c *containerd.Client, name, snapshotter string) map[string]string {
	t.Helper()
	ctx := context.Background()
	img, err := c.ImageService().Get(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := imageConfig(t, c, img)
	chain := identity.ChainID(cfg.RootFS.DiffIDs).String()
	sn := c.SnapshotService(snapshotter)
	if _, err := sn.Stat(ctx, chain); err != nil {
		t.Fatalf("image %s is not unpacked in %s: %v", name, snapshotter, err)
	}
	key := fmt.Sprintf("test-view-%d", time.Now().UnixNano())
	mounts, err := sn.View(ctx, key, chain)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Remove(ctx, key)
	return mountedTree(t, mounts)
}

func imageConfig(t *testing.T, c *containerd.Client, img images.Image) ocispecs.Image {
	t.Helper()
	var cfg ocispecs.Image
	readConfig(t, c, img, &cfg)
	return cfg
}

// dockerImageConfig is imageConfig with docker's fields (OnBuild,
// Healthcheck, Shell).
func dockerImageConfig(t *testing.T, c *containerd.Client, img images.Image) dockerspec.DockerOCIImage {
	t.Helper()
	var cfg dockerspec.DockerOCIImage
	readConfig(t, c, img, &cfg)
	return cfg
}

func readConfig(t *testing.T, c *containerd.Client, img images.Image, v any) {
	t.Helper()
	m := imageManifest(t, c, img)
	dt, err := content.ReadBlob(context.Background(), c.ContentStore(), m.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dt, v); err != nil {
		t.Fatal(err)
	}
}

func imageManifest(t *testing.T, c *containerd.Client, img images.Image) ocispecs.Manifest {
	t.Helper()
	dt, err := content.ReadBlob(context.Background(), c.ContentStore(), img.Target)
	if err != nil {
		t.Fatal(err)
	}
	var m ocispecs.Manifest
	if err := json.Unmarshal(dt, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// summarise describes every entry of a tree: type, mode, owner, size,
// content hash, link target, device number, capability xattr, and mtime for
// everything but directories (extracting into a directory changes its mtime),
// to the second: every layer writer of this ecosystem (containerd's archive
// package, which BuildKit and docker use) truncates mtimes to seconds.
func summarise(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%s %o %d:%d", fi.Mode().Type(), fi.Mode().Perm()|fi.Mode()&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), st.Uid, st.Gid)
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" size=%d sha=%s", fi.Size(), hex.EncodeToString(h.Sum(nil))[:16])
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					s += " link=" + first
				} else {
					inodes[st.Ino] = rel
				}
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			s += " -> " + target
		case fi.Mode()&(fs.ModeDevice|fs.ModeCharDevice) != 0:
			s += fmt.Sprintf(" dev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if v, err := getxattr(p, "security.capability"); err == nil {
			s += " cap=" + hex.EncodeToString([]byte(v))
		}
		if !fi.IsDir() {
			s += " mtime=" + fi.ModTime().UTC().Truncate(time.Second).Format(time.RFC3339)
		}
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// diffTrees reports the differences between two summaries.
func diffTrees(t *testing.T, what string, want, got map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("missing %q: %s", k, v))
		} else if g != v {
			diffs = append(diffs, fmt.Sprintf("%q:\n  want %s\n  got  %s", k, v, g))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %q: %s", k, v))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("%s: %d differences:\n%s", what, len(diffs), strings.Join(diffs, "\n"))
	}
}

// hostileChanges changes a container's rootfs from the host, through the
// container's own view of it, with everything a layer must keep.
func hostileChanges(t *testing.T, root string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2021, 6, 7, 8, 9, 10, 0, time.UTC)
	d := filepath.Join(root, "fidelity")
	must(os.MkdirAll(d, 0o755))
	must(os.WriteFile(filepath.Join(d, "owned"), []byte("owned by 1000\n"), 0o640))
	must(os.Lchown(filepath.Join(d, "owned"), 1000, 1001))
	must(os.WriteFile(filepath.Join(d, "setuid"), []byte("su"), 0o755))
	must(os.Chmod(filepath.Join(d, "setuid"), 0o755|os.ModeSetuid))
	must(os.Mkdir(filepath.Join(d, "sticky"), 0o755))
	must(os.Chmod(filepath.Join(d, "sticky"), 0o777|os.ModeSticky|os.ModeSetgid))
	must(os.WriteFile(filepath.Join(d, "ping"), []byte("ping"), 0o755))
	capV := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(unix.Lsetxattr(filepath.Join(d, "ping"), "security.capability", capV, 0))
	must(os.Symlink("/etc/shadow", filepath.Join(d, "abs-escape")))
	must(os.Symlink("../../../../../../etc/passwd", filepath.Join(d, "rel-escape")))
	must(os.WriteFile(filepath.Join(d, "linked"), []byte("two names"), 0o644))
	must(os.Link(filepath.Join(d, "linked"), filepath.Join(d, "linked2")))
	must(unix.Mknod(filepath.Join(d, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(unix.Mkfifo(filepath.Join(d, "fifo"), 0o600))
	f, err := os.Create(filepath.Join(d, "sparse"))
	must(err)
	_, err = f.WriteAt([]byte("end"), 8<<20)
	must(err)
	must(f.Close())
	must(os.WriteFile(filepath.Join(d, "with space\nand newline"), []byte("n"), 0o644))
	must(os.WriteFile(filepath.Join(d, "latin1-\xe9t\xe9"), []byte("l"), 0o644))
	must(os.WriteFile(filepath.Join(d, strings.Repeat("n", 255)), []byte("longest name"), 0o644))
	for _, n := range []string{"owned", "setuid", "ping", "linked", "sparse", "with space\nand newline", "latin1-\xe9t\xe9"} {
		must(os.Chtimes(filepath.Join(d, n), at, at))
	}
	must(unix.Lutimes(filepath.Join(d, "abs-escape"), []unix.Timeval{unix.NsecToTimeval(at.UnixNano()), unix.NsecToTimeval(at.UnixNano())}))
	// Deleted file, and a directory replaced by a new one (opaque).
	must(os.Remove(filepath.Join(root, "bin", "vi")))
	must(os.RemoveAll(filepath.Join(root, "etc")))
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc", "only-new"), []byte("new etc"), 0o644))
}

// writeViaMount mounts a snapshot's mounts and writes files into it.
func writeViaMount(t *testing.T, mounts []mount.Mount, files map[string]string) {
	t.Helper()
	if err := mount.WithTempMount(context.Background(), mounts, func(root string) error {
		for p, c := range files {
			if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
