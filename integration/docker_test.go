package integration

// Tests against a real Docker Engine (dockerd built from the pinned moby
// module) with the containerd image store on the test containerd.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/commit"
	cfcontainer "github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	dockercontainer "github.com/moby/moby/api/types/container"
	dockerclient "github.com/moby/moby/client"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

var dockerEnv struct {
	once sync.Once
	d    *testenv.Dockerd
	err  error
}

// dockerd starts, once, a dockerd with the containerd image store on the
// test containerd, with the busybox base image loaded.
func dockerd(t *testing.T) *testenv.Dockerd {
	t.Helper()
	dockerEnv.once.Do(func() {
		ctx := context.Background()
		d, err := testenv.StartDockerd(ctx, env.dir, env.ctrd.Addr, true)
		if err != nil {
			dockerEnv.err = err
			return
		}
		dockerEnv.d = d
		if _, err := d.Docker(ctx, "load", "-i", env.base.Tar); err != nil {
			dockerEnv.err = err
		}
	})
	if dockerEnv.err != nil {
		t.Fatalf("dockerd: %v", dockerEnv.err)
	}
	return dockerEnv.d
}

func stopDockerd() {
	if dockerEnv.d != nil {
		dockerEnv.d.Stop()
	}
}

// docker runs the docker CLI and fails the test if it fails.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := dockerd(t).Docker(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// dockerRun starts a container running script and waits for /ready.
func dockerRun(t *testing.T, name string, runArgs []string, script string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--network", "none", "--name", name}, runArgs...)
	id := docker(t, append(args, "busybox", "sh", "-c", script)...)
	t.Cleanup(func() {
		_, _ = dockerd(t).Docker(context.Background(), "rm", "-f", name)
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := dockerd(t).Docker(context.Background(), "exec", name, "test", "-f", "/ready"); err == nil {
			return id
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("container %s did not get ready", name)
	return ""
}

// cfDocker runs `commit-frontend commit --docker` against the test dockerd.
func cfDocker(t *testing.T, args ...string) result {
	t.Helper()
	return cfDockerEnv(t, nil, args...)
}

// dockerEngineRoot is the state directory of the engine that commits the
// test dockerd's containers.
func dockerEngineRoot() string { return filepath.Join(env.dir, "docker-engine") }

// cfDockerEnv is cfDocker with more environment variables.
func cfDockerEnv(t *testing.T, extra []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// No containerd address, namespace or buildkitd: dockerd tells
	// where its containerd is, and brings its own BuildKit.
	cmd := exec.CommandContext(ctx, env.cli, append([]string{"commit", "--docker"}, args...)...)
	var env2 []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BUILDKIT_HOST=") && !strings.HasPrefix(kv, "CONTAINERD_") {
			env2 = append(env2, kv)
		}
	}
	cmd.Env = append(append(env2, "DOCKER_HOST="+dockerd(t).Host, "COMMIT_FRONTEND_ENGINE_ROOT="+dockerEngineRoot()), extra...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

// dockerManifest reads an image's manifest for this platform from
// docker's containerd namespace.
func dockerManifest(t *testing.T, ref string) ocispecs.Manifest {
	t.Helper()
	c := ctrd(t, "moby")
	ctx := context.Background()
	img, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	// An image buildx loads is an index (with its attestations).
	desc, _, err := cfcontainer.PlatformManifest(ctx, c.ContentStore(), img.Target, platforms.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	return imageManifest(t, c, images.Image{Target: desc})
}

// dockerImage reads an image's config from docker's containerd namespace.
func dockerImage(t *testing.T, ref string) dockerspec.DockerOCIImage {
	t.Helper()
	c := ctrd(t, "moby")
	ctx := context.Background()
	m := dockerManifest(t, ref)
	dt, err := content.ReadBlob(ctx, c.ContentStore(), m.Config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg dockerspec.DockerOCIImage
	if err := json.Unmarshal(dt, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestDockerCommit commits the same docker container with docker commit and
// with commit-frontend commit --docker, through dockerd's own BuildKit (the
// default) and through the engine in the CLI, and compares the images.
func TestDockerCommit(t *testing.T) {
	name := "docker-commit"
	dockerRun(t, name, []string{"-e", "FOO=bar", "-w", "/tmp", "--label", "run=label"},
		"echo hi > /tmp/hi; mkdir /data; echo x > /data/x; rm /bin/vi; "+
			// Large enough for the engine to gzip it on its way.
			"dd if=/dev/urandom of=/data/big bs=1M count=9 2>/dev/null; touch /ready; exec sleep 3600")
	change := []string{"-a", "Jane <jane@example.com>", "-m", "a message", "-c", "LABEL x=y", "-c", "EXPOSE 8080",
		"-c", "WORKDIR /srv/app", "-c", "ENV B=$FOO-x", "-c", "ONBUILD RUN make", "-c", "STOPSIGNAL SIGINT"}
	start := time.Now().Add(-time.Second).Unix()
	theirs := docker(t, append(append([]string{"commit"}, change...), name, "example.com/theirs:1")...)
	theirEvents := docker(t, "events", "--since", strconv.FormatInt(start, 10), "--until", strconv.FormatInt(time.Now().Unix()+1, 10),
		"--filter", "type=image", "--filter", "image="+theirs, "--format", "{{.Action}}")
	for _, route := range []struct {
		name, env, ref string
		// events tells that docker reports the image's creation.
		events bool
	}{
		{"dockerd-buildkit", "", "example.com/ours:1", true},
		{"engine", "COMMIT_FRONTEND_DOCKER_ROUTE=engine", "example.com/ours:2", false},
	} {
		t.Run(route.name, func(t *testing.T) {
			var extra []string
			if route.env != "" {
				extra = append(extra, route.env)
			}
			start := time.Now().Add(-time.Second).Unix()
			r := cfDockerEnv(t, extra, append(change, name, route.ref)...)
			if r.err != nil {
				t.Fatalf("commit --docker: %v\n%s", r.err, r.stderr)
			}
			until := strconv.FormatInt(time.Now().Unix()+1, 10)
			// The pause went through docker, so docker's view of the
			// container was right all along.
			events := docker(t, "events", "--since", strconv.FormatInt(start, 10), "--until", until,
				"--filter", "container="+name, "--format", "{{.Action}}")
			if !strings.Contains(events, "pause") || !strings.Contains(events, "unpause") {
				t.Errorf("docker saw no pause and unpause: %q", events)
			}
			ours := strings.TrimSpace(r.stdout)
			// docker reports the image's creation as docker commit's.
			imageEvents := docker(t, "events", "--since", strconv.FormatInt(start, 10), "--until", until,
				"--filter", "type=image", "--filter", "image="+ours, "--format", "{{.Action}}")
			if got := strings.Fields(imageEvents); route.events && !slices.Equal(got, []string{"create", "tag"}) {
				t.Errorf("docker reported %q for the image, and %q for docker commit's", got, theirEvents)
			}
			if !strings.HasPrefix(ours, "sha256:") || ours == theirs {
				t.Fatalf("ours %q, docker's %q", ours, theirs)
			}
			if id := docker(t, "image", "inspect", "-f", "{{.Id}}", route.ref); id != ours {
				t.Errorf("docker inspect says %s, commit printed %s", id, ours)
			}
			if !strings.Contains(docker(t, "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"), ours+" "+route.ref) {
				t.Errorf("docker images does not list %s", ours)
			}
			o, d := dockerImage(t, route.ref), dockerImage(t, "example.com/theirs:1")
			if !reflect.DeepEqual(o.Config, d.Config) {
				oj, _ := json.MarshalIndent(o.Config, "", "  ")
				dj, _ := json.MarshalIndent(d.Config, "", "  ")
				t.Errorf("config differs from docker commit's:\nours:\n%s\ndocker's:\n%s", oj, dj)
			}
			if !reflect.DeepEqual(o.RootFS, d.RootFS) {
				t.Errorf("layers differ: ours %v, docker's %v", o.RootFS.DiffIDs, d.RootFS.DiffIDs)
			}
			// docker's media types, the new layer gzip, as docker commit's.
			om, dm := dockerManifest(t, route.ref), dockerManifest(t, "example.com/theirs:1")
			mediaTypes := func(m ocispecs.Manifest) []string {
				out := []string{m.MediaType, m.Config.MediaType}
				for _, l := range m.Layers {
					out = append(out, l.MediaType)
				}
				return out
			}
			if o, d := mediaTypes(om), mediaTypes(dm); !slices.Equal(o, d) {
				t.Errorf("media types %q, docker commit's %q", o, d)
			}
			if len(o.History) != len(d.History) {
				t.Fatalf("%d history entries, docker %d:\nours %+v\ndocker's %+v", len(o.History), len(d.History), o.History, d.History)
			}
			oh, dh := o.History[len(o.History)-1], d.History[len(d.History)-1]
			if oh.CreatedBy != dh.CreatedBy || oh.Author != dh.Author || oh.Comment != dh.Comment || oh.EmptyLayer != dh.EmptyLayer {
				t.Errorf("history entry %+v, docker's %+v", oh, dh)
			}
			if o.Author != d.Author || o.OS != d.OS || o.Architecture != d.Architecture {
				t.Errorf("author/platform %q %s/%s, docker's %q %s/%s", o.Author, o.OS, o.Architecture, d.Author, d.OS, d.Architecture)
			}
			if out := docker(t, "run", "--rm", "--network", "none", route.ref, "cat", "/tmp/hi", "/data/x"); out != "hi\nx" {
				t.Errorf("docker run of the commit: %q", out)
			}
			if out := docker(t, "history", "--no-trunc", "--format", "{{.Comment}}", route.ref); !strings.HasPrefix(out, "a message") {
				t.Errorf("docker history: %q", out)
			}
			if st := docker(t, "inspect", "-f", "{{.State.Status}}", name); st != "running" {
				t.Errorf("container %s after the commit", st)
			}
		})
	}
}

// TestDockerCommitStates: a docker container named by short ID, paused by
// the user, or stopped, committed untagged; and bad names.
func TestDockerCommitStates(t *testing.T) {
	id := dockerRun(t, "docker-states", nil, "echo state > /state; touch /ready; exec sleep 3600")

	t.Run("short ID, untagged", func(t *testing.T) {
		r := cfDocker(t, id[:12])
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		img := strings.TrimSpace(r.stdout)
		if out := docker(t, "images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"); !strings.Contains(out, img+" <none>:<none>") {
			t.Errorf("docker images does not show %s as a dangling image:\n%s", img, out)
		}
		if out := docker(t, "run", "--rm", "--network", "none", img, "cat", "/state"); out != "state" {
			t.Errorf("run: %q", out)
		}
	})
	t.Run("paused by the user", func(t *testing.T) {
		docker(t, "pause", "docker-states")
		defer docker(t, "unpause", "docker-states")
		if r := cfDocker(t, "docker-states", "example.com/states:paused"); r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if st := docker(t, "inspect", "-f", "{{.State.Status}}", "docker-states"); st != "paused" {
			t.Errorf("container %s, want paused as the user left it", st)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		docker(t, "stop", "-t", "1", "docker-states")
		r := cfDocker(t, "docker-states", "example.com/states:stopped")
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		if out := docker(t, "run", "--rm", "--network", "none", "example.com/states:stopped", "cat", "/state"); out != "state" {
			t.Errorf("run: %q", out)
		}
		if st := docker(t, "inspect", "-f", "{{.State.Status}}", "docker-states"); st != "exited" {
			t.Errorf("container %s, want exited", st)
		}
	})
	t.Run("through another buildkitd", func(t *testing.T) {
		r := cfDocker(t, "--addr", env.bk.Addr, "docker-states", "example.com/states:other-buildkitd")
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		img := strings.TrimSpace(r.stdout)
		if id := docker(t, "image", "inspect", "-f", "{{.Id}}", "example.com/states:other-buildkitd"); id != img {
			t.Errorf("docker says %s, commit printed %s", id, img)
		}
		if out := docker(t, "run", "--rm", "--network", "none", img, "cat", "/state"); out != "state" {
			t.Errorf("run: %q", out)
		}
	})
	t.Run("docker context", func(t *testing.T) {
		cfgDir := t.TempDir()
		ctx := context.Background()
		ctxCmd := func(args ...string) {
			cmd := exec.CommandContext(ctx, "docker", args...)
			if p, err := testenv.Bin("docker"); err == nil {
				cmd.Path, cmd.Args[0] = p, p
			}
			cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+cfgDir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		ctxCmd("context", "create", "cf-test", "--docker", "host="+dockerd(t).Host)
		ctxCmd("context", "use", "cf-test")
		// No DOCKER_HOST: the current context of docker's config says
		// where docker is.
		cmd := exec.CommandContext(ctx, env.cli, "commit", "--docker", "docker-states", "example.com/states:context")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "DOCKER_HOST=") && !strings.HasPrefix(kv, "BUILDKIT_HOST=") && !strings.HasPrefix(kv, "CONTAINERD_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+cfgDir, "COMMIT_FRONTEND_ENGINE_ROOT="+dockerEngineRoot())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if id := docker(t, "image", "inspect", "-f", "{{.Id}}", "example.com/states:context"); id != strings.TrimSpace(string(out)) {
			t.Errorf("docker says %s, commit printed %s", id, out)
		}
	})
	t.Run("provenance", func(t *testing.T) {
		r := cfDocker(t, "--provenance", "docker-states", "example.com/states:attested")
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		c := ctrd(t, "moby")
		img, err := c.ImageService().Get(context.Background(), "example.com/states:attested")
		if err != nil {
			t.Fatal(err)
		}
		if !images.IsIndexType(img.Target.MediaType) {
			t.Errorf("the image is a %s, not an index with its attestation", img.Target.MediaType)
		}
		if out := docker(t, "run", "--rm", "--network", "none", "example.com/states:attested", "cat", "/state"); out != "state" {
			t.Errorf("run: %q", out)
		}
	})
	t.Run("no such container", func(t *testing.T) {
		r := cfDocker(t, "no-such-container")
		if r.err == nil || !strings.Contains(r.stderr, "no such docker container: no-such-container") || r.stdout != "" {
			t.Errorf("%v\nstdout %q\nstderr %s", r.err, r.stdout, r.stderr)
		}
	})
}

// TestDockerWithoutContainerdStore: docker keeping its images with a graph
// driver gets a message saying how to turn the containerd image store on.
func TestDockerWithoutContainerdStore(t *testing.T) {
	ctx := context.Background()
	d, err := testenv.StartDockerd(ctx, env.dir, env.ctrd.Addr, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	cmd := exec.CommandContext(ctx, env.cli, "commit", "--docker", "--address", env.ctrd.Addr, "anything")
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `"containerd-snapshotter": true`) {
		t.Errorf("%v\n%s", err, out)
	}
}

// TestBuildxDockerDriver builds a `# syntax=` Commitfile with `docker
// buildx build --load` on buildx's docker driver, that is dockerd's own
// BuildKit, and runs the result with docker.
func TestBuildxDockerDriver(t *testing.T) {
	ref := frontendImage(t)
	d := dockerd(t)
	ctxDir, cs := gatewayFixture(t, "# syntax="+ref+"\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool("buildx"), "build", "--builder", "default", "--progress", "plain",
		"--build-context", "rootfs="+cs, "--load", "-t", "example.com/buildx-docker:1", ".")
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host, "BUILDX_CONFIG="+t.TempDir(), "DOCKER_CONFIG="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildx build on the docker driver: %v\n%s", err, out)
	}
	if got := docker(t, "run", "--rm", "--network", "none", "example.com/buildx-docker:1", "cat", "/srv/index.html"); got != "hello" {
		t.Errorf("run: %q", got)
	}
	img := dockerImage(t, "example.com/buildx-docker:1")
	found := false
	for _, h := range img.History {
		found = found || (h.CreatedBy == "COMMIT rootfs" && h.Comment == "gateway" && !h.EmptyLayer)
	}
	if !found || img.Config.Labels["via"] != "gateway" {
		t.Errorf("history %+v, labels %v", img.History, img.Config.Labels)
	}
}

// TestDockerClassicBuilderSteps plays moby's classic builder against the
// CommitBuildStep adapter: each step runs in a docker container as the
// classic builder runs it, and DockerBuilder commits it. The image equals,
// layer by layer and in config and history, what dockerd's own classic
// builder (DOCKER_BUILDKIT=0 docker build) makes of the same Dockerfile.
func TestDockerClassicBuilderSteps(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": `FROM busybox
RUN echo step1 > /s1
LABEL a=b
RUN mkdir /d && echo two > /d/two && rm /bin/vi
CMD ["cat", "/s1"]
`})
	classicBuild(t, dir, "example.com/classic:1")
	b := dockerBuilder(t)
	imageConfig := func(id string) *dockercontainer.Config {
		var c dockercontainer.Config
		mustJSON(t, []byte(docker(t, "image", "inspect", "-f", "{{json .Config}}", id)), &c)
		return &c
	}
	parent := docker(t, "image", "inspect", "-f", "{{.Id}}", "busybox")
	run := func(i int, shell string) {
		cfg := imageConfig(parent)
		ccfg := *cfg
		ccfg.Cmd = []string{"/bin/sh", "-c", shell}
		name := "classic-step-" + strconv.Itoa(i)
		docker(t, "create", "--network", "none", "--name", name, parent, "/bin/sh", "-c", shell)
		defer docker(t, "rm", name)
		docker(t, "start", "-a", name)
		id, err := b.CommitBuildStep(ctx, commit.DockerStep{Config: cfg, ContainerConfig: &ccfg, ContainerID: docker(t, "inspect", "-f", "{{.Id}}", name), ParentImageID: parent})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		parent = id.String()
	}
	meta := func(instruction string, change func(*dockercontainer.Config)) {
		cfg := imageConfig(parent)
		change(cfg)
		ccfg := *cfg
		ccfg.Cmd = []string{"/bin/sh", "-c", "#(nop) ", instruction}
		id, err := b.CommitBuildStep(ctx, commit.DockerStep{Config: cfg, ContainerConfig: &ccfg, ParentImageID: parent})
		if err != nil {
			t.Fatalf("%s: %v", instruction, err)
		}
		parent = id.String()
	}
	run(1, "echo step1 > /s1")
	meta("LABEL a=b", func(c *dockercontainer.Config) {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels["a"] = "b"
	})
	run(2, "mkdir /d && echo two > /d/two && rm /bin/vi")
	meta(`CMD ["cat" "/s1"]`, func(c *dockercontainer.Config) { c.Cmd = []string{"cat", "/s1"} })
	docker(t, "tag", parent, "example.com/steps:1")

	o, c := dockerImage(t, "example.com/steps:1"), dockerImage(t, "example.com/classic:1")
	if !reflect.DeepEqual(o.Config, c.Config) {
		oj, _ := json.MarshalIndent(o.Config, "", "  ")
		cj, _ := json.MarshalIndent(c.Config, "", "  ")
		t.Errorf("config differs from the classic builder's:\nours:\n%s\nclassic:\n%s", oj, cj)
	}
	// The steps ran at other times than the classic build's: the layers
	// are the same but for mtimes.
	ol, cl := layerSummaries(t, "example.com/steps:1"), layerSummaries(t, "example.com/classic:1")
	if len(ol) != len(cl) || o.RootFS.DiffIDs[0] != c.RootFS.DiffIDs[0] {
		t.Fatalf("layers: ours %v, classic %v", o.RootFS.DiffIDs, c.RootFS.DiffIDs)
	}
	for i := range ol {
		if !reflect.DeepEqual(ol[i], cl[i]) {
			t.Errorf("layer %d differs:\nours:\n%s\nclassic:\n%s", i, strings.Join(ol[i], "\n"), strings.Join(cl[i], "\n"))
		}
	}
	if len(o.History) != len(c.History) {
		t.Fatalf("%d history entries, classic %d", len(o.History), len(c.History))
	}
	for i := range o.History {
		oh, ch := o.History[i], c.History[i]
		if oh.CreatedBy != ch.CreatedBy || oh.EmptyLayer != ch.EmptyLayer || oh.Author != ch.Author || oh.Comment != ch.Comment {
			t.Errorf("history %d: %+v, classic %+v", i, oh, ch)
		}
	}
	if out := docker(t, "run", "--rm", "--network", "none", "example.com/steps:1"); out != "step1" {
		t.Errorf("run: %q", out)
	}
}

// layerSummaries describes each layer of an image in docker's namespace,
// entry by entry, with everything a layer tar holds but mtimes.
func layerSummaries(t *testing.T, ref string) [][]string {
	t.Helper()
	c := ctrd(t, "moby")
	ctx := context.Background()
	var out [][]string
	for _, l := range dockerManifest(t, ref).Layers {
		dt, err := content.ReadBlob(ctx, c.ContentStore(), l)
		if err != nil {
			t.Fatal(err)
		}
		var entries []string
		for name, e := range layerEntries(t, decompress(t, dt, l.MediaType)) {
			h := e.Header
			entries = append(entries, fmt.Sprintf("%q %c %o %d:%d size=%d link=%q dev=%d,%d sha=%x pax=%v",
				name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Size, h.Linkname, h.Devmajor, h.Devminor, sha256.Sum256(e.Data), h.PAXRecords))
		}
		sort.Strings(entries)
		out = append(out, entries)
	}
	return out
}

// TestDockerCommitTree: a docker container's change set sent as its tree
// through dockerd's own BuildKit gives the very layer `docker commit` gives
// (same diff ID), and the image runs.
func TestDockerCommitTree(t *testing.T) {
	name := "docker-commit-tree"
	dockerRun(t, name, nil, "mkdir /data && dd if=/dev/urandom of=/data/big bs=1M count=4 2>/dev/null && echo x > /data/x && "+
		"chown 1:2 /data/x && ln /data/x /data/x2 && rm /bin/vi; touch /ready; exec sleep 3600")
	t.Setenv("COMMIT_FRONTEND_TRANSFER", "tree")
	md := filepath.Join(t.TempDir(), "md.json")
	r := cfDocker(t, "--metadata-file", md, name, "example.com/ours-tree:1")
	if r.err != nil {
		t.Fatalf("commit --docker: %v\n%s", r.err, r.stderr)
	}
	if dt, err := os.ReadFile(md); err != nil || !strings.Contains(string(dt), `"commit-frontend.transfer": "tree"`) {
		t.Errorf("not sent as a tree: %v\n%s", err, dt)
	}
	docker(t, "commit", name, "example.com/theirs-tree:1")
	o, d := dockerImage(t, "example.com/ours-tree:1"), dockerImage(t, "example.com/theirs-tree:1")
	if !reflect.DeepEqual(o.RootFS, d.RootFS) {
		t.Errorf("layers differ: ours %v, docker's %v", o.RootFS.DiffIDs, d.RootFS.DiffIDs)
	}
	if out := docker(t, "run", "--rm", "--network", "none", "example.com/ours-tree:1", "sh", "-c", "stat -c %u:%g /data/x; ls /bin/vi 2>&1; wc -c < /data/big"); out != "1:2\nls: /bin/vi: No such file or directory\n4194304" {
		t.Errorf("docker run of the commit: %q", out)
	}
}

// TestDockerCommitHardLinksToBase: a container that adds a user (a base
// file changed, then linked) and hard-links new names to unchanged files of
// its image gets, from commit
// --docker, the very layer docker commit writes (docker writes the new
// name with the bytes and the base's name as a link to it), through either
// transfer; and the commits leave nothing in docker's build cache.
func TestDockerCommitHardLinksToBase(t *testing.T) {
	name := "docker-links-to-base"
	dockerRun(t, name, nil, "set -e; echo 'app:x:1000:1000::/home/app:/bin/sh' >> /etc/passwd; mkdir -p /home/app; chown 1000:1000 /home/app; "+
		"ln /etc/group /aa-link; ln /etc/passwd /etc/zz-link; mkdir -p /usr/local/bin; ln /bin/busybox /usr/local/bin/bb; "+
		"echo new > /new; ln /new /new2; touch /ready; exec sleep 3600")
	docker(t, "commit", name, "example.com/links-theirs:1")
	theirs := dockerImage(t, "example.com/links-theirs:1").RootFS.DiffIDs
	before := dockerBuildCache(t)
	for _, transfer := range []string{"tar", "tree"} {
		t.Run(transfer, func(t *testing.T) {
			t.Setenv("COMMIT_FRONTEND_TRANSFER", transfer)
			ref := "example.com/links-ours-" + transfer + ":1"
			if r := cfDocker(t, name, ref); r.err != nil {
				t.Fatalf("commit --docker: %v\n%s", r.err, r.stderr)
			}
			ours := dockerImage(t, ref).RootFS.DiffIDs
			if !reflect.DeepEqual(ours, theirs) {
				t.Errorf("diff IDs %v, docker commit's %v", ours, theirs)
				o, d := layerSummaries(t, ref), layerSummaries(t, "example.com/links-theirs:1")
				t.Errorf("new layer:\nours   %q\ndocker %q", o[len(o)-1], d[len(d)-1])
			}
			if out := docker(t, "run", "--rm", "--network", "none", ref, "sh", "-c", "stat -c %h /etc/passwd /etc/group /new; id app"); !strings.HasPrefix(out, "2\n2\n2\nuid=1000") {
				t.Errorf("the image's links and user: %q", out)
			}
		})
	}
	for id, desc := range dockerBuildCache(t) {
		if _, ok := before[id]; !ok {
			t.Errorf("the commits left record %s (%s) in docker's build cache", id, desc)
		}
	}
}

// dockerBuildCache lists the records of docker's build cache (ID →
// description), as `docker system df -v` counts them.
func dockerBuildCache(t *testing.T) map[string]string {
	t.Helper()
	dc, err := dockerclient.New(dockerclient.WithHost(dockerd(t).Host))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	bk, err := solve.ConnectDocker(context.Background(), dc)
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	du, err := bk.DiskUsage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, u := range du {
		out[u.ID] = string(u.RecordType) + " " + u.Description
	}
	return out
}

// TestDockerBuildStepNoOnbuild: a builder step whose parent image has an
// ONBUILD trigger commits the step alone: the trigger (which the builder
// runs as a step of its own when it reads FROM) never runs in the commit.
func TestDockerBuildStepNoOnbuild(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM busybox\nONBUILD RUN echo triggered > /onbuild-ran\n"})
	classicBuild(t, dir, "example.com/onbuild-base:1")
	b := dockerBuilder(t)
	parent := docker(t, "image", "inspect", "-f", "{{.Id}}", "example.com/onbuild-base:1")
	var cfg dockercontainer.Config
	mustJSON(t, []byte(docker(t, "image", "inspect", "-f", "{{json .Config}}", parent)), &cfg)
	cfg.OnBuild = nil // the builder clears the triggers it has run
	ccfg := cfg
	ccfg.Cmd = []string{"/bin/sh", "-c", "echo step > /step"}
	name := "onbuild-step"
	docker(t, "create", "--network", "none", "--name", name, parent, "/bin/sh", "-c", "echo step > /step")
	defer docker(t, "rm", name)
	docker(t, "start", "-a", name)
	id, err := b.CommitBuildStep(ctx, commit.DockerStep{Config: &cfg, ContainerConfig: &ccfg, ContainerID: docker(t, "inspect", "-f", "{{.Id}}", name), ParentImageID: parent})
	if err != nil {
		t.Fatal(err)
	}
	docker(t, "tag", id.String(), "example.com/onbuild-step:1")
	img, base := dockerImage(t, "example.com/onbuild-step:1"), dockerImage(t, "example.com/onbuild-base:1")
	if len(img.RootFS.DiffIDs) != len(base.RootFS.DiffIDs)+1 || len(img.History) != len(base.History)+1 {
		t.Errorf("%d layers and %d history entries on the base's %d and %d: want one of each", len(img.RootFS.DiffIDs), len(img.History), len(base.RootFS.DiffIDs), len(base.History))
	}
	if out := docker(t, "run", "--rm", "--network", "none", id.String(), "sh", "-c", "cat /step; ls /onbuild-ran 2>&1 || true"); out != "step\nls: /onbuild-ran: No such file or directory" {
		t.Errorf("the step's image: %q", out)
	}
}

// classicBuild builds dir with dockerd's classic builder (DOCKER_BUILDKIT=0)
// as tag.
func classicBuild(t *testing.T, dir, tag string) {
	t.Helper()
	cmd := exec.Command("docker", "-H", dockerd(t).Host, "build", "--network", "none", "-t", tag, dir)
	if p, err := testenv.Bin("docker"); err == nil {
		cmd.Path, cmd.Args[0] = p, p
	}
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("classic build: %v\n%s", err, out)
	}
}

// dockerBuilder is the CommitBuildStep backend on the test dockerd.
func dockerBuilder(t *testing.T) *commit.DockerBuilder {
	t.Helper()
	dc, err := dockerclient.New(dockerclient.WithHost(dockerd(t).Host), dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	return &commit.DockerBuilder{Client: commit.Client{Docker: dc, Containerd: ctrd(t, "moby"), Namespace: "moby"}}
}
