// Package bench measures commit-frontend's commit against the containerd-native
// commit (the baseline docker's containerd image store and nerdctl perform)
// on the same real containers, in one run. Run it with hack/bench.sh.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/engine"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/moby/buildkit/client"
)

var (
	rootfsSizes = flag.String("bench.rootfs", "50MB,2GB", "rootfs sizes to set up: 50MB (500 files), 2GB (50k files)")
	keep        = flag.Bool("bench.keep", false, "keep the daemons' directory")
	moreImages  = flag.Int("bench.images", 0, "name the first base image this many more times in every peer's image store first: the store of a host that has committed for a while, which a commit's cost must not follow")
	ctrdWorker  = flag.Bool("bench.containerd-worker", false, "also commit through a buildkitd whose containerd worker shares the containerd and namespace (impl=commit-frontend-ctrd-worker)")
)

var env struct {
	dir  string
	ctrd *testenv.Containerd
	bk   *testenv.Buildkitd
	// bkCtrd has the containerd worker in the benchmark's namespace, nil
	// without -bench.containerd-worker.
	bkCtrd *testenv.Buildkitd
	cli    string
	bases  map[string]string // rootfs size → image name
	// podman is the second peer, nil when podman is not installed.
	podman *podman
	// nerdctl is the third peer's binary, "" when hack/install-deps.sh
	// did not build it (WITH_NERDCTL=1).
	nerdctl string
	// dockerd is the docker peers' daemon, on ctrd with the containerd
	// image store.
	dockerd *testenv.Dockerd
}

const ns = "bench"

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench setup:", err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cf-bench-")
	if err != nil {
		return 1, err
	}
	env.dir = dir
	if !*keep {
		defer os.RemoveAll(dir)
	}
	if env.podman = newPodman(dir); env.podman != nil {
		// Its overlay mounts live under dir: unmount them before it goes.
		defer func() { _, _ = env.podman.run(ctx, "system", "reset", "-f") }()
	} else {
		fmt.Fprintln(os.Stderr, "podman is not installed: the podman peer is left out")
	}
	if env.nerdctl, err = testenv.Bin("nerdctl"); err != nil {
		env.nerdctl = ""
		fmt.Fprintln(os.Stderr, "nerdctl is not built (WITH_NERDCTL=1 bash hack/install-deps.sh): the nerdctl peer is left out")
	}
	if env.ctrd, err = testenv.StartContainerd(ctx, dir); err != nil {
		return 1, err
	}
	defer env.ctrd.Stop()
	if env.bk, err = testenv.StartBuildkitd(ctx, dir, testenv.BuildkitdOpt{}); err != nil {
		return 1, err
	}
	defer env.bk.Stop()
	if env.dockerd, err = testenv.StartDockerd(ctx, dir, env.ctrd.Addr, true); err != nil {
		return 1, err
	}
	defer env.dockerd.Stop()
	if *ctrdWorker {
		env.bkCtrd, err = testenv.StartBuildkitd(ctx, dir, testenv.BuildkitdOpt{
			Name: "buildkitd-containerd", ContainerdAddr: env.ctrd.Addr, ContainerdNamespace: ns,
		})
		if err != nil {
			return 1, err
		}
		defer env.bkCtrd.Stop()
	}
	env.cli = filepath.Join(dir, "commit-frontend")
	if cli := os.Getenv("CF_TEST_CLI"); cli != "" {
		// Another build of the CLI (a release, an older commit), to
		// measure it on the same cells.
		env.cli = cli
	} else {
		_, file, _, _ := runtime.Caller(0)
		build := exec.Command("go", "build", "-o", env.cli, "./cmd/commit-frontend")
		build.Dir = filepath.Dir(filepath.Dir(file))
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("%v: %s", err, out)
		}
	}
	bk, err := solve.Connect(ctx, env.bk.Addr)
	if err != nil {
		return 1, err
	}
	defer bk.Close()
	env.bases = map[string]string{}
	for _, size := range strings.Split(*rootfsSizes, ",") {
		name, err := baseImage(ctx, bk, size)
		if err != nil {
			return 1, err
		}
		env.bases[size] = name
	}
	if *moreImages > 0 {
		if err := nameMore(ctx, env.bases[strings.Split(*rootfsSizes, ",")[0]], *moreImages); err != nil {
			return 1, err
		}
	}
	fmt.Fprintf(os.Stderr, "machine: %d CPUs, %s, %s\n", runtime.NumCPU(), runtime.Version(), kernel())
	return m.Run(), nil
}

func kernel() string {
	dt, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "linux " + strings.TrimSpace(string(dt))
}

// baseImage makes a base image of the given size — busybox plus files of
// incompressible content — and imports it into containerd, unpacked.
func baseImage(ctx context.Context, bk *client.Client, size string) (string, error) {
	files, fileSize := 500, 100_000 // 50MB
	if size == "2GB" {
		files, fileSize = 50_000, 40_000
	} else if size != "50MB" {
		return "", fmt.Errorf("unknown rootfs size %q", size)
	}
	start := time.Now()
	rootfs := filepath.Join(env.dir, "rootfs-"+size)
	if err := testenv.BusyboxRootfs(rootfs); err != nil {
		return "", err
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, fileSize)
	for i := 0; i < files; i++ {
		d := filepath.Join(rootfs, "data", strconv.Itoa(i/1000))
		if i%1000 == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return "", err
			}
		}
		_, _ = rng.Read(buf)
		if err := os.WriteFile(filepath.Join(d, strconv.Itoa(i)), buf, 0o644); err != nil {
			return "", err
		}
	}
	tar := filepath.Join(env.dir, "base-"+size+".tar")
	if err := testenv.BuildRootfsImage(ctx, bk, rootfs, tar, "uncompressed"); err != nil {
		return "", err
	}
	os.RemoveAll(rootfs)
	name := "docker.io/bench/base:" + strings.ToLower(size)
	if _, err := env.ctrd.Ctr(ctx, ns, "images", "import", "--index-name", name, tar); err != nil {
		return "", err
	}
	if env.podman != nil {
		if err := env.podman.load(ctx, tar, name); err != nil {
			return "", err
		}
	}
	if err := loadDocker(ctx, env.dockerd, tar, name); err != nil {
		return "", err
	}
	os.Remove(tar)
	fmt.Fprintf(os.Stderr, "base image %s: %d files of %d bytes, ready in %s\n", name, files, fileSize, time.Since(start).Round(time.Second))
	return name, nil
}

// nameMore names image n more times (docker.io/bench/more:1..n) in the
// benchmark's containerd namespace, in docker's (moby, on the same
// containerd) and in podman's store.
func nameMore(ctx context.Context, image string, n int) error {
	cc, err := containerd.New(env.ctrd.Addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	var names []string
	for _, namespace := range []string{ns, "moby"} {
		nctx := namespaces.WithNamespace(ctx, namespace)
		img, err := cc.ImageService().Get(nctx, image)
		if err != nil {
			return err
		}
		names = names[:0]
		for i := 1; i <= n; i++ {
			img.Name = fmt.Sprintf("docker.io/bench/more:%d", i)
			names = append(names, img.Name)
			if _, err := cc.ImageService().Create(nctx, img); err != nil {
				return err
			}
		}
	}
	if env.podman != nil {
		if _, err := env.podman.run(ctx, append([]string{"tag", image}, names...)...); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "%s named %d more times in every image store\n", image, n)
	return nil
}

// change is what a container writes before it is committed.
type change struct {
	name  string
	apply func(root string) error
}

var changes = []change{
	// A container that changed nothing: what a commit costs on its own.
	{"none", func(string) error { return nil }},
	{"1KiB", func(root string) error { return writeRandom(filepath.Join(root, "change-1k"), 1024, 1) }},
	{"10k-files", func(root string) error {
		d := filepath.Join(root, "many")
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		for i := 0; i < 10_000; i++ {
			if err := writeRandom(filepath.Join(d, strconv.Itoa(i)), 512, uint64(i)); err != nil {
				return err
			}
		}
		return nil
	}},
	// 10,000 files of 512 bytes in a directory of the base the container
	// removed and made again (as pip and npm replace a package's): overlayfs
	// marks it opaque.
	{"dir-replaced", func(root string) error {
		d := filepath.Join(root, "data", "0")
		if err := os.RemoveAll(d); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
		for i := 0; i < 10_000; i++ {
			if err := writeRandom(filepath.Join(d, strconv.Itoa(i)), 512, uint64(i)); err != nil {
				return err
			}
		}
		return nil
	}},
	{"1GiB", func(root string) error {
		for i := 0; i < 8; i++ {
			if err := writeRandom(filepath.Join(root, "big-"+strconv.Itoa(i)), 128<<20, uint64(i)); err != nil {
				return err
			}
		}
		return nil
	}},
	// 1 GiB that compresses (hex text, about 2:1 with gzip), as source
	// trees, logs and model configs do: the random cell above measures the
	// passes, this one the compressor. (Not "1GiB-…": BENCH patterns match
	// name parts anywhere.)
	{"1024MiB-text", func(root string) error {
		for i := 0; i < 8; i++ {
			if err := writeHexText(filepath.Join(root, "text-"+strconv.Itoa(i)), 128<<20, uint64(i)); err != nil {
				return err
			}
		}
		return nil
	}},
}

// writeHexText writes n bytes of lines of hex digits of random bytes.
func writeHexText(p string, n int, seed uint64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(time.Now().UnixNano())})
	raw := make([]byte, 32)
	line := make([]byte, 65)
	line[64] = '\n'
	w := bufio.NewWriterSize(f, 1<<20)
	for ; n > 0; n -= len(line) {
		_, _ = rng.Read(raw)
		hex.Encode(line[:64], raw)
		if _, err := w.Write(line[:min(n, len(line))]); err != nil {
			return err
		}
	}
	return w.Flush()
}

func writeRandom(p string, n int, seed uint64) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(time.Now().UnixNano())})
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, len(buf))
		_, _ = rng.Read(buf[:k])
		if _, err := f.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// BenchmarkCommit runs the matrix: rootfs × change × compression × page
// cache, each cell with both implementations on fresh containers.
// Sub-benchmark names end in impl=commit-frontend or impl=containerd-native;
// hack/benchtable pairs them into ratios.
func BenchmarkCommit(b *testing.B) {
	for _, size := range strings.Split(*rootfsSizes, ",") {
		for _, ch := range changes {
			// gzip-1: ours at --compression-level 1; the native commit
			// cannot set a level and writes containerd's default gzip.
			for _, comp := range []string{"gzip", "gzip-1", "zstd", "uncompressed"} {
				for _, cache := range []string{"warm", "cold"} {
					// commit-frontend-engine: the same CLI with no
					// buildkitd named, BuildKit's engine in the process.
					impls := []string{"commit-frontend", "commit-frontend-pause-brief", "commit-frontend-engine", "containerd-native"}
					if env.bkCtrd != nil {
						impls = append(impls, "commit-frontend-ctrd-worker")
					}
					if comp == "uncompressed" && env.podman != nil {
						impls = append(impls, "podman")
					}
					// nerdctl commit writes gzip or zstd, at its defaults.
					if (comp == "gzip" || comp == "zstd") && env.nerdctl != "" {
						impls = append(impls, "nerdctl")
					}
					// docker commit writes gzip.
					if comp == "gzip" {
						impls = append(impls, "docker-commit", "commit-frontend-docker", "commit-frontend-docker-engine")
					}
					for _, impl := range impls {
						name := fmt.Sprintf("rootfs=%s/change=%s/compression=%s/cache=%s/impl=%s", size, ch.name, comp, cache, impl)
						b.Run(name, func(b *testing.B) { benchCell(b, env.bases[size], ch, comp, cache == "cold", impl) })
					}
				}
			}
		}
	}
}

func benchCell(b *testing.B, base string, ch change, compression string, cold bool, impl string) {
	ctx := context.Background()
	if impl == "podman" {
		b.StopTimer()
		var cpu time.Duration
		for i := 0; i < b.N; i++ {
			cpu += benchPodman(b, base, ch, cold)
		}
		b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
		return
	}
	if impl == "docker-commit" || impl == "commit-frontend-docker" || impl == "commit-frontend-docker-engine" {
		b.StopTimer()
		var client, daemons, paused time.Duration
		for i := 0; i < b.N; i++ {
			c, d, p := benchDocker(b, base, ch, cold, impl)
			client, daemons, paused = client+c, daemons+d, paused+p
		}
		b.ReportMetric((client+daemons).Seconds()/float64(b.N), "cpu-s/op")
		b.ReportMetric(client.Seconds()/float64(b.N), "client-cpu-s/op")
		if paused > 0 {
			b.ReportMetric(paused.Seconds()*1000/float64(b.N), "paused-ms/op")
		}
		return
	}
	cc, err := containerd.New(env.ctrd.Addr, containerd.WithDefaultNamespace(ns))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	bk, err := solve.Connect(ctx, env.bk.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer bk.Close()
	var cpu, clientCPU time.Duration
	var sent, maxRSS int64
	var paused time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
		if _, err := env.ctrd.Ctr(ctx, ns, "run", "-d", base, id, "sleep", "3600"); err != nil {
			b.Fatal(err)
		}
		removed := false
		remove := func() {
			if removed {
				return
			}
			removed = true
			_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "kill", "-s", "KILL", id)
			time.Sleep(100 * time.Millisecond)
			_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "rm", "-f", id)
			_, _ = env.ctrd.Ctr(ctx, ns, "containers", "rm", id)
		}
		b.Cleanup(remove) // also after a failed iteration
		root := pidRoot(b, cc, id)
		if err := ch.apply(root); err != nil {
			b.Fatal(err)
		}
		if cold {
			dropCaches(b)
		}
		ref := "docker.io/bench/out:" + id
		daemons0 := daemonCPU()
		b.StartTimer()
		switch impl {
		case "commit-frontend", "commit-frontend-ctrd-worker", "commit-frontend-engine", "commit-frontend-pause-brief":
			args := []string{"commit", "--address", env.ctrd.Addr, "-n", ns}
			switch impl {
			case "commit-frontend", "commit-frontend-pause-brief":
				args = append(args, "--addr", env.bk.Addr)
			case "commit-frontend-ctrd-worker":
				args = append(args, "--addr", env.bkCtrd.Addr)
			}
			md := filepath.Join(env.dir, id+".json")
			comp := []string{"--compression", compression}
			if name, level, ok := strings.Cut(compression, "-"); ok {
				comp = []string{"--compression", name, "--compression-level", level}
			}
			if impl == "commit-frontend-pause-brief" {
				args = append(args, "--pause=brief")
			}
			cmd := exec.Command(env.cli, append(append(args, comp...), "--metadata-file", md, id, ref)...)
			if impl == "commit-frontend-engine" {
				for _, kv := range os.Environ() {
					if !strings.HasPrefix(kv, "BUILDKIT_HOST=") {
						cmd.Env = append(cmd.Env, kv)
					}
				}
				cmd.Env = append(cmd.Env, engine.RootEnv+"="+filepath.Join(env.dir, "engine"))
			}
			cpu, peak := timeClient(b, cmd)
			clientCPU, maxRSS = clientCPU+cpu, max(maxRSS, peak)
			n, p := changeSetSize(b, md)
			sent, paused = sent+n, paused+p
		case "nerdctl":
			cmd := exec.Command(env.nerdctl, "--address", env.ctrd.Addr, "--namespace", ns, "--data-root", filepath.Join(env.dir, "nerdctl"),
				"commit", "--compression", compression, "--format", "oci", id, ref)
			cpu, peak := timeClient(b, cmd)
			clientCPU, maxRSS = clientCPU+cpu, max(maxRSS, peak)
		default:
			var ru0, ru1 syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
			if _, err := nativeCommit(ctx, cc, id, ref, strings.TrimSuffix(compression, "-1")); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
			clientCPU += time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
		}
		cpu += daemonCPU() - daemons0
		remove()
		_, _ = env.ctrd.Ctr(ctx, ns, "images", "rm", "--sync", ref)
		// Keep buildkitd's cache from filling the disk: every 1 GiB commit
		// leaves the received change set, the applied snapshot and the blob.
		// Least recently used goes first, so the base (used by every commit)
		// stays and the timed commits never pull it again.
		if err := bk.Prune(ctx, nil, client.WithKeepOpt(0, 0, 6<<30, 0)); err != nil {
			b.Fatal(err)
		}
		if env.bkCtrd != nil {
			if err := pruneBuildkitd(ctx, env.bkCtrd.Addr); err != nil {
				b.Fatal(err)
			}
		}
	}
	n := float64(b.N)
	b.ReportMetric((clientCPU+cpu).Seconds()/n, "cpu-s/op")
	b.ReportMetric(clientCPU.Seconds()/n, "client-cpu-s/op")
	if maxRSS > 0 {
		b.ReportMetric(float64(maxRSS)/(1<<20), "client-maxrss-MiB")
	}
	if sent > 0 {
		b.ReportMetric(float64(sent)/n/(1<<20), "sent-MiB/op")
	}
	if paused > 0 {
		b.ReportMetric(paused.Seconds()*1000/n, "paused-ms/op")
	}
	b.ReportMetric(float64(peakRSS(env.bk.Cmd.Process.Pid))/(1<<20), "buildkitd-peakrss-MiB")
}

// runSampled runs cmd and returns its output and its peak RSS, sampled from
// /proc/PID/status (VmHWM, a high-water mark, so the last sample is the peak
// up to the last 10 ms). getrusage's ru_maxrss cannot be used: Go starts a
// child with vfork, and Linux carries the parent's peak into the child's.
func runSampled(cmd *exec.Cmd) ([]byte, int64, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	done := make(chan struct{})
	peak := make(chan int64)
	go func() {
		var p int64
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			p = max(p, peakRSS(cmd.Process.Pid))
			select {
			case <-done:
				peak <- p
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	return out.Bytes(), <-peak, err
}

func dropCaches(b *testing.B) {
	_ = exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		b.Fatal(err)
	}
}

func pidRoot(b *testing.B, cc *containerd.Client, id string) string {
	c, err := cc.LoadContainer(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	t, err := c.Task(context.Background(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf("/proc/%d/root", t.Pid())
}

func changeSetSize(b *testing.B, md string) (int64, time.Duration) {
	dt, err := os.ReadFile(md)
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(md)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(dt, &m); err != nil {
		b.Fatal(err)
	}
	var paused time.Duration
	var ps string
	if json.Unmarshal(m["commit-frontend.paused"], &ps) == nil {
		paused, _ = time.ParseDuration(ps)
	}
	var cs changeset.Manifest
	raw := m["commit-frontend.changeset"]
	if err := json.Unmarshal(raw, &cs); err != nil {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if dec, err := base64.StdEncoding.DecodeString(s); err == nil {
				_ = json.Unmarshal(dec, &cs)
			}
		}
	}
	return cs.TarSize, paused
}

func pruneBuildkitd(ctx context.Context, addr string) error {
	c, err := solve.Connect(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Prune(ctx, nil, client.WithKeepOpt(0, 0, 6<<30, 0))
}

// daemonCPU is the CPU time the buildkitds and containerd (with its shims'
// parent) have used so far.
func daemonCPU() time.Duration {
	d := procCPU(env.bk.Cmd.Process.Pid) + procCPU(env.ctrd.Cmd.Process.Pid) + procCPU(env.dockerd.Cmd.Process.Pid)
	if env.bkCtrd != nil {
		d += procCPU(env.bkCtrd.Cmd.Process.Pid)
	}
	return d
}

func procCPU(pid int) time.Duration {
	dt, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(dt)
	fields := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100
}

func peakRSS(pid int) int64 {
	dt, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(dt), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// timeClient runs the timed command, stops the timer when it ends, and
// returns its CPU time and peak RSS.
func timeClient(b *testing.B, cmd *exec.Cmd) (time.Duration, int64) {
	out, peak, err := runSampled(cmd)
	if err != nil {
		b.Fatalf("%s: %v: %s", filepath.Base(cmd.Path), err, out)
	}
	b.StopTimer()
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), peak
}
