package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/internal/testenv"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/image-spec/identity"
)

// TestRootlessCommit commits a container of rootless containerd, as its
// user runs it with nerdctl's containerd-rootless.sh, with nothing else
// running: the CLI enters rootless containerd's namespaces as nerdctl does,
// runs the engine there with its state under the user's $XDG_DATA_HOME, and
// the image holds the container's files with the owners the container sees
// (not the host's subordinate IDs), written in place, a replaced directory
// with it. A build runs its RUN step there too. A
// container the user may not freeze is refused with a word on --pause=false,
// and left running.
func TestRootlessCommit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dl := exec.Command("go", "mod", "download", "-json", "github.com/containerd/nerdctl/v2")
	dl.Dir = env.repoRoot
	out, err := dl.Output()
	if err != nil {
		t.Fatalf("nerdctl's module (containerd-rootless.sh): %v", err)
	}
	var modDir string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), `"Dir": "`); ok {
			modDir = strings.TrimSuffix(v, `",`)
		}
	}
	r, err := testenv.StartRootless(ctx, filepath.Join(modDir, "extras", "rootless", "containerd-rootless.sh"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	if err := r.AddBin(env.cli); err != nil {
		t.Fatal(err)
	}
	tarball, err := r.Copy(env.base.Tar, r.Home)
	if err != nil {
		t.Fatal(err)
	}
	user := func(name string, args ...string) result {
		t.Helper()
		cmd := r.Command(ctx, name, args...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
	}
	inside := func(name string, args ...string) (string, error) {
		t.Helper()
		cmd, err := r.Inside(ctx, name, args...)
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			err = fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(string(out)), err
	}
	if out, err := inside("ctr", "images", "import", "--base-name", "docker.io/library/busybox", tarball); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	cgroup, removeCgroup, err := r.DelegateCgroup("cf-rootless-test")
	if err != nil {
		t.Fatal(err)
	}
	defer removeCgroup()
	id := "rootless-1"
	if out, err := inside("ctr", "run", "-d", "--cgroup", cgroup+"/"+id, "docker.io/library/busybox:latest", id, "sh", "-c",
		"echo hi > /hi; mkdir -p /srv; echo secret > /srv/owned; chown 33:44 /srv/owned; chmod 640 /srv/owned; rm /bin/vi; "+
			"rm -rf /etc; mkdir /etc; echo replaced > /etc/only; touch /ready; exec sleep 3600"); err != nil {
		t.Fatalf("ctr run: %v: %s", err, out)
	}
	defer inside("ctr", "tasks", "kill", "-s", "KILL", id)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := inside("ctr", "tasks", "exec", "--exec-id", "ready", id, "test", "-e", "/ready"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not get ready")
		}
		time.Sleep(200 * time.Millisecond)
	}

	md := filepath.Join(r.Home, "md.json")
	res := user("commit-frontend", "commit", "--metadata-file", md, "-m", "rootless", id, "example.com/rootless:1")
	if res.err != nil {
		t.Fatalf("commit as %s: %v\n%s", testenv.RootlessUser, res.err, res.stderr)
	}
	if !strings.HasPrefix(strings.TrimSpace(res.stdout), "sha256:") {
		t.Errorf("stdout %q", res.stdout)
	}
	if dt, err := os.ReadFile(md); err != nil || !strings.Contains(string(dt), `"commit-frontend.paused"`) || strings.Contains(string(dt), `"commit-frontend.paused": "0s"`) {
		t.Errorf("the metadata file says no pause: %s %v", dt, err)
	} else if !strings.Contains(string(dt), `"commit-frontend.transfer": "link"`) {
		// The replaced /etc too: marked opaque as a userxattr mount reads it.
		t.Errorf("not written in place: %s", dt)
	}
	// The engine's state is the user's; the locks are in its runtime
	// directory.
	if _, err := os.Stat(filepath.Join(r.Home, ".local", "share", "commit-frontend", "engine.lock")); err != nil {
		t.Errorf("the engine's state is not under the user's XDG_DATA_HOME: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.RunDir, "commit-frontend")); err != nil {
		t.Errorf("no state in the user's XDG_RUNTIME_DIR: %v", err)
	}
	if st, err := inside("ctr", "tasks", "ls"); err != nil || !strings.Contains(st, "RUNNING") {
		t.Errorf("after the commit: %s %v", st, err)
	}

	c, err := containerd.New(r.Addr, containerd.WithDefaultNamespace("default"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Owners and modes as the container sees them.
	m := imageManifest(t, c, mustImage(t, c, "example.com/rootless:1"))
	l := m.Layers[len(m.Layers)-1]
	blob, err := content.ReadBlob(ctx, c.ContentStore(), l)
	if err != nil {
		t.Fatal(err)
	}
	entries := layerEntries(t, decompress(t, blob, l.MediaType))
	for _, w := range []struct {
		path     string
		uid, gid int
		mode     int64
		data     string
	}{{"hi", 0, 0, 0o644, "hi\n"}, {"srv/owned", 33, 44, 0o640, "secret\n"}, {"srv", 0, 0, 0o755, ""}} {
		e, ok := entries[w.path]
		if !ok {
			t.Errorf("%s is not in the layer", w.path)
			continue
		}
		if e.Header.Uid != w.uid || e.Header.Gid != w.gid || e.Header.Mode&0o7777 != w.mode || string(e.Data) != w.data {
			t.Errorf("%s: %d:%d %o %q, want %d:%d %o %q", w.path, e.Header.Uid, e.Header.Gid, e.Header.Mode&0o7777, e.Data, w.uid, w.gid, w.mode, w.data)
		}
	}
	if _, ok := entries["bin/.wh.vi"]; !ok {
		t.Error("the removal of /bin/vi is not in the layer")
	}
	// The snapshots' paths are containerd's inside the namespaces: its
	// /var/lib/containerd is the user's $XDG_DATA_HOME/containerd.
	tree := func(key, parent string) map[string]string {
		t.Helper()
		sn := c.SnapshotService("overlayfs")
		var mounts []mount.Mount
		if parent == "" {
			mounts, err = sn.Mounts(ctx, key)
		} else {
			mounts, err = sn.View(ctx, key, parent)
			defer sn.Remove(ctx, key)
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range mounts {
			for j, o := range mounts[i].Options {
				mounts[i].Options[j] = strings.ReplaceAll(o, "/var/lib/containerd/", filepath.Join(r.Home, ".local", "share", "containerd")+"/")
			}
		}
		return mountedTree(t, mounts)
	}
	cfg := imageConfig(t, c, mustImage(t, c, "example.com/rootless:1"))
	diffTrees(t, "image vs container (rootless)", tree(id, ""), tree("test-view-rootless", identity.ChainID(cfg.RootFS.DiffIDs).String()))
	if out, err := inside("ctr", "run", "--rm", "--cgroup", cgroup+"/run-1", "example.com/rootless:1", "rootless-run-1", "cat", "/srv/owned", "/hi"); err != nil || out != "secret\nhi" {
		t.Errorf("run of the image: %q %v", out, err)
	}

	// A build: FROM the user's image store, RUN through rootless
	// containerd.
	ctxDir := filepath.Join(r.Home, "ctx")
	writeFiles(t, ctxDir, map[string]string{"Dockerfile": "FROM docker.io/library/busybox:latest\nRUN echo built > /built\n"})
	_ = os.Chown(ctxDir, r.UID, r.GID)
	_ = os.Chown(filepath.Join(ctxDir, "Dockerfile"), r.UID, r.GID)
	if res := user("commit-frontend", "build", "--progress", "quiet", "-t", "example.com/rootless-build:1", ctxDir); res.err != nil {
		t.Fatalf("build as %s: %v\n%s", testenv.RootlessUser, res.err, res.stderr)
	}
	if out, err := inside("ctr", "run", "--rm", "--cgroup", cgroup+"/run-2", "example.com/rootless-build:1", "rootless-run-2", "cat", "/built"); err != nil || out != "built" {
		t.Errorf("run of the build: %q %v", out, err)
	}

	// The engine's cache, the user's: du shows it, prune empties it.
	if res := user("commit-frontend", "du"); res.err != nil || !strings.Contains(res.stdout, "Total:") || strings.Count(res.stdout, "\n") < 4 {
		t.Errorf("du as %s: %v\n%s%s", testenv.RootlessUser, res.err, res.stdout, res.stderr)
	}
	if res := user("commit-frontend", "prune", "--all"); res.err != nil || !strings.Contains(res.stdout, "Total:") {
		t.Errorf("prune as %s: %v\n%s%s", testenv.RootlessUser, res.err, res.stdout, res.stderr)
	}

	// With no rootless containerd to enter, root's containerd refuses the
	// user, who is told what to run.
	res = user("env", "XDG_RUNTIME_DIR="+t.TempDir(), "commit-frontend", "commit", "--address", env.ctrd.Addr, id, "example.com/rootless:root")
	if res.err == nil || !strings.Contains(res.stderr, "containerd-rootless-setuptool.sh install") {
		t.Errorf("a user's commit on root's containerd: %v\n%s", res.err, res.stderr)
	}

	// A container whose freezer the user may not write: refused, running.
	if err := revokeFreeze(cgroup + "/" + id); err != nil {
		t.Fatal(err)
	}
	res = user("commit-frontend", "commit", id, "example.com/rootless:refused")
	if res.err == nil || !strings.Contains(res.stderr, "--pause=false") {
		t.Errorf("a commit that cannot pause: %v\n%s", res.err, res.stderr)
	}
	if _, err := c.ImageService().Get(ctx, "example.com/rootless:refused"); err == nil {
		t.Error("the refused commit left an image")
	}
	if st, err := inside("ctr", "tasks", "ls"); err != nil || !strings.Contains(st, "RUNNING") {
		t.Errorf("after the refused commit: %s %v", st, err)
	}
	md2 := filepath.Join(r.Home, "md2.json")
	if res := user("commit-frontend", "commit", "--pause=false", "--metadata-file", md2, id, "example.com/rootless:2"); res.err != nil {
		t.Errorf("--pause=false: %v\n%s", res.err, res.stderr)
	} else if dt, err := os.ReadFile(md2); err != nil || !strings.Contains(string(dt), `"commit-frontend.transfer": "staged"`) {
		// The staged copy written in place, the replaced /etc marked
		// as a userxattr mount reads it.
		t.Errorf("--pause=false was not written in place: %s %v", dt, err)
	}
}

// revokeFreeze gives the freezer of a cgroup back to root.
func revokeFreeze(cgroup string) error {
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup", cgroup, "cgroup.freeze"),
		filepath.Join("/sys/fs/cgroup/freezer", cgroup, "freezer.state"),
	} {
		if err := os.Chown(p, 0, 0); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}
