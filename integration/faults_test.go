package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/commit"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
)

// bigChange is a container script that writes 200 MB of random bytes, so a
// commit takes long enough to be interrupted.
const bigChange = "head -c 200000000 /dev/urandom > /big; touch /ready; exec sleep 3600"

// startCommit starts `commit-frontend commit` in the background.
func startCommit(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(env.cli, append([]string{"commit", "--progress", "plain"}, args...)...)
	cmd.Env = append(os.Environ(), "BUILDKIT_HOST="+env.bk.Addr)
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
}

// syncBuffer is a buffer a process writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until stderr shows s.
func waitForOutput(t *testing.T, buf *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(buf.String(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("never saw %q in:\n%s", s, buf.String())
}

// checkNothingLeft checks that a failed commit left the container running,
// wrote no image record and left no lease.
func checkNothingLeft(t *testing.T, ct *container, ref string) {
	t.Helper()
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("container %s after the fault", st)
	}
	if _, err := ct.c.ImageService().Get(context.Background(), ref); err == nil {
		t.Errorf("image %s was written", ref)
	}
	out, err := env.ctrd.Ctr(context.Background(), ct.ns, "leases", "ls", "-q")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("leases left: %q %v", out, err)
	}
}

func TestFaultInterrupt(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			const ns = "default"
			id := "interrupt-" + strconv.Itoa(int(sig))
			ct := startContainer(t, ns, "overlayfs", id, bigChange, false)
			ref := "example.com/interrupted:" + strconv.Itoa(int(sig))
			cmd, _, stderr := startCommit(t, append(ctrArgs(ns), id, ref)...)
			waitForOutput(t, stderr, "COMMIT rootfs")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			if err == nil {
				t.Fatalf("the interrupted commit succeeded:\n%s", stderr)
			}
			if !strings.Contains(stderr.String(), "context canceled") {
				t.Errorf("stderr does not say the commit was cancelled:\n%s", stderr)
			}
			checkNothingLeft(t, ct, ref)
			cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), id, ref)...)...)
		})
	}
}

func TestFaultBuildkitdKilled(t *testing.T) {
	const ns = "default"
	victim, err := testenv.StartBuildkitd(context.Background(), env.dir, testenv.BuildkitdOpt{Name: "buildkitd-victim"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { victim.Stop() }()
	ct := startContainer(t, ns, "overlayfs", "bk-killed", bigChange, false)
	ref := "example.com/bk-killed:1"
	cmd, _, stderr := startCommit(t, append(ctrArgs(ns), "--addr", victim.Addr, "bk-killed", ref)...)
	waitForOutput(t, stderr, "COMMIT rootfs")
	victim.Kill()
	if err := cmd.Wait(); err == nil {
		t.Fatalf("the commit succeeded with buildkitd killed:\n%s", stderr)
	}
	if !strings.Contains(stderr.String(), "buildkitd") {
		t.Errorf("stderr does not say buildkitd failed:\n%s", stderr)
	}
	checkNothingLeft(t, ct, ref)
	victim, err = testenv.StartBuildkitd(context.Background(), env.dir, testenv.BuildkitdOpt{Name: "buildkitd-victim"})
	if err != nil {
		t.Fatal(err)
	}
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--addr", victim.Addr, "bk-killed", ref)...)...)
}

// TestFaultContainerdRestart restarts containerd in the middle of a commit:
// the commit either fails clearly, leaving nothing behind, or completes with
// a correct image; a retry succeeds.
func TestFaultContainerdRestart(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "ctrd-restart", bigChange, false)
	ref := "example.com/ctrd-restart:1"
	cmd, _, stderr := startCommit(t, append(ctrArgs(ns), "ctrd-restart", ref)...)
	waitForOutput(t, stderr, "COMMIT rootfs")
	env.ctrd.Stop()
	if err := env.ctrd.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Either way out is right, but only whole: a failure says so and
	// leaves nothing; a success leaves an image that runs with the
	// container's bytes. The container runs on, unpaused, in both.
	if err := cmd.Wait(); err != nil {
		if !strings.Contains(stderr.String(), "commit-frontend:") {
			t.Errorf("no error message:\n%s", stderr)
		}
		checkNothingLeft(t, ct, ref)
	} else {
		out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "ctrd-restart-first", "wc", "-c", "/big")
		if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "200000000") {
			t.Errorf("the commit succeeded across the restart, but its image does not run whole: %q %v", out, err)
		}
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("container %s after the commit across containerd's restart", st)
	}
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "ctrd-restart", ref)...)...)
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "ctrd-restart-run", "wc", "-c", "/big")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "200000000") {
		t.Errorf("run of the retried commit: %q %v", out, err)
	}
}

// TestConcurrentCommits runs 8 commits of one container and 8 of different
// containers at once.
func TestConcurrentCommits(t *testing.T) {
	const ns = "default"
	const n = 8
	same := startContainer(t, ns, "overlayfs", "concurrent-same", "echo same > /same; touch /ready; exec sleep 3600", false)
	var others []*container
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("concurrent-%d", i)
		others = append(others, startContainer(t, ns, "overlayfs", id, fmt.Sprintf("echo %d > /which; touch /ready; exec sleep 3600", i), false))
	}
	type job struct{ id, ref, want, file string }
	var jobs []job
	for i := 0; i < n; i++ {
		jobs = append(jobs, job{same.id, fmt.Sprintf("example.com/same:%d", i), "same", "/same"})
		jobs = append(jobs, job{others[i].id, fmt.Sprintf("example.com/other:%d", i), strconv.Itoa(i), "/which"})
	}
	var wg sync.WaitGroup
	results := make([]result, len(jobs))
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = run(t, "", env.cli, append([]string{"commit"}, append(ctrArgs(ns), j.id, j.ref)...)...)
		}()
	}
	wg.Wait()
	for i, j := range jobs {
		if results[i].err != nil {
			t.Errorf("commit of %s as %s: %v\n%s", j.id, j.ref, results[i].err, lastLines(results[i].stderr, 3))
			continue
		}
		out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", j.ref, fmt.Sprintf("check-%d", i), "cat", j.file)
		if err != nil || strings.TrimSpace(out) != j.want {
			t.Errorf("%s: %q %v", j.ref, out, err)
		}
	}
}

// TestRepeatedCommits commits a changing container many times in a row
// through the Go API and checks that nothing leaks: leases, snapshots,
// content, goroutines, file descriptors. CF_LOAD_COMMITS sets the count
// (default 10; the long run is 100).
func TestRepeatedCommits(t *testing.T) {
	n := 10
	if v, err := strconv.Atoi(os.Getenv("CF_LOAD_COMMITS")); err == nil && v > 0 {
		n = v
	}
	const ns = "load"
	ct := startContainer(t, ns, "overlayfs", "load", "touch /ready; exec sleep 3600", false)
	ctx := context.Background()
	bk, err := solve.Connect(ctx, env.bk.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	count := func() (snaps, blobs int) {
		// Collect first: content and snapshots left unreferenced by
		// earlier work would otherwise vanish at a moment of the
		// garbage collector's choosing, in the middle of the count.
		collectGarbage(t, ct)
		_ = ct.c.SnapshotService("overlayfs").Walk(ctx, func(context.Context, snapshots.Info) error { snaps++; return nil })
		_ = ct.c.ContentStore().Walk(ctx, func(content.Info) error { blobs++; return nil })
		return
	}
	commitOnce := func(i int) {
		if err := os.WriteFile(filepath.Join(ct.root(t), "counter"), []byte(strconv.Itoa(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := (&commit.Client{Containerd: ct.c, Namespace: ns, Buildkit: bk}).Commit(ctx, commit.Options{
			Container: ct.id, Ref: fmt.Sprintf("example.com/load:%d", i), Pause: true,
		})
		if err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
		// Only the new layer, config and manifest are written: the base's
		// 1 MB layer, already in the store, is never sent back.
		if res.Exported == 0 || res.Exported > 64<<10 {
			t.Errorf("commit %d wrote %d bytes into the content store", i, res.Exported)
		}
	}
	commitOnce(n) // warm up connections and caches
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	snaps0, blobs0 := count()
	for i := 0; i < n; i++ {
		commitOnce(i)
	}
	snaps1, blobs1 := count()
	if snaps1-snaps0 != n {
		t.Errorf("snapshots grew by %d for %d commits, want one each (the new layer)", snaps1-snaps0, n)
	}
	if blobs1-blobs0 != 3*n {
		t.Errorf("content grew by %d blobs for %d commits, want three each (layer, config, manifest)", blobs1-blobs0, n)
	}
	if out, _ := env.ctrd.Ctr(ctx, ns, "leases", "ls", "-q"); strings.TrimSpace(out) != "" {
		t.Errorf("leases left: %q", out)
	}
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
	if g := runtime.NumGoroutine(); g > goroutines+5 {
		t.Errorf("goroutines: %d before, %d after %d commits", goroutines, g, n)
		buf := make([]byte, 1<<20)
		t.Log(string(buf[:runtime.Stack(buf, true)]))
	}
	if f := openFDs(t); f > fds+5 {
		t.Errorf("open file descriptors: %d before, %d after %d commits", fds, f, n)
	}
	out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", fmt.Sprintf("example.com/load:%d", n-1), "load-check", "cat", "/counter")
	if err != nil || out != strconv.Itoa(n-1) {
		t.Errorf("last image: %q %v", out, err)
	}
}

// collectGarbage runs containerd's garbage collector now and waits for it:
// deleting a lease synchronously does that.
func collectGarbage(t *testing.T, ct *container) {
	t.Helper()
	ctx := context.Background()
	ls := ct.c.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		t.Fatal(err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestHostileSparseFile refuses a sparse file whose holes a layer would have
// to store as gigabytes of zeros, with a clear error, leaving the container
// running.
func TestHostileSparseFile(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "sparse", "touch /ready; exec sleep 3600", false)
	f, err := os.Create(filepath.Join(ct.root(t), "huge-sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r := cfFail(t, "", append([]string{"commit"}, append(ctrArgs(ns), "sparse", "example.com/sparse:1")...)...)
	if !strings.Contains(r.stderr, `"huge-sparse" is a sparse file of 4294967296 bytes`) {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	checkNothingLeft(t, ct, "example.com/sparse:1")
	// Under the limit one by one, over it together.
	if err := os.Remove(filepath.Join(ct.root(t), "huge-sparse")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		f, err := os.Create(filepath.Join(ct.root(t), "sparse-"+n))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(600 << 20); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	r = cfFail(t, "", append([]string{"commit"}, append(ctrArgs(ns), "sparse", "example.com/sparse:1")...)...)
	if !strings.Contains(r.stderr, "bytes of holes in all") || !strings.Contains(r.stderr, "1073741824") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
	checkNothingLeft(t, ct, "example.com/sparse:1")
}

// TestHostileCopySymlink: a context symlink pointing outside the context is
// resolved inside it, never on the host.
func TestHostileCopySymlink(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Commitfile": "FROM " + env.base.Ref + "\nCOPY escape /copied\nCOPY ../../../../etc/hostname /hostname\n"})
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.tar")
	r := run(t, dir, env.cli, "build", "--progress", "plain", "--output", "type=oci,dest="+out, dir)
	host, _ := os.ReadFile("/etc/hostname")
	if r.err == nil {
		img := readOCITar(t, out)
		for _, l := range img.Layers {
			for name, e := range layerEntries(t, l) {
				if len(host) > 0 && bytes.Equal(e.Data, host) {
					t.Errorf("%s carries the host's /etc/hostname", name)
				}
			}
		}
	} else if !strings.Contains(r.stderr, "not found") {
		t.Errorf("error: %s", r.stderr)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestCommitWhileChanging commits, without --pause, a container that keeps
// rewriting files: every commit either succeeds with a layer whose files are
// whole, or fails with a message naming what changed. The container replaces
// its files by rename, so every state it ever had holds whole files.
func TestCommitWhileChanging(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "changing",
		`touch /ready; i=0; while true; do i=$((i+1)); head -c $(( (i % 50) * 1000 + 1 )) /dev/zero > /busy.tmp; mv /busy.tmp /busy; echo $i > /count.tmp; mv /count.tmp /count; done`, false)
	for i := 0; i < 5; i++ {
		ref := fmt.Sprintf("example.com/changing:%d", i)
		r := run(t, "", env.cli, append([]string{"commit"}, append(ctrArgs(ns), "--pause=false", "changing", ref)...)...)
		if r.err != nil {
			if !strings.Contains(r.stderr, "changed size while being read") && !strings.Contains(r.stderr, "changed while being read") && !strings.Contains(r.stderr, "no such file") {
				t.Errorf("commit %d failed without saying what changed:\n%s", i, r.stderr)
			}
			continue
		}
		out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, fmt.Sprintf("changing-check-%d", i), "sh", "-c", "wc -c < /busy; cat /count")
		if err != nil {
			t.Errorf("run of commit %d: %v", i, err)
			continue
		}
		fields := strings.Fields(out)
		if len(fields) != 2 {
			t.Errorf("commit %d: %q", i, out)
			continue
		}
		size, _ := strconv.Atoi(fields[0])
		if (size-1)%1000 != 0 {
			t.Errorf("commit %d: /busy has %d bytes, not a size the container ever wrote", i, size)
		}
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("container %s", st)
	}
}

// cutProxy forwards a unix socket to buildkitd's socket and can cut every
// connection through it at once, as a network that drops would.
type cutProxy struct {
	addr  string
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "bk.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: "unix://" + sock, ln: ln}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("unix", strings.TrimPrefix(target, "unix://"))
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); out.Close() }()
			go func() { _, _ = io.Copy(in, out); in.Close() }()
		}
	}()
	return p
}

// cut closes every connection open through the proxy; new ones still work.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestFaultConnectionDropped cuts the connection between the client and
// buildkitd in the middle of a commit: the command fails saying so, the
// container is running, nothing was written, and a retry succeeds.
func TestFaultConnectionDropped(t *testing.T) {
	const ns = "default"
	proxy := startCutProxy(t, env.bk.Addr)
	ct := startContainer(t, ns, "overlayfs", "conn-dropped", bigChange, false)
	ref := "example.com/conn-dropped:1"
	cmd, _, stderr := startCommit(t, append(ctrArgs(ns), "--addr", proxy.addr, "conn-dropped", ref)...)
	waitForOutput(t, stderr, "COMMIT rootfs")
	proxy.cut()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("the commit succeeded with its connection cut:\n%s", stderr)
		}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the commit hung after its connection was cut:\n%s", stderr)
	}
	if !strings.Contains(stderr.String(), "commit-frontend: committing through buildkitd") {
		t.Errorf("stderr does not say the connection to buildkitd failed:\n%s", stderr)
	}
	checkNothingLeft(t, ct, ref)
	md := filepath.Join(t.TempDir(), "md.json")
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--addr", proxy.addr, "--metadata-file", md, "conn-dropped", ref)...)...)
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", ref, "conn-dropped-run", "wc", "-c", "/big")
	if err != nil || !strings.HasPrefix(strings.TrimSpace(out), "200000000") {
		t.Errorf("run of the retried commit: %q %v", out, err)
	}
	// The 200 MB layer was read from buildkitd's content store, not pushed
	// through the session; the small config and manifest came through it.
	var meta map[string]string
	dt, _ := os.ReadFile(md)
	_ = json.Unmarshal(dt, &meta)
	fetched, _ := strconv.ParseInt(meta["commit-frontend.fetched-bytes"], 10, 64)
	exported, _ := strconv.ParseInt(meta["commit-frontend.exported-bytes"], 10, 64)
	if fetched < 200000000 || exported <= fetched || exported > fetched+64<<10 {
		t.Errorf("fetched %d and exported %d bytes, want the layer fetched and only config and manifest more", fetched, exported)
	}
}

// TestCommitLeaseOtherPIDNamespace: a commit running in another PID
// namespace (a DaemonSet pod beside the node's own commits: same boot, its
// pids meaningless here) keeps its lease while a commit in this namespace
// starts, and finishes with its image whole.
func TestCommitLeaseOtherPIDNamespace(t *testing.T) {
	const ns = "default"
	a := startContainer(t, ns, "overlayfs", "pidns-a", "echo a > /a", true)
	startContainer(t, ns, "overlayfs", "pidns-b", "echo b > /b", true)
	ref := "example.com/pidns-a:1"
	cmd := exec.Command("unshare", append([]string{"--pid", "--fork", "--mount-proc", env.cli, "commit"}, append(ctrArgs(ns), "--addr", env.bk.Addr, "pidns-a", ref)...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}()
	host, _ := os.Readlink("/proc/self/ns/pid")
	ctx := context.Background()
	var lease string
	deadline := time.Now().Add(30 * time.Second)
	for lease == "" && time.Now().Before(deadline) {
		ls, err := a.c.LeasesService().List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			if pidns := l.Labels["commit-frontend/pidns"]; l.Labels["commit-frontend/pid"] != "" && pidns != host {
				lease = l.ID
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if lease == "" {
		t.Fatalf("the commit in another PID namespace made no lease of its own:\n%s", out.String())
	}
	// Frozen with its lease held, as a slow commit would be.
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "pidns-b", "example.com/pidns-b:1")...)...)
	ls, err := a.c.LeasesService().List(ctx, "id=="+lease)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 {
		t.Errorf("the other namespace's live commit lost its lease %s", lease)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the commit in another PID namespace: %v\n%s", err, out.String())
	}
	if tree := imageTree(t, a.c, ref, "overlayfs"); tree["a"] == "" {
		t.Errorf("its image lacks /a")
	}
}
