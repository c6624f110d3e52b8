package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/internal/testenv"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
)

var imageID = regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`)

func ctrArgs(ns string) []string {
	return []string{"--address", env.ctrd.Addr, "--namespace", ns}
}

// TestCommitRunningContainer commits a running overlayfs container whose
// rootfs was changed with everything a layer must keep, and compares the
// unpacked image with the container's filesystem.
func TestCommitRunningContainer(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "running", "echo changed > /etc/motd; mkdir /home/app && chown 1234:1234 /home/app; touch /ready; exec sleep 3600", false)
	hostileChanges(t, ct.root(t))
	ref := "example.com/committed:running"
	r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns),
		"-a", "Jane Doe <jane@example.com>", "-m", "snapshot of a running container",
		"-c", "ENV COMMITTED=1", "-c", `CMD ["cat", "/fidelity/owned"]`, "-c", "EXPOSE 8080",
		"running", ref)...)...)
	if !imageID.MatchString(r.stdout) {
		t.Fatalf("stdout must be the image ID alone, got %q", r.stdout)
	}
	if got := ct.status(t); got != containerd.Running {
		t.Errorf("container is %s after the commit, want running", got)
	}
	c := ct.c
	img, err := c.ImageService().Get(context.Background(), ref)
	if err != nil {
		t.Fatalf("image %s not in the store: %v", ref, err)
	}
	cfg := imageConfig(t, c, img)
	if id := strings.TrimSpace(r.stdout); imageManifest(t, c, img).Config.Digest.String() != id {
		t.Errorf("printed ID %s is not the image's config %s", id, imageManifest(t, c, img).Config.Digest)
	}
	base := baseImage(t)
	m := imageManifest(t, c, img)
	if len(m.Layers) != len(base.Manifest.Layers)+1 {
		t.Fatalf("layers %d, want base + 1", len(m.Layers))
	}
	for i, l := range base.Manifest.Layers {
		if m.Layers[i].Digest != l.Digest {
			t.Errorf("base layer %d changed: %s vs %s", i, m.Layers[i].Digest, l.Digest)
		}
	}
	// One entry: the changes are config only, as in docker commit.
	added := cfg.History[len(base.Config.History):]
	if len(added) != 1 {
		t.Fatalf("history: %+v", cfg.History)
	}
	h := added[0]
	if h.EmptyLayer || h.Author != "Jane Doe <jane@example.com>" || h.Comment != "snapshot of a running container" ||
		!strings.HasPrefix(h.CreatedBy, "sh -c echo changed > /etc/motd; mkdir /home/app") {
		t.Errorf("commit history entry: %+v", h)
	}
	if cfg.Author != "Jane Doe <jane@example.com>" || cfg.Config.Cmd[0] != "cat" || !contains(cfg.Config.Env, "COMMITTED=1") {
		t.Errorf("config: %+v", cfg)
	}
	if _, ok := cfg.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports: %v", cfg.Config.ExposedPorts)
	}

	// The image's unpacked filesystem is the container's filesystem.
	diffTrees(t, "image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, c, ref, "overlayfs"))

	// It runs at once: `ctr run` needs no pull and no unpack.
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "run-committed")
	if err != nil || out != "owned by 1000\n" {
		t.Errorf("ctr run of the committed image: %q %v", out, err)
	}
	leases, _ := env.ctrd.Ctr(context.Background(), ns, "leases", "ls", "-q")
	if strings.TrimSpace(leases) != "" {
		t.Errorf("leases left behind: %q", leases)
	}
}

// TestCommitStoppedNative commits a stopped container on the native
// snapshotter (the walking-diff path) into namespace moby, untagged.
func TestCommitStoppedNative(t *testing.T) {
	const ns = "moby"
	ct := startContainer(t, ns, "native", "stopped-native", "mkdir -p /srv && echo native > /srv/index.html && chown -R 33:33 /srv && rm /bin/vi && ln -s /srv /www", true)
	r := cf(t, "", append([]string{"commit", "--progress", "plain"}, append(ctrArgs(ns), "stopped-native")...)...)
	id := strings.TrimSpace(r.stdout)
	// The progress a user sees has no failing step in it.
	if strings.Contains(r.stderr, "ERROR") {
		t.Errorf("progress shows an error:\n%s", r.stderr)
	}
	c := ct.c
	imgs, err := c.ImageService().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var name string
	for _, img := range imgs {
		if strings.HasPrefix(img.Name, "moby-dangling@") && imageManifest(t, c, img).Config.Digest.String() == id {
			name = img.Name
		}
	}
	if name == "" {
		t.Fatalf("no dangling image with config %s in namespace moby", id)
	}
	diffTrees(t, "image vs container (native)", ct.snapshotTree(t, "native"), imageTree(t, c, name, "native"))
}

// TestCommitWithoutRecord commits a snapshot that has no container record,
// as a stopped docker container may leave, naming snapshot and base.
func TestCommitWithoutRecord(t *testing.T) {
	const ns = "moby"
	ct := startContainer(t, ns, "overlayfs", "recordless", "echo from-snapshot > /marker", true)
	// Keep the snapshot, drop the record.
	if _, err := env.ctrd.Ctr(context.Background(), ns, "tasks", "rm", ct.id); err != nil {
		t.Fatal(err)
	}
	sn := ct.c.SnapshotService("overlayfs")
	info, err := sn.Stat(context.Background(), ct.id)
	if err != nil {
		t.Fatal(err)
	}
	// Re-home the snapshot under a docker-like key, then remove the container.
	key := "docker-like-" + ct.id
	// Docker keeps such a snapshot from the garbage collector with a root label.
	mounts, err := sn.Prepare(context.Background(), key, info.Parent,
		snapshots.WithLabels(map[string]string{"containerd.io/gc.root": time.Now().UTC().Format(time.RFC3339)}))
	if err != nil {
		t.Fatal(err)
	}
	writeViaMount(t, mounts, map[string]string{"marker": "from-snapshot\n"})
	if _, err := env.ctrd.Ctr(context.Background(), ns, "containers", "rm", ct.id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sn.Remove(context.Background(), key) })

	r := cfFail(t, "", append([]string{"commit"}, append(ctrArgs(ns), "gone", "example.com/x:y")...)...)
	if !strings.Contains(r.stderr, "no such container: gone") || !strings.Contains(r.stderr, "--snapshot") {
		t.Errorf("error for a missing container: %s", r.stderr)
	}
	ref := "example.com/recordless:1"
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--snapshot", key, "--base", baseName, "gone", ref)...)...)
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "recordless-run", "cat", "/marker")
	if err != nil || out != "from-snapshot\n" {
		t.Errorf("run of the committed image: %q %v", out, err)
	}
}

// TestCommitBadInput checks that bad input fails clearly and leaves the
// container running, not paused, and no image written.
func TestCommitBadInput(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "bad-input", "echo x > /x; touch /ready; exec sleep 3600", false)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown container", []string{"nosuch"}, "no such container: nosuch"},
		{"empty container name", []string{""}, "the container name is empty"},
		{"blank container name", []string{" \t"}, "the container name is empty"},
		{"RUN in --change", []string{"-c", "RUN rm -rf /", "bad-input", "example.com/bad:1"}, "RUN is not supported by --change"},
		{"FROM in --change", []string{"-c", "ENV A=1", "-c", "FROM scratch", "bad-input", "example.com/bad:1"}, "--change 2"},
		{"bad reference", []string{"bad-input", "Not A Ref"}, "invalid reference"},
		{"bad compression", []string{"--compression", "lzma", "bad-input"}, "--compression=lzma"},
		{"unreachable buildkitd", []string{"--addr", "unix:///nonexistent/buildkitd.sock", "bad-input", "example.com/bad:1"}, "buildkitd at unix:///nonexistent/buildkitd.sock"},
		{"unreachable containerd", []string{"--address", "/nonexistent/containerd.sock", "bad-input", "example.com/bad:1"}, "containerd at /nonexistent/containerd.sock"},
		{"missing image content", []string{"--snapshot", "bad-input", "--base", "example.com/never:pulled", "nosuch-record", "example.com/bad:1"}, "example.com/never:pulled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"commit"}, ctrArgs(ns)...)
			r := cfFail(t, "", append(args, tc.args...)...)
			if !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout on failure: %q", r.stdout)
			}
			if st := ct.status(t); st != containerd.Running {
				t.Errorf("container %s after a failed commit", st)
			}
			if _, err := ct.c.ImageService().Get(context.Background(), "example.com/bad:1"); err == nil {
				t.Errorf("a failed commit wrote an image record")
			}
		})
	}
}

// TestCommitOutputs sends the commit elsewhere instead of the image store,
// with zstd compression and an iidfile and metadata file.
func TestCommitOutputs(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "outputs", "echo zstd > /z; touch /ready; exec sleep 3600", false)
	dir := t.TempDir()
	out := filepath.Join(dir, "out.tar")
	r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--compression", "zstd",
		"--output", "type=oci,dest="+out, "--iidfile", filepath.Join(dir, "iid"),
		"--metadata-file", filepath.Join(dir, "md.json"), "outputs")...)...)
	img := readOCITar(t, out)
	if strings.TrimSpace(r.stdout) != img.ConfigID {
		t.Errorf("stdout %q, image config %s", r.stdout, img.ConfigID)
	}
	if iid, _ := os.ReadFile(filepath.Join(dir, "iid")); string(iid) != img.ConfigID {
		t.Errorf("iidfile %q", iid)
	}
	var md map[string]any
	dt, _ := os.ReadFile(filepath.Join(dir, "md.json"))
	if err := json.Unmarshal(dt, &md); err != nil || md["containerimage.config.digest"] != img.ConfigID {
		t.Errorf("metadata file: %s", dt)
	}
	last := img.Manifest.Layers[len(img.Manifest.Layers)-1]
	if !strings.Contains(last.MediaType, "zstd") {
		t.Errorf("new layer media type %s, want zstd", last.MediaType)
	}
	imgs, _ := ct.c.ImageService().List(context.Background())
	for _, i := range imgs {
		if imageManifest(t, ct.c, i).Config.Digest.String() == img.ConfigID {
			t.Errorf("--output also wrote image %s into the store", i.Name)
		}
	}
}

// TestCommitContainerdWorker commits through a buildkitd whose containerd
// worker shares the containerd holding the container.
func TestCommitContainerdWorker(t *testing.T) {
	const ns = "k8s.io"
	bk := containerdWorker(t)
	ct := startContainer(t, ns, "overlayfs", "ctrd-worker", "echo worker > /w; touch /ready; exec sleep 3600", false)
	ref := "example.com/worker:1"
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--addr", bk.Addr, "-m", "via the containerd worker", "ctrd-worker", ref)...)...)
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "worker-run", "cat", "/w")
	if err != nil || out != "worker\n" {
		t.Errorf("run of the committed image: %q %v", out, err)
	}
	diffTrees(t, "image vs container (containerd worker)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, ref, "overlayfs"))
}

// TestCommitContainerdWorkerSameNamespace commits through a buildkitd whose
// containerd worker works in the container's own containerd and namespace,
// as docker's does: BuildKit's image exporter writes the image in place, so
// no blob crosses the session, and the image is whole, labelled against the
// garbage collector, unpacked and runnable.
func TestCommitContainerdWorkerSameNamespace(t *testing.T) {
	const ns = "moby"
	bk, err := testenv.StartBuildkitd(context.Background(), env.dir, testenv.BuildkitdOpt{
		Name: "buildkitd-moby", ContainerdAddr: env.ctrd.Addr, ContainerdNamespace: ns,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Stop()
	ct := startContainer(t, ns, "overlayfs", "same-ns", "echo worker > /w; rm /etc/motd; touch /ready; exec sleep 3600", false)
	hostileChanges(t, ct.root(t))
	ref := "example.com/same-ns:1"
	md := filepath.Join(t.TempDir(), "md.json")
	r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--addr", bk.Addr, "--metadata-file", md,
		"-m", "in place", "-c", `CMD ["cat", "/w"]`, "same-ns", ref)...)...)
	var meta map[string]any
	dt, _ := os.ReadFile(md)
	if err := json.Unmarshal(dt, &meta); err != nil || meta["commit-frontend.exported-bytes"] != "0" {
		t.Errorf("bytes written through the session, want none: %v (%s)", meta["commit-frontend.exported-bytes"], dt)
	}
	c := ct.c
	img := mustImage(t, c, ref)
	m := imageManifest(t, c, img)
	if id := strings.TrimSpace(r.stdout); m.Config.Digest.String() != id {
		t.Errorf("printed ID %q is not the image's config %s", id, m.Config.Digest)
	}
	base := baseImage(t)
	if len(m.Layers) != len(base.Manifest.Layers)+1 || m.Layers[0].Digest != base.Manifest.Layers[0].Digest {
		t.Errorf("layers %v, want the base's and one more", m.Layers)
	}
	cfg := imageConfig(t, c, img)
	if h := cfg.History[len(cfg.History)-1]; h.EmptyLayer || h.Comment != "in place" {
		t.Errorf("commit history entry: %+v", h)
	}
	diffTrees(t, "image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, c, ref, "overlayfs"))
	// Whatever the garbage collector takes now was not the image's.
	collectGarbage(t, ct)
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "same-ns-run")
	if err != nil || out != "worker\n" {
		t.Errorf("run of the committed image after a GC: %q %v", out, err)
	}

	// Without a repository the image is dangling, named as docker names it.
	r = cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--addr", bk.Addr, "same-ns")...)...)
	id := strings.TrimSpace(r.stdout)
	imgs, err := c.ImageService().List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, i := range imgs {
		if strings.HasPrefix(i.Name, "moby-dangling@sha256:") && imageManifest(t, c, i).Config.Digest.String() == id {
			found = i.Name == "moby-dangling@"+i.Target.Digest.String()
		}
	}
	if !found {
		t.Errorf("no dangling image moby-dangling@<manifest digest> with config %s", id)
	}
}

// TestCommitNonUTF8Removal commits removals of files whose names are not
// UTF-8. BuildKit's file operations take such a path as a pattern: a removal
// whose pattern matches nothing the container kept is committed faithfully;
// one whose pattern would also remove a kept file is refused, naming both,
// and leaves the container running and no image.
func TestCommitNonUTF8Removal(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "nonutf8-base",
		`mkdir /n && touch "$(printf '/n/a\377b')" /n/axb "$(printf '/n/c\376d')"; touch /ready; exec sleep 3600`, false)
	// The base must not carry the marker the next containers signal with.
	if err := os.Remove(filepath.Join(ct.root(t), "ready")); err != nil {
		t.Fatal(err)
	}
	base := "example.com/nonutf8:base"
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), ct.id, base)...)...)

	ok := startContainerFrom(t, ns, "overlayfs", base, "nonutf8-ok",
		`rm "$(printf '/n/c\376d')"; touch /ready; exec sleep 3600`, false)
	ref := "example.com/nonutf8:ok"
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), ok.id, ref)...)...)
	got := imageTree(t, ok.c, ref, "overlayfs")
	for name, want := range map[string]bool{"n/a\377b": true, "n/axb": true, "n/c\376d": false} {
		if _, has := got[name]; has != want {
			t.Errorf("image %s has %q: %v, want %v", ref, name, has, want)
		}
	}
	diffTrees(t, "image vs container", ok.snapshotTree(t, "overlayfs"), got)

	bad := startContainerFrom(t, ns, "overlayfs", base, "nonutf8-bad",
		`rm "$(printf '/n/a\377b')"; touch /ready; exec sleep 3600`, false)
	badRef := "example.com/nonutf8:bad"
	r := cfFail(t, "", append([]string{"commit"}, append(ctrArgs(ns), bad.id, badRef)...)...)
	if !strings.Contains(r.stderr, `cannot commit the removal of "/n/a\xffb"`) || !strings.Contains(r.stderr, `"/n/axb"`) {
		t.Errorf("error does not name the removal and the file it would also remove:\n%s", r.stderr)
	}
	checkNothingLeft(t, bad, badRef)
}

// TestCommitTransferTree: a paused container's change set of large files
// that the session's transfer can carry crosses as its tree (nothing for
// buildkitd to extract), and the layer is, entry for entry and to the
// nanosecond, the one the tar transfer gives (COMMIT_FRONTEND_TRANSFER=tar).
func TestCommitTransferTree(t *testing.T) {
	const ns = "transfer" // its own: the engine keeps records (leases) in it
	ct := startContainer(t, ns, "overlayfs", "transfer", "mkdir -p /srv/a && echo hi > /srv/a/f && chown -R 33:44 /srv && chmod 4755 /srv/a/f && "+
		"ln /srv/a/f /hl && ln /bin/busybox /bb && ln -s /etc/shadow /srv/sym && mknod /srv/tty c 5 0 && mkfifo /srv/fifo && "+
		"rm /bin/vi && rm -rf /usr && dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null && touch /ready && exec sleep 3600", false)
	engineRoot := t.TempDir()
	layer := func(transfer, ref string) map[string]layerEntry {
		t.Helper()
		root := ""
		if transfer == "link" {
			// The engine in the CLI writes the tree in place.
			root = engineRoot
		}
		l, got := commitLayer(t, ct, "transfer", ref, root)
		if got != transfer {
			t.Errorf("%s: crossed as %v", ref, got)
		}
		return l
	}
	tree := layer("tree", "example.com/transfer:tree")
	link := layer("link", "example.com/transfer:link")
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "tar")
	tar := layer("tar", "example.com/transfer:tar")
	if len(tree) < 10 {
		t.Fatalf("tree layer: %q", keys(tree))
	}
	sameLayer(t, "link", link, "tar", tar)
	for _, name := range []string{".wh.usr", "bin/.wh.vi", "hl", "bb", "srv/a/f", "srv/tty", "srv/fifo", "srv/sym", "big"} {
		if _, ok := tree[name]; !ok {
			t.Errorf("tree layer lacks %s: %q", name, keys(tree))
		}
	}
	sameLayer(t, "tree", tree, "tar", tar)
}

// sameLayer fails the test where two layers differ entry for entry: type,
// mode, owner, size, link, device, time and contents.
func sameLayer(t *testing.T, nameA string, a map[string]layerEntry, nameB string, b map[string]layerEntry) {
	t.Helper()
	for name, eb := range b {
		ea, ok := a[name]
		if !ok {
			t.Errorf("%s: in the %s layer only", name, nameB)
			continue
		}
		ha, hb := ea.Header, eb.Header
		if ha.Typeflag != hb.Typeflag || ha.Mode != hb.Mode || ha.Uid != hb.Uid || ha.Gid != hb.Gid || ha.Size != hb.Size ||
			ha.Linkname != hb.Linkname || ha.Devmajor != hb.Devmajor || ha.Devminor != hb.Devminor || !ha.ModTime.Equal(hb.ModTime) ||
			!bytes.Equal(ea.Data, eb.Data) {
			t.Errorf("%s: %s %+v, %s %+v", name, nameA, ha, nameB, hb)
		}
	}
	for name := range a {
		if _, ok := b[name]; !ok {
			t.Errorf("%s: in the %s layer only", name, nameA)
		}
	}
}

// TestCommitTreeOverReplacedFile: a directory made where the base had a
// file is marked opaque by overlayfs (it is created over the file's
// whiteout), yet it hides no directory: the change set still crosses as a
// tree, and the image is the container's. A directory the container really
// replaced keeps its mark and goes as the tar.
func TestCommitTreeOverReplacedFile(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "tree-over-file", "rm /bin/vi && mkdir /bin/vi && echo x > /bin/vi/f && "+
		"dd if=/dev/urandom of=/bin/vi/big bs=1M count=4 2>/dev/null", true)
	upper := ct.upperdir(t, "overlayfs")
	if v, err := getxattr(filepath.Join(upper, "bin/vi"), "trusted.overlay.opaque"); err != nil || v != "y" {
		t.Fatalf("overlayfs did not mark /bin/vi opaque (%q, %v): the case this test is about is not made", v, err)
	}
	transfer := func(id, ref string) string {
		t.Helper()
		md := filepath.Join(t.TempDir(), "md.json")
		cf(t, "", append([]string{"commit", "--metadata-file", md}, append(ctrArgs(ns), id, ref)...)...)
		var meta map[string]any
		dt, err := os.ReadFile(md)
		if err != nil {
			t.Fatal(err)
		}
		mustJSON(t, dt, &meta)
		s, _ := meta["commit-frontend.transfer"].(string)
		return s
	}
	if got := transfer("tree-over-file", "example.com/tree-over-file:1"); got != "tree" {
		t.Errorf("a directory over a base file: crossed as %q, want tree", got)
	}
	diffTrees(t, "image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, "example.com/tree-over-file:1", "overlayfs"))

	replaced := startContainer(t, ns, "overlayfs", "tree-replaced-dir", "rm -rf /etc && mkdir /etc && echo new > /etc/only && "+
		"dd if=/dev/urandom of=/etc/big bs=1M count=4 2>/dev/null", true)
	if got := transfer("tree-replaced-dir", "example.com/tree-replaced-dir:1"); got != "tar" {
		t.Errorf("a replaced directory: crossed as %q, want tar", got)
	}
	diffTrees(t, "image vs container (replaced directory)", replaced.snapshotTree(t, "overlayfs"), imageTree(t, replaced.c, "example.com/tree-replaced-dir:1", "overlayfs"))
}

// TestCommitTreeFidelity forces the tree transfer on a stopped container
// with small hostile-free changes of every kind a layer keeps (owners,
// setuid and sticky bits, hard links, symlinks, devices, fifos, deletions
// of a file and of a directory) and compares the unpacked image with the
// container's filesystem.
func TestCommitTreeFidelity(t *testing.T) {
	const ns = "tree-fidelity" // its own: the engine keeps records (leases) in it
	ct := startContainer(t, ns, "overlayfs", "tree-fidelity", "mkdir -p /srv/a /tmp/sticky && chmod 1777 /tmp/sticky && echo hi > /srv/a/f && "+
		"chown -R 33:44 /srv && chmod 4755 /srv/a/f && chmod 2750 /srv/a && ln /srv/a/f /srv/hl && ln -s ../etc/passwd /srv/rel && "+
		"mknod /srv/null c 1 3 && mkfifo /srv/fifo && rm /bin/vi && rm -rf /usr && touch -d 2001-02-03T04:05:06.789 /srv/old", true)
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "tree")
	md := filepath.Join(t.TempDir(), "md.json")
	const ref = "example.com/tree-fidelity:1"
	cf(t, "", append([]string{"commit", "--metadata-file", md}, append(ctrArgs(ns), "tree-fidelity", ref)...)...)
	dt, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dt), `"commit-frontend.transfer": "tree"`) {
		t.Errorf("not sent as a tree:\n%s", dt)
	}
	diffTrees(t, "image vs container (tree transfer)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, ref, "overlayfs"))

	// Written in place by the engine in the CLI, files linked.
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "")
	const linkRef = "example.com/tree-fidelity:link"
	r := runEngine(t, t.TempDir(), append([]string{"commit", "--metadata-file", md}, append(ctrArgs(ns), "tree-fidelity", linkRef)...)...)
	if r.err != nil {
		t.Fatalf("commit through the engine: %v\n%s", r.err, r.stderr)
	}
	if dt, err := os.ReadFile(md); err != nil || !strings.Contains(string(dt), `"commit-frontend.transfer": "link"`) {
		t.Errorf("not written in place:\n%s", dt)
	}
	diffTrees(t, "image vs container (written in place)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, linkRef, "overlayfs"))
}
