package integration

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/opencontainers/image-spec/identity"
)

// TestCommitPauseBriefWriter commits, with --pause=brief, a container in
// which a process started by exec (not a child of its first process)
// writes all through the commit: records appended to a log, and every page
// of a file rewritten in place through a shared mapping (writes that move
// no ctime once a page is dirty). The image is the container at the
// pause: the log's records 1..n whole, the mapped file's pages at n in a
// first run and n-1 after it, never the copy taken while it ran.
func TestCommitPauseBriefWriter(t *testing.T) {
	const ns = "pause-brief"
	bin := filepath.Join(t.TempDir(), "mmapwriter")
	build := exec.Command("go", "build", "-o", bin, "./testdata/mmapwriter")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the writer: %v\n%s", err, out)
	}
	ctx := context.Background()
	c := ctrd(t, ns)
	if _, err := env.ctrd.Ctr(ctx, ns, "run", "-d", "--snapshotter", "overlayfs",
		"--mount", "type=bind,src="+bin+",dst=/mmapwriter,options=rbind:ro", baseName, "writer", "sleep", "3600"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ctrd.Ctr(ctx, ns, "tasks", "exec", "--detach", "--exec-id", "w", "writer", "/mmapwriter"); err != nil {
		t.Fatal(err)
	}
	ct := &container{ns: ns, id: "writer", c: c}
	t.Cleanup(func() {
		_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "kill", "-s", "KILL", "writer")
		time.Sleep(200 * time.Millisecond)
		_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "rm", "-f", "writer")
		_, _ = env.ctrd.Ctr(ctx, ns, "containers", "rm", "writer")
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(ct.upperdir(t, "overlayfs"), "ready")); err == nil {
			break
		}
		if i == 300 {
			t.Fatal("the writer did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Past the copy's margin: the mapped file's ctime is then old, and
	// only its mapping tells that it changes.
	time.Sleep(time.Second)
	// Rounds 4 and 5 go through the engine in the CLI, which links the
	// files into its snapshot instead of copying them: a full pause then
	// lasts until the layer is read from the links, and a brief one links
	// its private copies.
	engineRoot := t.TempDir()
	for round := 1; round <= 5; round++ {
		ref := fmt.Sprintf("example.com/pause-brief:%d", round)
		md := filepath.Join(t.TempDir(), "md.json")
		args := append(append([]string{"commit"}, ctrArgs(ns)...), "--pause=brief", "--metadata-file", md, "writer", ref)
		switch round {
		case 4:
			args[len(args)-5] = "--pause"
			fallthrough
		case 5:
			if r := runEngine(t, engineRoot, args...); r.err != nil {
				t.Fatalf("round %d through the engine: %v\n%s", round, r.err, r.stderr)
			}
			if tr := readMetadata(t, md)["commit-frontend.transfer"]; tr != "link" {
				t.Errorf("round %d: transfer %q, want link", round, tr)
			}
		default:
			cf(t, "", args...)
		}
		if st := ct.status(t); st != "running" {
			t.Fatalf("the container is %s after the commit", st)
		}
		paused, err := time.ParseDuration(readMetadata(t, md)["commit-frontend.paused"])
		if err != nil {
			t.Fatal(err)
		}
		files := storedFiles(t, ct, ref, "/log", "/mm")
		n := checkOneInstant(t, fmt.Sprintf("round %d", round), files["/log"], files["/mm"])
		t.Logf("round %d: %d records, paused %s", round, n, paused)
	}

	t.Run("docker", func(t *testing.T) {
		name := "docker-writer"
		docker(t, "run", "-d", "--network", "none", "--name", name, "-v", bin+":/mmapwriter:ro", "busybox", "sleep", "3600")
		t.Cleanup(func() { _, _ = dockerd(t).Docker(context.Background(), "rm", "-f", name) })
		docker(t, "exec", "-d", name, "/mmapwriter")
		for i := 0; ; i++ {
			if _, err := dockerd(t).Docker(context.Background(), "exec", name, "test", "-f", "/ready"); err == nil {
				break
			}
			if i == 300 {
				t.Fatal("the writer did not start")
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
		if r := cfDocker(t, "--pause=brief", name, "example.com/docker-pause-brief:1"); r.err != nil {
			t.Fatalf("commit --docker --pause=brief: %v\n%s", r.err, r.stderr)
		}
		log := docker(t, "run", "--rm", "--network", "none", "example.com/docker-pause-brief:1", "cat", "/log")
		mm, err := base64.StdEncoding.DecodeString(docker(t, "run", "--rm", "--network", "none", "example.com/docker-pause-brief:1", "sh", "-c", "base64 /mm | tr -d '\\n'"))
		if err != nil {
			t.Fatal(err)
		}
		checkOneInstant(t, "docker", log+"\n", string(mm))
	})
}

// checkOneInstant checks that the writer's log and mapped file are of one
// instant: records 1..n whole, the pages at n in a first run and n-1
// after it. It returns n.
func checkOneInstant(t *testing.T, what, log, mm string) uint64 {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(log, "\n"), "\n")
	for i, l := range lines {
		if l != fmt.Sprintf("record %d", i+1) {
			t.Fatalf("%s: log line %d is %q", what, i+1, l)
		}
	}
	n := uint64(len(lines))
	if len(mm) != 256*4096 {
		t.Fatalf("%s: /mm holds %d bytes", what, len(mm))
	}
	prev := n
	for p := 0; p < 256; p++ {
		v := binary.LittleEndian.Uint64([]byte(mm[p*4096:]))
		if v > prev || v+1 < n {
			t.Fatalf("%s: the log holds records 1..%d, page %d of the mapped file holds %d (page before it %d): not the container at one instant", what, n, p, v, prev)
		}
		prev = v
	}
	return n
}

// storedFiles reads files of an image from a view of its unpacked snapshot.
func storedFiles(t *testing.T, ct *container, ref string, paths ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	cfg := imageConfig(t, ct.c, mustImage(t, ct.c, ref))
	sn := ct.c.SnapshotService("overlayfs")
	key := fmt.Sprintf("test-read-%d", time.Now().UnixNano())
	mounts, err := sn.View(ctx, key, identity.ChainID(cfg.RootFS.DiffIDs).String())
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Remove(ctx, key)
	out := map[string]string{}
	if err := mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		for _, p := range paths {
			dt, err := os.ReadFile(filepath.Join(root, p))
			if err != nil {
				return err
			}
			out[p] = string(dt)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCommitPauseBriefIdle: a running container that wrote 1 GiB and is
// idle is paused under 200 ms with --pause=brief (commit-frontend.paused),
// where the full pause lasts the whole read; both images are the
// container's.
func TestCommitPauseBriefIdle(t *testing.T) {
	const ns = "pause-brief-idle"
	ct := startContainer(t, ns, "overlayfs", "idle-1",
		"mkdir /data && for i in 1 2 3 4 5 6 7 8; do dd if=/dev/urandom of=/data/f$i bs=1M count=128 2>/dev/null; done; touch /ready; exec sleep 3600", false)
	time.Sleep(time.Second)
	paused := map[string]time.Duration{}
	for _, mode := range []string{"brief", "true"} {
		ref := "example.com/pause-idle:" + mode
		md := filepath.Join(t.TempDir(), "md.json")
		cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--pause="+mode, "--metadata-file", md, "idle-1", ref)...)
		d, err := time.ParseDuration(readMetadata(t, md)["commit-frontend.paused"])
		if err != nil {
			t.Fatal(err)
		}
		paused[mode] = d
		diffTrees(t, "image vs container (--pause="+mode+")", ct.snapshotTree(t, "overlayfs"), imageTree(t, ct.c, ref, "overlayfs"))
	}
	t.Logf("1 GiB, idle: paused %s with --pause=brief, %s with --pause=true", paused["brief"], paused["true"])
	if paused["brief"] >= 200*time.Millisecond {
		t.Errorf("--pause=brief paused the container %s for 1 GiB written before the commit: want under 200 ms", paused["brief"])
	}
}
