package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/engine"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/platforms"
	"github.com/moby/buildkit/snapshot"
	"github.com/opencontainers/image-spec/identity"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// runEngine runs the CLI with no buildkitd named (no --addr, no
// BUILDKIT_HOST): BuildKit's engine runs inside it, its state in root.
func runEngine(t *testing.T, root string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.cli, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDKIT_HOST=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, engine.RootEnv+"="+root, "CONTAINERD_ADDRESS="+env.ctrd.Addr)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// TestEngineCommit commits with nothing but containerd running: no
// buildkitd is named or listens at BuildKit's default socket, so the CLI
// runs BuildKit's engine itself, on the container's containerd. The image
// is the container's, lands in its namespace unpacked, and runs; commits
// of different containers at once take turns on the engine, and the one
// that waits says for whom.
func TestEngineCommit(t *testing.T) {
	const ns = "engine"
	if conn, err := os.Stat(strings.TrimPrefix(solve.DefaultAddr, "unix://")); err == nil && conn.Mode()&os.ModeSocket != 0 {
		t.Fatalf("%s exists on this machine: this test needs one where no buildkitd listens at the default socket", solve.DefaultAddr)
	}
	root := t.TempDir()
	ct := startContainer(t, ns, "overlayfs", "engine-1", "mkdir -p /srv/app && echo engine > /srv/app/hello && chown -R 33:44 /srv && "+
		"ln -s hello /srv/app/link && rm /bin/vi && dd if=/dev/urandom of=/srv/big bs=1M count=10 2>/dev/null", true)
	md := filepath.Join(t.TempDir(), "md.json")
	r := runEngine(t, root, "commit", "--namespace", ns, "--metadata-file", md, "-m", "through the engine", "engine-1", "example.com/engine:1")
	if r.err != nil {
		t.Fatalf("commit without a buildkitd: %v\n%s", r.err, r.stderr)
	}
	// The changes were written in place, linked: no session transfer.
	if dt, err := os.ReadFile(md); err != nil || !strings.Contains(string(dt), `"commit-frontend.transfer": "link"`) {
		t.Errorf("the change set was not written in place: %s %v", dt, err)
	}
	if strings.TrimSpace(r.stderr) != "" {
		t.Errorf("the engine wrote on stderr: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "engine.lock")); err != nil {
		t.Errorf("the engine's state directory was not used: %v", err)
	}
	diffTrees(t, "image vs container (engine)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, "example.com/engine:1", "overlayfs"))
	cfg := imageConfig(t, ct.c, mustImage(t, ct.c, "example.com/engine:1"))
	if h := cfg.History[len(cfg.History)-1]; h.Comment != "through the engine" {
		t.Errorf("history: %+v", h)
	}
	// The base's config, which the CLI gives the frontend, carries over.
	base := imageConfig(t, ct.c, mustImage(t, ct.c, baseName))
	if !slices.Equal(cfg.Config.Cmd, base.Config.Cmd) || !slices.Equal(cfg.Config.Env, base.Config.Env) || len(base.Config.Cmd) == 0 ||
		len(cfg.History) != len(base.History)+1 || !reflect.DeepEqual(cfg.History[:len(base.History)], base.History) ||
		!slices.Equal(cfg.RootFS.DiffIDs[:len(base.RootFS.DiffIDs)], base.RootFS.DiffIDs) {
		t.Errorf("the base's config did not carry over:\nbase  %+v %+v\nimage %+v %+v", base.Config, base.History, cfg.Config, cfg.History)
	}
	if out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/engine:1", "engine-run", "cat", "/srv/app/hello"); err != nil || strings.TrimSpace(out) != "engine" {
		t.Errorf("run: %q %v", out, err)
	}
	// The default compression, gzip, of 10 MiB done on the layer's way
	// into containerd (the commit's compressor labels the blob with its
	// level), not by BuildKit's single-threaded exporter.
	gzipOnTheWay := func(ref string) bool {
		t.Helper()
		m := imageManifest(t, ct.c, mustImage(t, ct.c, ref))
		l := m.Layers[len(m.Layers)-1]
		info, err := ct.c.ContentStore().Info(context.Background(), l.Digest)
		if err != nil || !strings.HasSuffix(l.MediaType, "gzip") {
			t.Fatalf("%s: the new layer %s (%s): %v", ref, l.Digest, l.MediaType, err)
		}
		return info.Labels["commit-frontend.gzip-level"] != ""
	}
	if !gzipOnTheWay("example.com/engine:1") {
		t.Error("the new layer of 10 MiB was not gzipped on its way into containerd")
	}

	// Three more at once: all succeed, one by one.
	var wg sync.WaitGroup
	results := make([]result, 3)
	for i := range results {
		id := "engine-many-" + string(rune('a'+i))
		startContainer(t, ns, "overlayfs", id, "echo "+id+" > /who", true)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runEngine(t, root, "commit", "--namespace", ns, id, "example.com/engine:"+id)
		}()
	}
	wg.Wait()
	waited := false
	for i, r := range results {
		if r.err != nil {
			t.Errorf("concurrent commit %d: %v\n%s", i, r.err, r.stderr)
		}
		if strings.Contains(r.stderr, "which runs the engine in "+root) {
			waited = true
		}
	}
	if !waited {
		t.Errorf("no concurrent commit said it waited for the engine: %q", []string{results[0].stderr, results[1].stderr, results[2].stderr})
	}
	// A small one is gzipped by BuildKit's exporter as it writes the image.
	if gzipOnTheWay("example.com/engine:engine-many-a") {
		t.Error("a layer of a few bytes was gzipped on its way into containerd")
	}

	// The engine's cache: du shows it, prune --all empties it, and the
	// images stay.
	du := runEngine(t, root, "du", "--namespace", ns)
	if du.err != nil || !strings.Contains(du.stdout, "Total:") {
		t.Fatalf("du: %v\n%s%s", du.err, du.stdout, du.stderr)
	}
	if lines := strings.Count(du.stdout, "\n"); lines < 4 {
		t.Errorf("du lists no record after four commits:\n%s", du.stdout)
	}
	pr := runEngine(t, root, "prune", "--namespace", ns, "--all")
	if pr.err != nil || !strings.Contains(pr.stdout, "Total:") {
		t.Fatalf("prune: %v\n%s%s", pr.err, pr.stdout, pr.stderr)
	}
	du = runEngine(t, root, "du", "--namespace", ns)
	if du.err != nil || strings.Count(du.stdout, "\n") != 3 || !regexp.MustCompile(`(?m)^Total:\s+0B$`).MatchString(du.stdout) {
		t.Errorf("du after prune --all:\n%s", du.stdout)
	}
	if out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/engine:1", "engine-run-2", "cat", "/srv/app/hello"); err != nil || strings.TrimSpace(out) != "engine" {
		t.Errorf("run after prune: %q %v", out, err)
	}
}

// TestEngineBuildLocalBase builds with nothing but containerd running, on a
// base that exists only in containerd's image store (no registry has it):
// FROM finds it there, as docker build finds local images, and the RUN
// step runs through containerd.
func TestEngineBuildLocalBase(t *testing.T) {
	const ns = "engine-build"
	c := ctrd(t, ns)
	if _, err := env.ctrd.Ctr(context.Background(), ns, "images", "tag", "docker.io/library/busybox:latest", "local.invalid/only-here/busybox:1"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Commitfile": "FROM local.invalid/only-here/busybox:1\nRUN echo built > /built && id -u > /uid\n"})
	r := runEngine(t, t.TempDir(), "build", "--namespace", ns, "-t", "example.com/engine-built:1", dir)
	if r.err != nil {
		t.Fatalf("build without a buildkitd on a local base: %v\n%s", r.err, r.stderr)
	}
	mustImage(t, c, "example.com/engine-built:1")
	if out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/engine-built:1", "engine-built-run", "cat", "/built", "/uid"); err != nil || out != "built\n0\n" {
		t.Errorf("run: %q %v", out, err)
	}
}

// TestEngineCacheBounded commits one container a hundred times through the
// engine, each image under the same name: neither the engine's cache nor
// containerd's snapshots grow with the number of commits, and prune --all
// returns both to where they were before the first.
func TestEngineCacheBounded(t *testing.T) {
	const ns = "engine-bound"
	const commits = 100
	root := t.TempDir()
	ct := startContainer(t, ns, "overlayfs", "bound-1", "mkdir /data && seq 1 5000 > /data/seq && echo bound > /who", true)
	ctx := context.Background()
	snapshots := func() int {
		n := 0
		if err := ct.c.SnapshotService("overlayfs").Walk(ctx, func(context.Context, snapshots.Info) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	records := func() int {
		r := runEngine(t, root, "du", "--namespace", ns)
		if r.err != nil {
			t.Fatalf("du: %v\n%s", r.err, r.stderr)
		}
		// A header, the records, a blank line and the totals.
		return strings.Count(r.stdout, "\n") - 3
	}
	before := snapshots()
	var afterFirst, afterTen [2]int
	for i := 1; i <= commits; i++ {
		r := runEngine(t, root, "commit", "--namespace", ns, "-m", fmt.Sprintf("commit %d", i), "bound-1", "example.com/bound:latest")
		if r.err != nil {
			t.Fatalf("commit %d: %v\n%s", i, r.err, r.stderr)
		}
		switch i {
		case 1:
			afterFirst = [2]int{snapshots(), records()}
		case 10:
			afterTen = [2]int{snapshots(), records()}
		}
	}
	afterAll := [2]int{snapshots(), records()}
	t.Logf("snapshots, engine cache records: before %d, after 1 commit %v, 10 %v, %d %v", before, afterFirst, afterTen, commits, afterAll)
	if afterAll[0] > afterTen[0] || afterAll[1] > afterTen[1] || afterAll[0] > afterFirst[0]+1 {
		t.Errorf("the state grew with the commits: snapshots and records after 1 commit %v, after 10 %v, after %d %v", afterFirst, afterTen, commits, afterAll)
	}
	cfg := imageConfig(t, ct.c, mustImage(t, ct.c, "example.com/bound:latest"))
	if h := cfg.History[len(cfg.History)-1]; h.Comment != fmt.Sprintf("commit %d", commits) {
		t.Errorf("the last image's history: %+v", h)
	}
	diffTrees(t, "last image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, "example.com/bound:latest", "overlayfs"))

	if pr := runEngine(t, root, "prune", "--namespace", ns, "--all"); pr.err != nil {
		t.Fatalf("prune: %v\n%s", pr.err, pr.stderr)
	}
	// What stays is the image: its one new layer's snapshot.
	if n, r := snapshots(), records(); r != 0 || n != before+1 {
		t.Errorf("after prune --all: %d snapshots (%d before the commits, and the image's layer), %d records in the engine's cache", n, before, r)
	}
}

// commitLayer commits container ct as ref, with flags — through the engine
// in the CLI with its state in engineRoot, or through the test buildkitd
// with none — and returns the image's new layer by path and how the change set went
// (the metadata file's commit-frontend.transfer).
func commitLayer(t *testing.T, ct *container, id, ref, engineRoot string, flags ...string) (map[string]layerEntry, string) {
	t.Helper()
	md := filepath.Join(t.TempDir(), "md.json")
	args := append(append([]string{"commit", "--metadata-file", md}, flags...), append(ctrArgs(ct.ns), id, ref)...)
	if engineRoot != "" {
		if r := runEngine(t, engineRoot, args...); r.err != nil {
			t.Fatalf("commit through the engine: %v\n%s", r.err, r.stderr)
		}
	} else {
		cf(t, "", args...)
	}
	var meta map[string]any
	dt, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	mustJSON(t, dt, &meta)
	m := imageManifest(t, ct.c, mustImage(t, ct.c, ref))
	l := m.Layers[len(m.Layers)-1]
	transfer, _ := meta["commit-frontend.transfer"].(string)
	return layerEntries(t, decompress(t, readBlob(t, ct.c, l), l.MediaType)), transfer
}

// TestEngineReplacedDirectory: a container that replaced a directory of its
// base (removed it and made it again, as package managers and pip do) is
// still written in place through the engine — the directory marked opaque
// in the upper directory on the base, as overlayfs marks it — and the layer
// is the one the tar transfer gives, entry for entry; the image is the
// container.
func TestEngineReplacedDirectory(t *testing.T) {
	const ns = "engine-replaced"
	ct := startContainer(t, ns, "overlayfs", "replaced-1", "rm -rf /etc && mkdir /etc && echo new > /etc/only && "+
		"dd if=/dev/urandom of=/etc/big bs=1M count=4 2>/dev/null && mkdir -p /srv && echo s > /srv/s && rm /bin/vi", true)
	link, transfer := commitLayer(t, ct, "replaced-1", "example.com/replaced:link", t.TempDir())
	if transfer != "link" {
		t.Errorf("a replaced directory through the engine: %q, want it written in place (link)", transfer)
	}
	diffTrees(t, "image vs container (replaced directory, engine)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, "example.com/replaced:link", "overlayfs"))
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "tar")
	tar, transfer := commitLayer(t, ct, "replaced-1", "example.com/replaced:tar", "")
	if transfer != "tar" {
		t.Fatalf("crossed as %q with COMMIT_FRONTEND_TRANSFER=tar", transfer)
	}
	if _, ok := link["etc/only"]; !ok {
		t.Errorf("etc/only is not in the layer: %q", keys(link))
	}
	sameLayer(t, "link", link, "tar", tar)
}

// TestEngineHostileChanges commits through the engine a running container
// changed with everything a layer must keep and a container may try (file
// capabilities, names that are not UTF-8, escaping symlinks, devices, a
// sparse file, hard links, a replaced directory): written in place all the
// same, the layer entry for entry the tar transfer's, the image the
// container's, whole after containerd collects its garbage, and it runs.
func TestEngineHostileChanges(t *testing.T) {
	const ns = "engine-hostile"
	ct := startContainer(t, ns, "overlayfs", "hostile-1", "echo changed > /motd; touch /ready; exec sleep 3600", false)
	hostileChanges(t, ct.root(t))
	link, transfer := commitLayer(t, ct, "hostile-1", "example.com/hostile:link", t.TempDir())
	if transfer != "link" {
		t.Errorf("through the engine: %q, want it written in place (link)", transfer)
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("the container is %v after the commit", st)
	}
	if e, ok := link["fidelity/ping"]; !ok || e.Header.PAXRecords["SCHILY.xattr.security.capability"] == "" {
		t.Errorf("fidelity/ping lost its file capabilities: %+v", e.Header)
	}
	diffTrees(t, "image vs container (engine)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, "example.com/hostile:link", "overlayfs"))
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "tar")
	tar, _ := commitLayer(t, ct, "hostile-1", "example.com/hostile:tar", "")
	sameLayer(t, "link", link, "tar", tar)
	collectGarbage(t, ct)
	if out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/hostile:link", "hostile-run", "cat", "/fidelity/owned", "/etc/only-new"); err != nil || out != "owned by 1000\nnew etc" {
		t.Errorf("run after a GC: %q %v", out, err)
	}
}

// TestEngineNoPause commits through the engine a running container with
// --pause=false: never paused, its changes copied first (staged, as through
// a buildkitd) and that copy written into the new snapshot's upper
// directory, with no session transfer; the layer is entry for entry the one
// the same staged copy gives through a buildkitd, and the image is the
// container's and runs.
func TestEngineNoPause(t *testing.T) {
	const ns = "engine-nopause"
	ct := startContainer(t, ns, "overlayfs", "nopause-1", "echo changed > /motd; touch /ready; exec sleep 3600", false)
	hostileChanges(t, ct.root(t))
	staged, transfer := commitLayer(t, ct, "nopause-1", "example.com/nopause:engine", t.TempDir(), "--pause=false")
	if transfer != "staged" {
		t.Errorf("--pause=false through the engine: %q, want the staged copy written in place (staged)", transfer)
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("the container is %v after the commit", st)
	}
	diffTrees(t, "image vs container (--pause=false, engine)", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, "example.com/nopause:engine", "overlayfs"))
	tar, transfer := commitLayer(t, ct, "nopause-1", "example.com/nopause:buildkitd", "", "--pause=false")
	if transfer != "tar" {
		t.Fatalf("--pause=false through buildkitd: %q", transfer)
	}
	sameLayer(t, "staged in place", staged, "through buildkitd", tar)
	if out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/nopause:engine", "nopause-run", "cat", "/fidelity/owned", "/motd"); err != nil || out != "owned by 1000\nchanged\n" {
		t.Errorf("run: %q %v", out, err)
	}
}

// TestEngineStartFails: an engine whose start fails (its worker's state
// directory is a file) fails the commit with the reason, before the
// container is paused or anything is written: the container runs on, and
// no image lands.
func TestEngineStartFails(t *testing.T) {
	const ns = "engine-fails"
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "containerd-overlayfs"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	ct := startContainer(t, ns, "overlayfs", "fails-1", "echo x > /x; touch /ready; exec sleep 3600", false)
	r := runEngine(t, root, "commit", "--namespace", ns, "fails-1", "example.com/fails:1")
	if r.err == nil || !strings.Contains(r.stderr, "BuildKit's engine could not start") || !strings.Contains(r.stderr, "containerd-overlayfs") {
		t.Fatalf("commit on an engine that cannot start: %v\n%s", r.err, r.stderr)
	}
	if _, err := ct.c.ImageService().Get(context.Background(), "example.com/fails:1"); err == nil {
		t.Error("an image landed")
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("the container is %v after the failed commit", st)
	}
}

// TestEngineContentNotShared commits through the engine on a containerd
// that shares no content between namespaces: the blob the engine writes
// into containerd's content directory is not taken from there, and goes
// through containerd's API instead. The image is the container's, and
// runs.
func TestEngineContentNotShared(t *testing.T) {
	ctx := context.Background()
	iso, err := testenv.StartContainerdWith(ctx, t.TempDir(), "\n[plugins.'io.containerd.metadata.v1.bolt']\n  content_sharing_policy = 'isolated'\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(iso.Stop)
	const ns = "isolated"
	if _, err := iso.Ctr(ctx, ns, "images", "import", "--base-name", "docker.io/library/busybox", env.base.Tar); err != nil {
		t.Fatal(err)
	}
	c, err := containerd.New(iso.Addr, containerd.WithDefaultNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := iso.Ctr(ctx, ns, "run", "-d", "--snapshotter", "overlayfs", baseName, "iso", "sh", "-c",
		"mkdir /srv && dd if=/dev/urandom of=/srv/big bs=1M count=3 2>/dev/null && echo iso > /srv/who && chown -R 7:8 /srv && touch /ready && exec sleep 3600"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = iso.Ctr(ctx, ns, "tasks", "kill", "-s", "KILL", "iso")
		time.Sleep(200 * time.Millisecond)
		_, _ = iso.Ctr(ctx, ns, "tasks", "rm", "-f", "iso")
		_, _ = iso.Ctr(ctx, ns, "containers", "rm", "iso")
	})
	ct := &container{ns: ns, id: "iso", c: c}
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(ct.root(t), "ready")); err == nil {
			break
		}
		if i == 300 {
			t.Fatal("the container did not get ready")
		}
		time.Sleep(100 * time.Millisecond)
	}
	const ref = "example.com/isolated:1"
	for _, comp := range []string{"zstd", "gzip"} {
		r := runEngine(t, t.TempDir(), "commit", "--address", iso.Addr, "--namespace", ns, "--compression", comp, "iso", ref)
		if r.err != nil {
			t.Fatalf("commit (%s) on a containerd that shares no content: %v\n%s", comp, r.err, r.stderr)
		}
		diffTrees(t, "image vs container ("+comp+", content not shared)", ct.snapshotTree(t, "overlayfs"), imageTree(t, c, ref, "overlayfs"))
		if out, err := iso.Ctr(ctx, ns, "run", "--rm", ref, "iso-run-"+comp, "cat", "/srv/who"); err != nil || strings.TrimSpace(out) != "iso" {
			t.Errorf("run (%s): %q %v", comp, out, err)
		}
	}
}

// TestEngineKeepsBaseLayers: a gzip commit through the engine on a base
// whose layer is uncompressed keeps that layer as it is (the new layer is
// gzipped on its way into containerd, the base's is not converted), so the
// image shares its base's blobs as docker commit's does.
func TestEngineKeepsBaseLayers(t *testing.T) {
	ctx := context.Background()
	const ns = "engine-base-layers"
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	if err := testenv.BusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(dir, "base.tar")
	if err := testenv.BuildRootfsImage(ctx, env.bkc, rootfs, tar, "uncompressed"); err != nil {
		t.Fatal(err)
	}
	const base = "example.com/uncompressed-base:1"
	if _, err := env.ctrd.Ctr(ctx, ns, "images", "import", "--index-name", base, tar); err != nil {
		t.Fatal(err)
	}
	ct := startContainerFrom(t, ns, "overlayfs", base, "base-layers", "echo new > /new", true)
	baseManifest, err := images.Manifest(ctx, ct.c.ContentStore(), mustImage(t, ct.c, base).Target, platforms.Default())
	if err != nil {
		t.Fatal(err)
	}
	if len(baseManifest.Layers) == 0 || strings.HasSuffix(baseManifest.Layers[0].MediaType, "gzip") {
		t.Fatalf("the base's layers are not uncompressed: %+v", baseManifest.Layers)
	}
	const ref = "example.com/base-layers:1"
	if r := runEngine(t, t.TempDir(), "commit", "--namespace", ns, "base-layers", ref); r.err != nil {
		t.Fatalf("commit: %v\n%s", r.err, r.stderr)
	}
	m := imageManifest(t, ct.c, mustImage(t, ct.c, ref))
	if len(m.Layers) != len(baseManifest.Layers)+1 {
		t.Fatalf("%d layers on a base of %d", len(m.Layers), len(baseManifest.Layers))
	}
	for i, l := range baseManifest.Layers {
		if m.Layers[i].Digest != l.Digest || m.Layers[i].MediaType != l.MediaType {
			t.Errorf("base layer %d became %s (%s), was %s (%s)", i, m.Layers[i].Digest, m.Layers[i].MediaType, l.Digest, l.MediaType)
		}
	}
	if l := m.Layers[len(m.Layers)-1]; !strings.HasSuffix(l.MediaType, "gzip") {
		t.Errorf("the new layer is %s, want gzip", l.MediaType)
	}
	diffTrees(t, "image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, ref, "overlayfs"))

	// The first commit on this base took containerd's snapshot of it, the
	// one the container stands on.
	baseTaken(t, ct, baseManifest)
}

// baseTaken checks that the engine's snapshot of the base whose manifest
// is baseManifest, ct's base, is containerd's own with nothing of its own
// on top: no second copy of the base's files.
func baseTaken(t *testing.T, ct *container, baseManifest ocispecs.Manifest) {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), ct.ns)
	diffIDs, err := images.RootFS(ctx, ct.c.ContentStore(), baseManifest.Config)
	if err != nil {
		t.Fatal(err)
	}
	chain := identity.ChainID(diffIDs)
	sn := ct.c.SnapshotService("overlayfs")
	info, err := sn.Stat(ctx, snapshot.LayerSnapshotID(chain))
	if err != nil {
		t.Fatalf("the engine's snapshot of the base: %v", err)
	}
	usage, err := sn.Usage(ctx, info.Name)
	if err != nil {
		t.Fatal(err)
	}
	baseUsage, err := sn.Usage(ctx, chain.String())
	if err != nil {
		t.Fatal(err)
	}
	if info.Parent != chain.String() || usage.Size > 64<<10 {
		t.Errorf("the engine copied the base (%d bytes in %d inodes on %q; containerd's snapshot of it: %d bytes)", usage.Size, usage.Inodes, info.Parent, baseUsage.Size)
	}
}

// TestEngineTakesBase: a change set that is not written in place on the
// base (sent through the engine's session as a tar, as with provenance or
// volumes, and applied on the base by BuildKit's ops) also leaves the
// engine on containerd's snapshot of the base, not an extraction of it.
func TestEngineTakesBase(t *testing.T) {
	const ns = "engine-takes-base"
	ct := startContainer(t, ns, "overlayfs", "takes-base", "mkdir /srv && echo taken > /srv/who && rm /bin/vi", true)
	md := filepath.Join(t.TempDir(), "md.json")
	const ref = "example.com/takes-base:1"
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "tar")
	if r := runEngine(t, t.TempDir(), "commit", "--namespace", ns, "--metadata-file", md, "takes-base", ref); r.err != nil {
		t.Fatalf("commit: %v\n%s", r.err, r.stderr)
	}
	if dt, err := os.ReadFile(md); err != nil || !strings.Contains(string(dt), `"commit-frontend.transfer": "tar"`) {
		t.Fatalf("the change set did not cross as a tar: %s %v", dt, err)
	}
	diffTrees(t, "image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, ref, "overlayfs"))
	base, err := images.Manifest(context.Background(), ct.c.ContentStore(), mustImage(t, ct.c, baseName).Target, platforms.Default())
	if err != nil {
		t.Fatal(err)
	}
	baseTaken(t, ct, base)
}
