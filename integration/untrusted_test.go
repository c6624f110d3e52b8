package integration

// Tests of a commit of an untrusted container: whatever it holds or does
// during the commit, no host byte reaches the image, no change is lost
// silently, the commit never hangs, and the container is never left paused.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	cfcontainer "github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/exporter"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// commitOCI commits a container to an OCI tarball and reads it back.
func commitOCI(t *testing.T, ns, id string, extra ...string) (*ociImage, map[string]string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out.tar")
	md := filepath.Join(t.TempDir(), "md.json")
	args := append([]string{"commit"}, ctrArgs(ns)...)
	args = append(args, "--output", "type=oci,dest="+out, "--metadata-file", md)
	args = append(args, extra...)
	cf(t, "", append(args, id)...)
	return readOCITar(t, out), readMetadata(t, md)
}

// readMetadata reads a metadata file: each value as a string, a JSON
// object (decoded from base64 as buildctl writes it) as its JSON text.
func readMetadata(t *testing.T, path string) map[string]string {
	t.Helper()
	dt, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	mustJSON(t, dt, &raw)
	out := map[string]string{}
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		} else {
			out[k] = string(v)
		}
	}
	return out
}

func changeSetOf(t *testing.T, md map[string]string) changeset.Manifest {
	t.Helper()
	var m changeset.Manifest
	mustJSON(t, []byte(md["commit-frontend.changeset"]), &m)
	return m
}

// TestCommitCompressionMagicNames: a first entry named like a compressed
// stream (bzip2's "BZh", gzip, xz, zstd and its skippable frames) must not
// make BuildKit copy the change set instead of extracting it.
func TestCommitCompressionMagicNames(t *testing.T) {
	const ns = "default"
	for i, name := range []string{"BZh", "BZh91AY&SY", "\x1f\x8b\x08", "\xfd7zXZ", "(\xb5/\xfd", "P*M\x18"} {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			id := "magic-" + strconv.Itoa(i)
			ct := startContainer(t, ns, "overlayfs", id, "touch /ready; exec sleep 3600", false)
			root := ct.root(t)
			if err := os.MkdirAll(filepath.Join(root, name), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFiles(t, root, map[string]string{name + "/inside": "kept " + name})
			img, _ := commitOCI(t, ns, id)
			layer := layerEntries(t, img.Layers[len(img.Layers)-1])
			if _, ok := layer["changes.tar"]; ok {
				t.Fatalf("the image holds the change set's tar instead of its contents: %q", keys(layer))
			}
			if e, ok := layer[name+"/inside"]; !ok || string(e.Data) != "kept "+name {
				t.Fatalf("%q/inside missing from the layer: %q", name, keys(layer))
			}
		})
	}
}

// TestCommitSkipsSockets: unix sockets are left out, as docker and
// containerd leave them out, and counted in the metadata file.
func TestCommitSkipsSockets(t *testing.T) {
	const ns = "default"
	for _, snapshotter := range []string{"overlayfs", "native"} {
		t.Run(snapshotter, func(t *testing.T) {
			id := "sockets-" + snapshotter
			ct := startContainer(t, ns, snapshotter, id, "mkdir -p /srv/app /tmp/.X11-unix; echo data > /srv/app/data; touch /ready; exec sleep 3600", false)
			root := ct.root(t)
			for _, p := range []string{"srv/app/app.sock", "tmp/.X11-unix/X0"} {
				if err := unix.Mknod(filepath.Join(root, p), unix.S_IFSOCK|0o777, 0); err != nil {
					t.Fatal(err)
				}
			}
			img, md := commitOCI(t, ns, id)
			layer := layerEntries(t, img.Layers[len(img.Layers)-1])
			if _, ok := layer["srv/app/app.sock"]; ok {
				t.Errorf("the socket is in the layer")
			}
			if e := layer["srv/app/data"]; string(e.Data) != "data\n" {
				t.Errorf("srv/app/data missing: %q", keys(layer))
			}
			if _, ok := layer["tmp/.X11-unix"]; !ok {
				t.Errorf("the socket's directory is missing: %q", keys(layer))
			}
			if n := md["commit-frontend.sockets-skipped"]; n != "2" {
				t.Errorf("commit-frontend.sockets-skipped = %q, want 2", n)
			}
			if cs := changeSetOf(t, md); cs.Sockets != 2 {
				t.Errorf("change set counts %d sockets, want 2", cs.Sockets)
			}
		})
	}
}

// TestCommitUserOverlayXattrs: on a rootful overlay, user.overlay.* are
// ordinary attributes any container user may set. They must neither delete
// base content nor fail the commit.
func TestCommitUserOverlayXattrs(t *testing.T) {
	const ns = "default"
	const id = "user-xattrs"
	ct := startContainer(t, ns, "overlayfs", id, "mkdir -p /opt/keep /srv; echo new > /opt/keep/new; touch /ready; exec sleep 3600", false)
	root := ct.root(t)
	if err := unix.Setxattr(filepath.Join(root, "bin"), "user.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(root, "srv"), "user.overlay.redirect", []byte("/bin"), 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(root, "opt/keep/new"), "user.overlay.metacopy", []byte(""), 0); err != nil {
		t.Fatal(err)
	}
	ref := "example.com/user-xattrs:1"
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id, ref)...)
	tree := imageTree(t, ct.c, ref, "overlayfs")
	for _, p := range []string{"bin/sh", "bin/ls", "bin/busybox", "opt/keep/new"} {
		if _, ok := tree[p]; !ok {
			t.Errorf("%s is missing from the image", p)
		}
	}
}

// TestCommitHardLinkToBase: a link the container makes to a file of its
// base image stays a link in the image, also when buildkitd has the base
// unpacked from its blob (whole-second mtimes), as after a prune.
func TestCommitHardLinkToBase(t *testing.T) {
	const ns = "default"
	const id = "link-to-base"
	startContainer(t, ns, "overlayfs", id, "ln /bin/busybox /bin/bb-link; touch /ready; exec sleep 3600", false)
	if out, err := exec.Command(tool("buildctl"), "--addr", env.bk.Addr, "prune", "--all").CombinedOutput(); err != nil {
		t.Fatalf("buildctl prune: %v\n%s", err, out)
	}
	img, _ := commitOCI(t, ns, id)
	layer := layerEntries(t, img.Layers[len(img.Layers)-1])
	a, aok := layer["bin/busybox"]
	b, bok := layer["bin/bb-link"]
	if !aok || !bok {
		t.Fatalf("the layer lacks one of the two names: %q", keys(layer))
	}
	reg, link := a, b
	if a.Header.Typeflag == tar.TypeLink {
		reg, link = b, a
	}
	if link.Header.Typeflag != tar.TypeLink || reg.Header.Typeflag != tar.TypeReg {
		t.Fatalf("bin/busybox (type %c) and bin/bb-link (type %c) are not one file and a link to it", a.Header.Typeflag, b.Header.Typeflag)
	}
	if reg.Header.ModTime.Nanosecond() != 0 {
		t.Errorf("the layer keeps a sub-second mtime: %v", reg.Header.ModTime)
	}
}

// TestCommitSwapRace: a container that keeps swapping a file for a symlink
// to a host file, a fifo and a device, and a directory for a symlink to a
// host directory, committed many times without pausing: no host byte in any
// image, no commit hangs.
func TestCommitSwapRace(t *testing.T) {
	const ns = "default"
	const id = "swap-race"
	secretDir := t.TempDir()
	marker := "HOST-SECRET-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	writeFiles(t, secretDir, map[string]string{"f": marker, "secret": marker})
	script := fmt.Sprintf(`mkdir -p /race/d; echo container > /race/d/secret; echo container > /race/f; touch /ready
while :; do
  echo container > /race/n; mv /race/n /race/f
  ln -s %[1]s/f /race/n; mv /race/n /race/f
  mkfifo /race/n; mv /race/n /race/f
  mknod /race/n c 1 5; mv /race/n /race/f
  mv /race/d /race/d.old; ln -s %[1]s /race/d; rm /race/d; mv /race/d.old /race/d
done`, secretDir)
	startContainer(t, ns, "overlayfs", id, script, false)
	commits := 30
	if v, err := strconv.Atoi(os.Getenv("CF_RACE_COMMITS")); err == nil {
		commits = v
	}
	ok := 0
	for i := 0; i < commits; i++ {
		out := filepath.Join(t.TempDir(), "out.tar")
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		cmd := exec.CommandContext(ctx, env.cli, append(append([]string{"commit"}, ctrArgs(ns)...), "--pause=false", "--output", "type=oci,dest="+out, id)...)
		cmd.Env = append(os.Environ(), "BUILDKIT_HOST="+env.bk.Addr)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		hung := ctx.Err() != nil
		cancel()
		if hung {
			t.Fatalf("commit %d hung:\n%s", i, stderr.String())
		}
		if err != nil {
			if !strings.Contains(stderr.String(), "changed") {
				t.Fatalf("commit %d failed for another reason than a change during the read: %v\n%s", i, err, stderr.String())
			}
			continue
		}
		ok++
		img := readOCITar(t, out)
		for _, l := range img.Layers {
			if bytes.Contains(l, []byte(marker)) {
				t.Fatalf("commit %d: host content in the image", i)
			}
		}
	}
	t.Logf("%d of %d commits succeeded; the others saw a change and said so", ok, commits)
	if ok == 0 {
		t.Errorf("no commit succeeded")
	}
}

// TestCommitSignalsResume: whatever signal ends a commit while the
// container is paused, and however many, the container ends running and no
// lease is left.
func TestCommitSignalsResume(t *testing.T) {
	const ns = "default"
	for _, tc := range []struct {
		name string
		sigs []syscall.Signal
	}{
		{"SIGHUP", []syscall.Signal{syscall.SIGHUP}},
		{"SIGQUIT", []syscall.Signal{syscall.SIGQUIT}},
		{"three SIGINTs", []syscall.Signal{syscall.SIGINT, syscall.SIGINT, syscall.SIGINT}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "signals-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			ct := startContainer(t, ns, "overlayfs", id, bigChange, false)
			ref := "example.com/signalled:1"
			cmd, _, stderr := startCommit(t, append(ctrArgs(ns), id, ref)...)
			waitPaused(t, ct, cmd)
			for _, s := range tc.sigs {
				if err := cmd.Process.Signal(s); err != nil {
					t.Fatal(err)
				}
			}
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("the signalled commit succeeded:\n%s", stderr)
			}
			if code := cmd.ProcessState.ExitCode(); code != 130 {
				t.Errorf("exit code %d, want 130 (stderr:\n%s)", code, stderr)
			}
			checkNothingLeft(t, ct, ref)
		})
	}
}

// waitPaused waits until the commit has paused the container.
func waitPaused(t *testing.T, ct *container, cmd *exec.Cmd) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if ct.status(t) == containerd.Paused {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	t.Fatal("the commit never paused the container")
}

// TestCommitKilledWhilePaused: a commit killed with SIGKILL cannot resume
// the container; the next commit of it does, says so, and removes the
// killed commit's lease.
func TestCommitKilledWhilePaused(t *testing.T) {
	const ns = "default"
	const id = "killed-paused"
	ct := startContainer(t, ns, "overlayfs", id, bigChange, false)
	cmd, _, _ := startCommit(t, append(ctrArgs(ns), id, "example.com/killed:1")...)
	waitPaused(t, ct, cmd)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if st := ct.status(t); st != containerd.Paused {
		t.Fatalf("container %s after SIGKILL; the test needs it paused", st)
	}
	r := cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id, "example.com/killed:2")...)
	if !strings.Contains(r.stderr, "left paused by an earlier commit") {
		t.Errorf("the second commit did not say it resumed the container:\n%s", r.stderr)
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("container %s after the second commit", st)
	}
	out, err := env.ctrd.Ctr(context.Background(), ns, "leases", "ls", "-q")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("leases left: %q %v", out, err)
	}
}

// TestCommitUserPaused: a container the user paused stays paused.
func TestCommitUserPaused(t *testing.T) {
	const ns = "default"
	const id = "user-paused"
	ct := startContainer(t, ns, "overlayfs", id, "echo p > /p; touch /ready; exec sleep 3600", false)
	if err := ct.task(t).Pause(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ct.task(t).Resume(context.Background()) })
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id, "example.com/user-paused:1")...)
	if st := ct.status(t); st != containerd.Paused {
		t.Errorf("container %s after the commit, want paused as the user left it", st)
	}
}

// TestCommitCompressionNotCached: the second commit of the same changes
// with another compression or level gets a layer written that way, and the
// base's layers keep their blobs.
func TestCommitCompressionNotCached(t *testing.T) {
	const ns = "default"
	const id = "compression-twice"
	startContainer(t, ns, "overlayfs", id, "head -c 300000 /dev/urandom | od > /data; touch /ready; exec sleep 3600", false)
	base := baseImage(t)
	gz, _ := commitOCI(t, ns, id)
	zst, _ := commitOCI(t, ns, id, "--compression=zstd")
	gz1, _ := commitOCI(t, ns, id, "--compression-level=1")
	last := func(img *ociImage) ocispecs.Descriptor { return img.Manifest.Layers[len(img.Manifest.Layers)-1] }
	if mt := last(gz).MediaType; mt != ocispecs.MediaTypeImageLayerGzip {
		t.Errorf("first commit: %s", mt)
	}
	if mt := last(zst).MediaType; mt != ocispecs.MediaTypeImageLayerZstd {
		t.Errorf("--compression=zstd after a gzip commit of the same changes gave %s", mt)
	}
	if last(gz1).Digest == last(gz).Digest || last(gz1).Size <= last(gz).Size {
		t.Errorf("--compression-level=1 gave the level-6 blob again (%s, %d bytes vs %d)", last(gz1).Digest, last(gz1).Size, last(gz).Size)
	}
	if gz.Config.RootFS.DiffIDs[len(base.Manifest.Layers)] != zst.Config.RootFS.DiffIDs[len(base.Manifest.Layers)] {
		t.Errorf("the same changes gave different layer contents")
	}
	for _, img := range []*ociImage{zst, gz1} {
		for i, l := range base.Manifest.Layers {
			if img.Manifest.Layers[i].Digest != l.Digest {
				t.Errorf("base layer %d changed blob: %s, want %s", i, img.Manifest.Layers[i].Digest, l.Digest)
			}
		}
	}

	// The same into containerd's image store, where the layer is
	// gzipped on its way in (or written by BuildKit for zstd).
	c := ctrd(t, ns)
	storeTop := func(args ...string) ocispecs.Descriptor {
		t.Helper()
		ref := "example.com/compression-twice:store"
		cf(t, "", append(append(append([]string{"commit"}, ctrArgs(ns)...), args...), id, ref)...)
		m := imageManifest(t, c, mustImage(t, c, ref))
		return m.Layers[len(m.Layers)-1]
	}
	sgz := storeTop()
	szst := storeTop("--compression=zstd")
	sgz1 := storeTop("--compression-level=1")
	if sgz.MediaType != ocispecs.MediaTypeImageLayerGzip || szst.MediaType != ocispecs.MediaTypeImageLayerZstd {
		t.Errorf("store: gzip commit %s, then zstd commit %s", sgz.MediaType, szst.MediaType)
	}
	if sgz1.Digest == sgz.Digest {
		t.Errorf("store: --compression-level=1 gave the default level's blob again (%s)", sgz1.Digest)
	}
}

// TestCommitStateDir: locks and pause records live where only root can
// write; a directory or lock file that another user made or that is a
// symlink is refused before the container is paused, and TMPDIR has no say.
func TestCommitStateDir(t *testing.T) {
	const ns = "default"
	const id = "state-dir"
	// 50 MB of changes keep the container paused long enough for the
	// test to stop the commit that paused it.
	ct := startContainer(t, ns, "overlayfs", id, "head -c 50000000 /dev/urandom > /s; touch /ready; exec sleep 3600", false)
	args := append(append([]string{"commit"}, ctrArgs(ns)...), id)

	runWith := func(envs ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, env.cli, args...)
		cmd.Env = append(append(os.Environ(), "BUILDKIT_HOST="+env.bk.Addr), envs...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return result{stdout.String(), stderr.String(), err}
	}
	t.Run("other owner", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		r := runWith(cfcontainer.StateDirEnv + "=" + dir)
		if r.err == nil || !strings.Contains(r.stderr, "belongs to uid 65534") {
			t.Errorf("a state directory of uid 65534 was accepted: %v\n%s", r.err, r.stderr)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		target := t.TempDir()
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Symlink(target, dir); err != nil {
			t.Fatal(err)
		}
		r := runWith(cfcontainer.StateDirEnv + "=" + dir)
		if r.err == nil || !strings.Contains(r.stderr, "not a symlink") {
			t.Errorf("a symlinked state directory was accepted: %v\n%s", r.err, r.stderr)
		}
	})
	t.Run("symlinked lock file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "state")
		victim := filepath.Join(t.TempDir(), "victim")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// A lock file for every name the commit might use is planted by
		// making the first run create them, then replacing each.
		if r := runWith(cfcontainer.StateDirEnv + "=" + dir); r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) == 0 {
			t.Fatal("the commit made no lock file")
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name())
			_ = os.Remove(p)
			if err := os.Symlink(victim, p); err != nil {
				t.Fatal(err)
			}
		}
		r := runWith(cfcontainer.StateDirEnv + "=" + dir)
		if r.err == nil {
			t.Errorf("a symlinked lock file was accepted:\n%s", r.stderr)
		}
		if _, err := os.Lstat(victim); err == nil {
			t.Errorf("the commit created the symlink's target")
		}
	})
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("container %s", st)
	}
	t.Run("TMPDIR has no say", func(t *testing.T) {
		// The first commit is stopped while it holds the lock; a second
		// one with another TMPDIR must wait for it and say for whom.
		first := exec.Command(env.cli, args...)
		first.Env = append(os.Environ(), "BUILDKIT_HOST="+env.bk.Addr, "TMPDIR="+t.TempDir())
		var ferr syncBuffer
		first.Stderr = &ferr
		if err := first.Start(); err != nil {
			t.Fatal(err)
		}
		waitPaused(t, ct, first)
		if err := first.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		second := exec.Command(env.cli, args...)
		second.Env = append(os.Environ(), "BUILDKIT_HOST="+env.bk.Addr, "TMPDIR="+t.TempDir())
		var serr syncBuffer
		second.Stderr = &serr
		if err := second.Start(); err != nil {
			t.Fatal(err)
		}
		waitForOutput(t, &serr, "waiting for commit-frontend process "+strconv.Itoa(first.Process.Pid))
		_ = first.Process.Signal(syscall.SIGCONT)
		if err := first.Wait(); err != nil {
			t.Errorf("first commit: %v\n%s", err, ferr.String())
		}
		if err := second.Wait(); err != nil {
			t.Errorf("second commit: %v\n%s", err, serr.String())
		}
	})
}

// TestCommitBadInputBeforePause: input the commit would refuse late is
// refused before the container is paused or read.
func TestCommitBadInputBeforePause(t *testing.T) {
	const ns = "default"
	const id = "bad-before-pause"
	ct := startContainer(t, ns, "overlayfs", id, "echo x > /x; touch /ready; exec sleep 3600", false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, errs := ct.c.Subscribe(ctx, `topic=="/tasks/paused"`)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"line continuation in --change", []string{"-c", "ENV A=1 \\\n B=2"}, "--change 1"},
		{"bad --progress", []string{"--progress", "fancy"}, "--progress=fancy"},
		{"gzip level out of range", []string{"--compression-level", "99"}, "--compression-level=99"},
		{"zstd level out of range", []string{"--compression", "zstd", "--compression-level", "40"}, "--compression-level=40"},
		{"bad compression in --output", []string{"--output", "type=oci,dest=/dev/null,compression=lz4"}, "--output 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"commit"}, ctrArgs(ns)...), tc.args...)
			r := cfFail(t, "", append(args, id)...)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, r.stderr)
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case e := <-events:
		t.Errorf("the container was paused: %v", e)
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("container %s", st)
	}
}

// TestCommitRemovedTree: removing a whole base directory is one deletion,
// with either reader.
func TestCommitRemovedTree(t *testing.T) {
	const ns = "default"
	for _, snapshotter := range []string{"overlayfs", "native"} {
		t.Run(snapshotter, func(t *testing.T) {
			id := "rm-tree-" + snapshotter
			startContainer(t, ns, snapshotter, id, "cp /bin/busybox /busybox; /busybox rm -rf /bin; /busybox touch /ready; exec /busybox sleep 3600", false)
			img, md := commitOCI(t, ns, id)
			if cs := changeSetOf(t, md); cs.Whiteouts != 1 {
				t.Errorf("%d removals for one removed directory", cs.Whiteouts)
			}
			layer := layerEntries(t, img.Layers[len(img.Layers)-1])
			if _, ok := layer[".wh.bin"]; !ok {
				t.Errorf("the layer does not remove /bin: %q", keys(layer))
			}
		})
	}
}

// TestCommitEscapesNames: a name the container chose never reaches the
// terminal raw.
func TestCommitEscapesNames(t *testing.T) {
	const ns = "default"
	const id = "escape-names"
	ct := startContainer(t, ns, "overlayfs", id, "touch /ready; exec sleep 3600", false)
	name := "evil\x1b]0;owned\x07\x1b[31mred\ncommit-frontend: forged line"
	f, err := os.Create(filepath.Join(ct.root(t), name))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := cfFail(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id)...)
	if strings.ContainsAny(r.stderr, "\x1b\x07") {
		t.Errorf("raw control characters on stderr: %q", r.stderr)
	}
	if strings.Contains(r.stderr, "\ncommit-frontend: forged line") {
		t.Errorf("a line break in a name forged a line on stderr: %q", r.stderr)
	}
	if !strings.Contains(r.stderr, "sparse") {
		t.Errorf("stderr does not say what failed: %q", r.stderr)
	}
}

// TestSessionStoreConfined: what buildkitd gets through the session reads
// the base image's blobs and what it wrote, and nothing else of the
// namespace; it can neither delete nor relabel.
func TestSessionStoreConfined(t *testing.T) {
	const ns = "default"
	c := ctrd(t, ns)
	ctx, done, err := c.WithLease(context.Background(), leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	defer done(context.WithoutCancel(ctx))
	img, err := c.ImageService().Get(ctx, baseName)
	if err != nil {
		t.Fatal(err)
	}
	manifest, _, err := cfcontainer.PlatformManifest(ctx, c.ContentStore(), img.Target, platforms.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	other := []byte("a blob of another image " + time.Now().String())
	otherDesc := ocispecs.Descriptor{Digest: digest.FromBytes(other), Size: int64(len(other))}
	if err := content.WriteBlob(ctx, c.ContentStore(), "other", bytes.NewReader(other), otherDesc); err != nil {
		t.Fatal(err)
	}
	s, err := exporter.Confine(ctx, c.ContentStore(), manifest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(ctx, manifest.Digest); err != nil {
		t.Errorf("the base manifest is not readable: %v", err)
	}
	if _, err := s.Info(ctx, otherDesc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("another blob of the namespace is visible: %v", err)
	}
	if _, err := s.ReaderAt(ctx, otherDesc); !errdefs.IsNotFound(err) {
		t.Errorf("another blob of the namespace is readable: %v", err)
	}
	if err := s.Delete(ctx, manifest.Digest); !errdefs.IsPermissionDenied(err) {
		t.Errorf("delete through the session: %v", err)
	}
	if _, err := s.Update(ctx, content.Info{Digest: manifest.Digest, Labels: map[string]string{"x": "y"}}, "labels.x"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("relabel through the session: %v", err)
	}
	seen := 0
	if err := s.Walk(ctx, func(info content.Info) error {
		if info.Digest == otherDesc.Digest {
			t.Errorf("the walk shows another blob")
		}
		seen++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Errorf("the walk shows not even the base")
	}
	mine := []byte("written through the session " + time.Now().String())
	mineDesc := ocispecs.Descriptor{Digest: digest.FromBytes(mine), Size: int64(len(mine))}
	if err := content.WriteBlob(ctx, s, "mine", bytes.NewReader(mine), mineDesc); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(ctx, mineDesc.Digest); err != nil {
		t.Errorf("what the session wrote is not readable: %v", err)
	}
	if _, err := c.ContentStore().Info(ctx, otherDesc.Digest); err != nil {
		t.Errorf("the other blob is gone: %v", err)
	}

	// A writer for another image's blob answers that it exists, and no
	// more: it becomes neither readable nor labelable.
	if _, err := s.Writer(ctx, content.WithRef("probe"), content.WithDescriptor(otherDesc)); !errdefs.IsAlreadyExists(err) {
		t.Errorf("a writer for an existing blob: %v", err)
	}
	if _, err := s.Info(ctx, otherDesc.Digest); !errdefs.IsNotFound(err) {
		t.Errorf("after AlreadyExists, another blob is visible: %v", err)
	}
	if _, err := s.ReaderAt(ctx, otherDesc); !errdefs.IsNotFound(err) {
		t.Errorf("after AlreadyExists, another blob is readable: %v", err)
	}
	if _, err := s.Update(ctx, content.Info{Digest: otherDesc.Digest, Labels: map[string]string{"containerd.io/gc.ref.content.0": ""}}, "labels.containerd.io/gc.ref.content.0"); !errdefs.IsPermissionDenied(err) {
		t.Errorf("after AlreadyExists, another blob can be relabelled: %v", err)
	}

	// Another client's ingest in progress (a pull) is out of reach: not
	// listed, no status, not aborted, not resumed under its ref.
	const pullRef = "pull-in-progress"
	pw, err := c.ContentStore().Writer(ctx, content.WithRef(pullRef))
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	if _, err := pw.Write([]byte("half a layer")); err != nil {
		t.Fatal(err)
	}
	// An ingest of the same name through the session is its own.
	if sw, err := s.Writer(ctx, content.WithRef(pullRef)); err != nil {
		t.Errorf("an ingest of the same name through the session: %v", err)
	} else {
		if st, _ := sw.Status(); st.Offset != 0 || st.Ref != pullRef {
			t.Errorf("the session's ingest resumed another client's: %+v", st)
		}
		sw.Close()
	}
	half := int64(len("half a layer"))
	if st, err := s.Status(ctx, pullRef); err == nil && st.Offset == half {
		t.Errorf("another client's ingest has a status through the session: %+v", st)
	}
	sts, err := s.ListStatuses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if st.Offset == half {
			t.Errorf("another client's ingest is listed through the session: %+v", st)
		}
	}
	_ = s.Abort(ctx, pullRef)
	if st, err := c.ContentStore().Status(ctx, pullRef); err != nil || st.Offset != half {
		t.Errorf("another client's ingest after an abort through the session: %+v %v", st, err)
	}
}

// TestFaultContainerdRestartWhilePaused: containerd going away while the
// container is paused does not leave it paused: the resume is retried until
// containerd is back.
func TestFaultContainerdRestartWhilePaused(t *testing.T) {
	const ns = "default"
	const id = "ctrd-restart-paused"
	ct := startContainer(t, ns, "overlayfs", id, bigChange, false)
	ref := "example.com/ctrd-restart-paused:1"
	cmd, _, stderr := startCommit(t, append(ctrArgs(ns), id, ref)...)
	waitPaused(t, ct, cmd)
	env.ctrd.Stop()
	time.Sleep(2 * time.Second)
	if err := env.ctrd.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if st := ct.status(t); st != containerd.Running {
		t.Fatalf("container %s after containerd restarted (commit: %v)\n%s", st, err, stderr)
	}
	if err != nil {
		checkNothingLeft(t, ct, ref)
	}
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id, ref)...)
}

// TestCommitExclude: excluded paths are neither added nor removed.
func TestCommitExclude(t *testing.T) {
	const ns = "default"
	const id = "exclude"
	startContainer(t, ns, "overlayfs", id, "mkdir -p /var/cache/app /app; echo c > /var/cache/app/x; echo p > /app/a.py; echo c > /app/a.pyc; rm /bin/vi; touch /ready; exec sleep 3600", false)
	img, md := commitOCI(t, ns, id, "--exclude", "var/cache", "--exclude", "**/*.pyc", "--exclude", "bin/vi", "--exclude", "ready", "--no-pause")
	layer := layerEntries(t, img.Layers[len(img.Layers)-1])
	for _, p := range []string{"var/cache/app/x", "app/a.pyc", "bin/.wh.vi", "ready"} {
		if _, ok := layer[p]; ok {
			t.Errorf("%s is in the layer", p)
		}
	}
	if e := layer["app/a.py"]; string(e.Data) != "p\n" {
		t.Errorf("app/a.py missing: %q", keys(layer))
	}
	if n, _ := strconv.Atoi(md["commit-frontend.excluded"]); n < 4 {
		t.Errorf("commit-frontend.excluded = %q", md["commit-frontend.excluded"])
	}
	r := cfFail(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--exclude", "[", id)...)
	if !strings.Contains(r.stderr, "--exclude") {
		t.Errorf("a bad pattern: %s", r.stderr)
	}
}

// TestCommitReproducible: the same content committed at other times, with
// other file mtimes, gives the same image ID with --source-date-epoch and
// --rewrite-timestamp.
func TestCommitReproducible(t *testing.T) {
	const ns = "default"
	script := "mkdir -p /app; echo same > /app/f; touch /ready; exec sleep 3600"
	startContainer(t, ns, "overlayfs", "repro-1", script, false)
	time.Sleep(1100 * time.Millisecond)
	startContainer(t, ns, "overlayfs", "repro-2", script, false)
	args := []string{"--source-date-epoch", "1000000000", "--rewrite-timestamp"}
	a, _ := commitOCI(t, ns, "repro-1", args...)
	time.Sleep(1100 * time.Millisecond)
	b, _ := commitOCI(t, ns, "repro-2", args...)
	if a.ConfigID != b.ConfigID {
		t.Errorf("image IDs differ: %s and %s\n%+v\n%+v", a.ConfigID, b.ConfigID, a.Config.History, b.Config.History)
	}
	if a.Config.Created == nil || a.Config.Created.Unix() != 1000000000 {
		t.Errorf("created %v", a.Config.Created)
	}
	if e := layerEntries(t, a.Layers[len(a.Layers)-1])["app/f"]; e.Header == nil || e.Header.ModTime.Unix() != 1000000000 {
		t.Errorf("app/f mtime not clamped: %+v", e.Header)
	}
	c, _ := commitOCI(t, ns, "repro-2")
	if c.ConfigID == a.ConfigID {
		t.Errorf("without an epoch the commit gives the reproducible image too")
	}
}

// TestCommitSquash: --squash-since keeps the given image's layers and
// squashes the rest with the container's changes into one, keeping the
// history; repeated commits keep the layer count; --squash makes one layer.
func TestCommitSquash(t *testing.T) {
	const ns = "default"
	ctx := context.Background()
	c := ctrd(t, ns)
	commitTo := func(id, ref string, extra ...string) {
		t.Helper()
		cf(t, "", append(append(append([]string{"commit"}, ctrArgs(ns)...), extra...), id, ref)...)
	}
	get := func(ref string) (ocispecs.Image, ocispecs.Manifest) {
		t.Helper()
		img, err := c.ImageService().Get(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		return imageConfig(t, c, img), imageManifest(t, c, img)
	}
	runCat := func(ref, id string, files ...string) string {
		t.Helper()
		out, _ := env.ctrd.Ctr(ctx, ns, append([]string{"run", "--rm", ref, id, "cat"}, files...)...)
		return strings.TrimSpace(out)
	}
	baseCfg, baseMan := get(baseName)

	startContainer(t, ns, "overlayfs", "squash-1", "mkdir /app; echo 1 > /app/one; echo gone > /app/gone; touch /ready; exec sleep 3600", false)
	commitTo("squash-1", "example.com/squash:1")
	startContainerFrom(t, ns, "overlayfs", "example.com/squash:1", "squash-2", "echo 2 > /app/two; rm /app/gone; rm /ready; touch /ready; exec sleep 3600", false)
	commitTo("squash-2", "example.com/squash:2", "--squash-since", "busybox")
	cfg2, man2 := get("example.com/squash:2")
	if len(man2.Layers) != len(baseMan.Layers)+1 || man2.Layers[0].Digest != baseMan.Layers[0].Digest {
		t.Fatalf("squashed image layers %v, base %v", man2.Layers, baseMan.Layers)
	}
	nonEmpty := 0
	for _, h := range cfg2.History {
		if !h.EmptyLayer {
			nonEmpty++
		}
	}
	last := cfg2.History[len(cfg2.History)-1]
	if nonEmpty != len(man2.Layers) || len(cfg2.History) != len(baseCfg.History)+2 || !cfg2.History[len(cfg2.History)-2].EmptyLayer ||
		!strings.Contains(last.Comment, "squashed 2 layers above docker.io/library/busybox:latest into one") {
		t.Errorf("history: %+v", cfg2.History)
	}
	if out := runCat("example.com/squash:2", "squash-run-2", "/app/one", "/app/two"); out != "1\n2" {
		t.Errorf("run: %q", out)
	}
	if out := runCat("example.com/squash:2", "squash-run-2b", "/app/gone"); strings.Contains(out, "gone") {
		t.Errorf("a removed file came back")
	}

	startContainerFrom(t, ns, "overlayfs", "example.com/squash:2", "squash-3", "echo 3 > /app/three; rm /ready; touch /ready; exec sleep 3600", false)
	commitTo("squash-3", "example.com/squash:3", "--squash-since", "busybox")
	if _, man3 := get("example.com/squash:3"); len(man3.Layers) != len(man2.Layers) {
		t.Errorf("repeated squashed commits grow: %d layers, then %d", len(man2.Layers), len(man3.Layers))
	}
	if out := runCat("example.com/squash:3", "squash-run-3", "/app/one", "/app/two", "/app/three"); out != "1\n2\n3" {
		t.Errorf("run: %q", out)
	}

	commitTo("squash-3", "example.com/squash:all", "--squash")
	if _, manAll := get("example.com/squash:all"); len(manAll.Layers) != 1 {
		t.Errorf("--squash: %d layers", len(manAll.Layers))
	}
	if out := runCat("example.com/squash:all", "squash-run-all", "/app/three", "/bin/busybox"); !strings.HasPrefix(out, "3") {
		t.Errorf("run: %q", out[:min(len(out), 20)])
	}

	startContainer(t, ns, "overlayfs", "squash-other", "touch /ready; exec sleep 3600", false)
	r := cfFail(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--squash-since", "example.com/squash:1", "squash-other")...)
	if !strings.Contains(r.stderr, "not an ancestor") {
		t.Errorf("stderr: %s", r.stderr)
	}
}

// TestCommitProvenance: --provenance attaches BuildKit's SLSA provenance,
// naming the base image by digest, the container, its namespace and the
// change set: in the image store as an index that ctr still runs, and in
// an --output.
func TestCommitProvenance(t *testing.T) {
	const ns = "default"
	const id = "attested-ct"
	ctx := context.Background()
	c := ctrd(t, ns)
	startContainer(t, ns, "overlayfs", id, "echo p > /prov; touch /ready; exec sleep 3600", false)
	ref := "example.com/provenance:1"
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--provenance=mode=max", id, ref)...)
	img, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !images.IsIndexType(img.Target.MediaType) {
		t.Fatalf("the image is a %s, not an index with its attestation", img.Target.MediaType)
	}
	dt, err := content.ReadBlob(ctx, c.ContentStore(), img.Target)
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispecs.Index
	mustJSON(t, dt, &idx)
	var statement []byte
	for _, m := range idx.Manifests {
		if m.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			continue
		}
		man := imageManifest(t, c, images.Image{Target: m})
		for _, l := range man.Layers {
			if l.Annotations["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v0.2" || strings.Contains(l.Annotations["in-toto.io/predicate-type"], "slsa.dev/provenance") {
				if statement, err = content.ReadBlob(ctx, c.ContentStore(), l); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if statement == nil {
		t.Fatalf("no provenance in %+v", idx.Manifests)
	}
	bimg, err := c.ImageService().Get(ctx, baseName)
	if err != nil {
		t.Fatal(err)
	}
	bman, _, err := cfcontainer.PlatformManifest(ctx, c.ContentStore(), bimg.Target, platforms.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"container-" + ns + "-" + id, bman.Digest.String()} {
		if !strings.Contains(string(statement), want) {
			t.Errorf("the provenance does not name %s:\n%s", want, lastLines(string(statement), 40))
		}
	}
	out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", ref, "provenance-run", "cat", "/prov")
	if err != nil || strings.TrimSpace(out) != "p" {
		t.Errorf("run: %q %v", out, err)
	}
	collectGarbage(t, &container{ns: ns, id: id, c: c})
	if _, err := c.ContentStore().Info(ctx, idx.Manifests[len(idx.Manifests)-1].Digest); err != nil {
		t.Errorf("the garbage collector took the attestation: %v", err)
	}
	oci, _ := func() (string, error) {
		p := filepath.Join(t.TempDir(), "out.tar")
		cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--provenance", "--output", "type=oci,dest="+p, id)...)
		return p, nil
	}()
	raw, err := os.ReadFile(oci)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte("attestation-manifest")) {
		t.Errorf("the --output has no attestation")
	}
}

// TestCommitStreamsChanges: a paused container's change set streams: a
// 512 MiB change commits with TMPDIR on a 64 MiB tmpfs.
func TestCommitStreamsChanges(t *testing.T) {
	const ns = "default"
	const id = "streamed"
	startContainer(t, ns, "overlayfs", id, "head -c 536870912 /dev/urandom > /big; touch /ready; exec sleep 3600", false)
	tmp := t.TempDir()
	if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(tmp, unix.MNT_DETACH)
	ref := "example.com/streamed:1"
	r := runEnv(t, []string{"TMPDIR=" + tmp}, append(append([]string{"commit"}, ctrArgs(ns)...), id, ref)...)
	if r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.stderr)
	}
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "streamed-run", "wc", "-c", "/big")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "536870912") {
		t.Errorf("run: %q %v", out, err)
	}
}
