package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// recommit makes a container of image (created, never started: its
// snapshot is all a commit reads), lets change write into its upper
// directory, commits it as ref with args, and removes it.
func recommit(t *testing.T, ns, image, id, ref string, change func(upper string), args ...string) result {
	t.Helper()
	ctx := context.Background()
	if _, err := env.ctrd.Ctr(ctx, ns, "containers", "create", "--snapshotter", "overlayfs", image, id); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = env.ctrd.Ctr(ctx, ns, "containers", "rm", id) }()
	ct := &container{ns: ns, id: id, c: ctrd(t, ns)}
	change(ct.upperdir(t, "overlayfs"))
	return cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), append(args, id, ref)...)...)
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestCommitMaxLayers re-commits a container run from the image of the
// commit before, as a dev loop of `docker run` and `docker commit` does:
// with --max-layers 4 the image never has more than 4 layers — the commit
// that would make a fifth squashes everything above busybox, the first
// base, and the next ones have room again —, every image holds what its
// container held (files added, files deleted in squashed and kept layers),
// and the history says what was squashed.
func TestCommitMaxLayers(t *testing.T) {
	const ns = "max-layers"
	ctx := context.Background()
	c := ctrd(t, ns)
	image := baseName
	for i := 1; i <= 6; i++ {
		id, ref := fmt.Sprintf("ml-%d", i), fmt.Sprintf("example.com/max-layers:%d", i)
		r := recommit(t, ns, image, id, ref, func(upper string) {
			mustDo(t, os.WriteFile(filepath.Join(upper, fmt.Sprintf("layer-%d", i)), []byte(fmt.Sprint(i)), 0o644))
			if i > 2 {
				// Delete a file an earlier commit added.
				mustDo(t, unix.Mknod(filepath.Join(upper, fmt.Sprintf("layer-%d", i-2)), unix.S_IFCHR, 0))
			}
		}, "--max-layers", "4", "-m", fmt.Sprintf("commit %d", i))
		cfg := imageConfig(t, c, mustImage(t, c, ref))
		want := []int{0, 2, 3, 4, 2, 3, 4}[i]
		if n := len(cfg.RootFS.DiffIDs); n != want {
			t.Errorf("commit %d: %d layers, want %d", i, n, want)
		}
		squashing := i == 4
		if got := strings.Contains(r.stderr, "more than --max-layers 4"); got != squashing {
			t.Errorf("commit %d: stderr %q", i, r.stderr)
		}
		last := cfg.History[len(cfg.History)-1]
		if squashing && !strings.Contains(last.Comment, "squashed 4 layers above "+baseName+" into one") {
			t.Errorf("commit %d: history entry %+v does not say what was squashed", i, last)
		}
		nonEmpty := 0
		for _, h := range cfg.History {
			if !h.EmptyLayer {
				nonEmpty++
			}
		}
		if nonEmpty != len(cfg.RootFS.DiffIDs) {
			t.Errorf("commit %d: %d history entries with a layer for %d layers", i, nonEmpty, len(cfg.RootFS.DiffIDs))
		}
		tree := imageTree(t, c, ref, "overlayfs")
		for k := 1; k <= i; k++ {
			_, ok := tree[fmt.Sprintf("layer-%d", k)]
			if want := k >= i-1; ok != want {
				t.Errorf("commit %d: /layer-%d in the image: %v, want %v", i, k, ok, want)
			}
		}
		image = ref
	}
	if out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", image, "ml-run", "cat", "/layer-5", "/layer-6"); err != nil || out != "56" {
		t.Errorf("run: %q %v", out, err)
	}

	// A bound the first base leaves no room under: the first half of the
	// layers stays, the image of them made for the squash.
	r := recommit(t, ns, image, "ml-half", "example.com/max-layers:half", func(upper string) {
		mustDo(t, os.WriteFile(filepath.Join(upper, "layer-half"), []byte("h"), 0o644))
	}, "--max-layers", "2")
	if !strings.Contains(r.stderr, "the 3 above the first 1 are squashed") {
		t.Errorf("stderr %q", r.stderr)
	}
	if n := len(imageConfig(t, c, mustImage(t, c, "example.com/max-layers:half")).RootFS.DiffIDs); n != 2 {
		t.Errorf("--max-layers 2: %d layers", n)
	}
	tree := imageTree(t, c, "example.com/max-layers:half", "overlayfs")
	for _, p := range []string{"layer-5", "layer-6", "layer-half", "bin/sh"} {
		if _, ok := tree[p]; !ok {
			t.Errorf("/%s is not in the image squashed above its first layer", p)
		}
	}
}

// TestCommitMaxLayersDefault: 130 successive commits, each of a container
// of the image before, with the default bound: the commit that would pass
// docker's 125 layers, and it alone, squashes what is above the first
// base; the last image runs and holds every commit's file.
func TestCommitMaxLayersDefault(t *testing.T) {
	const ns = "max-layers-default"
	const commits = 130
	ctx := context.Background()
	c := ctrd(t, ns)
	image := baseName
	var squashes []int
	for i := 1; i <= commits; i++ {
		id, ref := fmt.Sprintf("mld-%d", i), fmt.Sprintf("example.com/max-layers-default:%d", i)
		r := recommit(t, ns, image, id, ref, func(upper string) {
			mustDo(t, os.WriteFile(filepath.Join(upper, fmt.Sprintf("layer-%d", i)), []byte(fmt.Sprintln(i)), 0o644))
		})
		if strings.Contains(r.stderr, "more than --max-layers") {
			squashes = append(squashes, i)
		}
		if t.Failed() {
			t.FailNow()
		}
		if i > 1 {
			// The images in between are not needed again.
			_, _ = env.ctrd.Ctr(ctx, ns, "images", "rm", image)
		}
		image = ref
	}
	cfg := imageConfig(t, c, mustImage(t, c, image))
	// Commit 125 squashes busybox's 124 commits above it with its own
	// change into one layer: 2 layers, and one more for each commit after.
	if n := len(cfg.RootFS.DiffIDs); n != 2+commits-125 || len(squashes) != 1 || squashes[0] != 125 {
		t.Errorf("after %d commits on a 1-layer base: %d layers, squashed at commits %v; want %d layers, one squash at 125", commits, n, squashes, 2+commits-125)
	}
	out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", image, "mld-run", "sh", "-c", "cat /layer-*")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := strings.Count(out, "\n"); n != commits {
		t.Errorf("the last image holds %d of the %d commits' files", n, commits)
	}
}

// TestCommitMaxLayerSize commits 1 GiB of changes in 64 MiB files, with
// files beside them and a deletion, with --max-layer-size 256MiB: at least
// 4 new layers, none over 256 MiB and its tar headers, whose union is the
// container's filesystem; the first history entry carries the message, the
// others say they are its parts. Through docker too: a docker container
// split the same way runs with its files whole.
func TestCommitMaxLayerSize(t *testing.T) {
	const ns = "max-layer-size"
	ct := startContainer(t, ns, "overlayfs", "mls-1",
		"mkdir -p /data/a /data/b /etc/app && for i in $(seq 1 16); do d=a; [ $i -gt 8 ] && d=b; "+
			"dd if=/dev/urandom of=/data/$d/f$i bs=1M count=64 2>/dev/null; done && "+
			"echo small > /etc/app/conf && ln /data/a/f1 /data/b/f1-link && rm /bin/vi", true)
	c := ctrd(t, ns)
	base := imageConfig(t, c, mustImage(t, c, baseName))
	r := cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--max-layer-size", "256MiB", "-m", "split", "mls-1", "example.com/mls:1")...)
	img := mustImage(t, c, "example.com/mls:1")
	m := imageManifest(t, c, img)
	cfg := imageConfig(t, c, img)
	added := m.Layers[len(base.RootFS.DiffIDs):]
	if len(added) < 4 {
		t.Errorf("%d new layers, want at least 4\n%s", len(added), r.stderr)
	}
	for i, l := range added {
		if l.Size > 256<<20+1<<20 {
			t.Errorf("layer %d is %d bytes, over 256 MiB and its headers", i, l.Size)
		}
	}
	hist := cfg.History[len(base.History):]
	if len(hist) != len(added) || hist[0].Comment != "split" {
		t.Errorf("history of the new layers: %+v", hist)
	}
	for i, h := range hist[1:] {
		if want := fmt.Sprintf("part %d of %d", i+2, len(added)); !strings.HasPrefix(h.Comment, want) || h.EmptyLayer {
			t.Errorf("history entry %d: %+v, want %q", i+1, h, want)
		}
	}
	diffTrees(t, "image vs container", ct.snapshotTree(t, "overlayfs"), imageTree(t, c, "example.com/mls:1", "overlayfs"))

	// Staged rather than streamed: a snapshotter with no upper directory,
	// and a running container committed without a pause.
	for _, tc := range []struct{ snapshotter, pause string }{{"native", "true"}, {"overlayfs", "false"}} {
		t.Run("staged-"+tc.snapshotter+"-pause-"+tc.pause, func(t *testing.T) {
			id := "mls-staged-" + tc.snapshotter
			ct := startContainer(t, ns, tc.snapshotter, id, "mkdir -p /data/x && for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/data/x/f$i bs=1M count=4 2>/dev/null; done && "+
				"ln /data/x/f1 /data/f1-link && rm /bin/vi && touch /ready && exec sleep 3600", false)
			ref := "example.com/mls-staged:" + tc.snapshotter
			cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--snapshotter", tc.snapshotter, "--pause="+tc.pause, "--max-layer-size", "8MiB", id, ref)...)
			img := mustImage(t, c, ref)
			if n := len(imageManifest(t, c, img).Layers) - len(base.RootFS.DiffIDs); n < 3 {
				t.Errorf("%d new layers, want at least 3", n)
			}
			diffTrees(t, "image vs container", ct.snapshotTree(t, tc.snapshotter), imageTree(t, c, ref, tc.snapshotter))
		})
	}

	t.Run("engine", func(t *testing.T) {
		ct := startContainer(t, ns, "overlayfs", "mls-engine", "mkdir /data && for i in 1 2 3 4; do dd if=/dev/urandom of=/data/f$i bs=1M count=4 2>/dev/null; done", true)
		if r := runEngine(t, t.TempDir(), "commit", "--namespace", ns, "--max-layer-size", "8MiB", "mls-engine", "example.com/mls-engine:1"); r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if n := len(imageManifest(t, c, mustImage(t, c, "example.com/mls-engine:1")).Layers) - len(base.RootFS.DiffIDs); n != 2 {
			t.Errorf("%d new layers through the engine, want 2", n)
		}
		diffTrees(t, "image vs container (engine)", ct.snapshotTree(t, "overlayfs"), imageTree(t, c, "example.com/mls-engine:1", "overlayfs"))
	})

	t.Run("docker", func(t *testing.T) {
		// The parts cross as tars here, as trees above.
		t.Setenv("COMMIT_FRONTEND_TRANSFER", "tar")
		name := "docker-max-layer-size"
		dockerRun(t, name, nil, "mkdir /data && for i in 1 2 3 4 5 6; do dd if=/dev/urandom of=/data/f$i bs=1M count=4 2>/dev/null; done && "+
			"md5sum /data/* > /sums && touch /ready && exec sleep 3600")
		r := cfDocker(t, "--max-layer-size", "8MiB", name, "example.com/docker-mls:1")
		if r.err != nil {
			t.Fatalf("commit --docker --max-layer-size: %v\n%s", r.err, r.stderr)
		}
		if n := len(dockerManifest(t, "example.com/docker-mls:1").Layers); n < 4 {
			t.Errorf("%d layers, want busybox's and at least 3", n)
		}
		if out := docker(t, "run", "--rm", "--network", "none", "example.com/docker-mls:1", "md5sum", "-c", "/sums"); strings.Count(out, ": OK") != 6 {
			t.Errorf("docker run of the split image: %q", out)
		}
	})
}
