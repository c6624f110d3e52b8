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
// with --max-layers 4 the image never has more than 4 layers, every
// image holds what its container held (files added, files deleted in
// squashed and kept layers), and the history says what was squashed.
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
		if n := len(cfg.RootFS.DiffIDs); n > 4 || (i >= 3 && n != 4) {
			t.Errorf("commit %d: %d layers, want %d", i, n, min(i+1, 4))
		}
		squashing := i+1 > 4
		if got := strings.Contains(r.stderr, "more than --max-layers 4"); got != squashing {
			t.Errorf("commit %d: stderr %q", i, r.stderr)
		}
		last := cfg.History[len(cfg.History)-1]
		if squashing && !strings.Contains(last.Comment, "above the first 3 (--max-layers 4) into one") {
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
}

// TestCommitMaxLayersDefault: 130 successive commits, each of a container
// of the image before, with the default bound: the chain stops at docker's
// 125 layers, and the last image runs and holds every commit's file.
func TestCommitMaxLayersDefault(t *testing.T) {
	const ns = "max-layers-default"
	const commits = 130
	ctx := context.Background()
	c := ctrd(t, ns)
	image := baseName
	for i := 1; i <= commits; i++ {
		id, ref := fmt.Sprintf("mld-%d", i), fmt.Sprintf("example.com/max-layers-default:%d", i)
		recommit(t, ns, image, id, ref, func(upper string) {
			mustDo(t, os.WriteFile(filepath.Join(upper, fmt.Sprintf("layer-%d", i)), []byte(fmt.Sprintln(i)), 0o644))
		})
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
	if n := len(cfg.RootFS.DiffIDs); n != 125 {
		t.Errorf("after %d commits on a 1-layer base: %d layers, want 125", commits, n)
	}
	out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", image, "mld-run", "sh", "-c", "cat /layer-*")
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := strings.Count(out, "\n"); n != commits {
		t.Errorf("the last image holds %d of the %d commits' files", n, commits)
	}
}
