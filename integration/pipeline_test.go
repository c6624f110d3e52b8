package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/commit"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

const pipeline = `ARG BASE
FROM ${BASE} AS tools
RUN echo built-in-tools-stage > /tool.txt

FROM ${BASE}
ARG VERSION=1.0
ENV APP_HOME=/srv/app
WORKDIR $APP_HOME
RUN ["/bin/sh", "-c", "echo exec-form $VERSION > exec.txt"]
RUN --mount=type=cache,target=/cache echo cached >> /cache/log && cp /cache/log cache-seen.txt
COPY --from=tools /tool.txt ./
COPY --chown=1000:1000 --chmod=0750 app.sh ./bin/
ADD payload.tar /opt/
COPY --link static/ /static/
COMMIT --message="hand-made changes" rootfs
USER 1000
SHELL ["/bin/sh", "-e", "-c"]
RUN id -u > /tmp/uid && pwd > /tmp/pwd
CMD ["./bin/app.sh"]
`

// writePipeline writes the pipeline's context: Commitfile, app.sh, a tar to
// ADD, a static dir and a change set.
func writePipeline(t *testing.T, dir, appVersion string) {
	t.Helper()
	writeFiles(t, dir, map[string]string{
		"Commitfile":        pipeline,
		"app.sh":            "#!/bin/sh\necho app " + appVersion + "\n",
		"static/index.html": "<h1>static</h1>\n",
	})
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	_ = tw.WriteHeader(&tar.Header{Name: "payload/data.txt", Mode: 0o644, Size: 8, ModTime: time.Unix(1e9, 0)})
	_, _ = tw.Write([]byte("payload\n"))
	_ = tw.Close()
	if err := os.WriteFile(filepath.Join(dir, "payload.tar"), tb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cs")); err != nil {
		writeChangeSet(t, filepath.Join(dir, "cs"), func(w *changeset.Writer) {
			entry(t, w, &tar.Header{Name: "etc/motd", Mode: 0o644, Size: 6}, "motd!\n")
		})
	}
}

// buildPipeline builds the pipeline and returns the image and the names of
// the steps that were cache hits.
func buildPipeline(t *testing.T, dir string) (*ociImage, map[string]bool, map[string]bool) {
	t.Helper()
	out := filepath.Join(dir, "out.tar")
	r := cf(t, dir, "build", "--progress", "plain", "--build-arg", "BASE="+env.base.Ref,
		"--build-context", "rootfs="+filepath.Join(dir, "cs"), "--output", "type=oci,dest="+out, dir)
	cached, ran := stepsFromProgress(r.stderr)
	return readOCITar(t, out), cached, ran
}

var vertexLine = regexp.MustCompile(`^#(\d+) (.*)$`)

// stepsFromProgress reads BuildKit's plain progress: which named steps were
// CACHED and which ran.
func stepsFromProgress(out string) (cached, ran map[string]bool) {
	names := map[string]string{}
	state := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		m := vertexLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if _, ok := names[m[1]]; !ok {
			names[m[1]] = m[2]
			continue
		}
		if m[2] == "CACHED" || strings.HasPrefix(m[2], "DONE") {
			state[m[1]] = m[2]
		}
	}
	cached, ran = map[string]bool{}, map[string]bool{}
	for id, name := range names {
		// BuildKit's Dockerfile converter names steps "[stage n/m] RUN ...".
		if strings.HasPrefix(name, "[") {
			if _, rest, ok := strings.Cut(name, "] "); ok {
				if strings.HasPrefix(rest, "FROM ") {
					continue // an image source resolves on every build
				}
				name = rest
			}
		}
		if !strings.HasPrefix(name, "RUN") && !strings.HasPrefix(name, "COPY") && !strings.HasPrefix(name, "ADD") && !strings.HasPrefix(name, "COMMIT") {
			continue
		}
		if state[id] == "CACHED" {
			cached[name] = true
		} else if state[id] != "" {
			ran[name] = true
		}
	}
	return cached, ran
}

// dockerfileFrontend builds text with BuildKit's own Dockerfile frontend
// (buildctl --frontend dockerfile.v0) on the context dir and returns the
// image.
func dockerfileFrontend(t *testing.T, dir, text string, args ...string) *ociImage {
	t.Helper()
	dfDir := t.TempDir()
	writeFiles(t, dfDir, map[string]string{"Dockerfile": text})
	out := filepath.Join(dfDir, "out.tar")
	r := run(t, dir, tool("buildctl"), append([]string{"--addr", env.bk.Addr, "build", "--progress", "plain",
		"--frontend", "dockerfile.v0", "--local", "context=" + dir, "--local", "dockerfile=" + dfDir,
		"--output", "type=oci,dest=" + out}, args...)...)
	if r.err != nil {
		t.Fatalf("the Dockerfile frontend: %v\n%s", r.err, r.stderr)
	}
	return readOCITar(t, out)
}

// historyLines describes history entries without their times.
func historyLines(h []ocispecs.History) []string {
	var out []string
	for _, e := range h {
		out = append(out, fmt.Sprintf("%s | %s | %s | empty=%v", e.CreatedBy, e.Author, e.Comment, e.EmptyLayer))
	}
	return out
}

const pipelineCommit = "COMMIT --message=\"hand-made changes\" rootfs\n"

// TestPipeline builds a Commitfile with a COMMIT among Dockerfile steps,
// and the same text without the COMMIT through BuildKit's Dockerfile
// frontend: the two images have the same history and layers but for the
// COMMIT's entry and layer.
func TestPipeline(t *testing.T) {
	dir := t.TempDir()
	writePipeline(t, dir, "v1")
	img, _, _ := buildPipeline(t, dir)
	base := baseImage(t)
	if !strings.Contains(pipeline, pipelineCommit) {
		t.Fatal("the pipeline has no COMMIT line to take out")
	}
	df := dockerfileFrontend(t, dir, strings.Replace(pipeline, pipelineCommit, "", 1), "--opt", "build-arg:BASE="+env.base.Ref)

	var ours []ocispecs.History
	commits := 0
	for _, h := range img.Config.History {
		if h.CreatedBy == "COMMIT rootfs" {
			commits++
			if h.Comment != "hand-made changes" || h.EmptyLayer {
				t.Errorf("COMMIT entry %+v", h)
			}
			continue
		}
		ours = append(ours, h)
	}
	if commits != 1 {
		t.Errorf("%d COMMIT entries, want 1", commits)
	}
	if got, want := historyLines(ours), historyLines(df.Config.History); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("history but COMMIT:\n%s\nthe Dockerfile frontend's:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(img.Manifest.Layers) != len(df.Manifest.Layers)+1 {
		t.Fatalf("layers: %d, the Dockerfile frontend's %d + COMMIT", len(img.Manifest.Layers), len(df.Manifest.Layers))
	}
	// The layers before the COMMIT are the very same blobs: the same LLB,
	// so BuildKit's cache gives one build's layers to the other.
	for i, h := range nonEmptyHistory(&img.Config) {
		if h.CreatedBy == "COMMIT rootfs" {
			break
		}
		if img.Manifest.Layers[i].Digest != df.Manifest.Layers[i].Digest {
			t.Errorf("layer %d (%s): %s, the Dockerfile frontend's %s", i, h.CreatedBy, img.Manifest.Layers[i].Digest, df.Manifest.Layers[i].Digest)
		}
	}
	if !reflect.DeepEqual(img.Config.Config, df.Config.Config) {
		t.Errorf("config %+v, the Dockerfile frontend's %+v", img.Config.Config, df.Config.Config)
	}
	if len(img.Manifest.Layers) < len(base.Manifest.Layers)+9 {
		t.Errorf("layers: %d, want base + 9", len(img.Manifest.Layers))
	}

	// The exec-form RUN did not get the build arg (no shell expands it) but
	// the ARG is in its environment, as in a Dockerfile.
	files := map[string]string{}
	owners := map[string]*tar.Header{}
	for _, l := range img.Layers[len(base.Manifest.Layers):] {
		for name, e := range layerEntries(t, l) {
			files[name] = string(e.Data)
			owners[name] = e.Header
		}
	}
	for name, want := range map[string]string{
		"srv/app/exec.txt":       "exec-form 1.0\n",
		"srv/app/cache-seen.txt": "cached\n",
		"srv/app/tool.txt":       "built-in-tools-stage\n",
		"srv/app/bin/app.sh":     "#!/bin/sh\necho app v1\n",
		"opt/payload/data.txt":   "payload\n",
		"static/index.html":      "<h1>static</h1>\n",
		"etc/motd":               "motd!\n",
		"tmp/uid":                "1000\n",
		"tmp/pwd":                "/srv/app\n",
	} {
		if files[name] != want {
			t.Errorf("%s = %q, want %q", name, files[name], want)
		}
	}
	if h := owners["srv/app/bin/app.sh"]; h == nil || h.Uid != 1000 || h.Gid != 1000 || h.Mode&0o7777 != 0o750 {
		t.Errorf("COPY --chown --chmod: %+v", h)
	}
	c := img.Config.Config
	if c.User != "1000" || c.WorkingDir != "/srv/app" || len(c.Cmd) != 1 || !contains(c.Env, "APP_HOME=/srv/app") {
		t.Errorf("config: %+v", c)
	}
}

func TestPipelineCache(t *testing.T) {
	dir := t.TempDir()
	writePipeline(t, dir, "v1")
	first, _, _ := buildPipeline(t, dir)
	again, cached, ran := buildPipeline(t, dir)
	if len(ran) != 0 {
		t.Errorf("an unchanged pipeline ran steps again: %v", keys(ran))
	}
	if len(cached) < 8 {
		t.Errorf("cache hits: %v", keys(cached))
	}
	if first.Manifest.Layers[len(first.Manifest.Layers)-1].Digest != again.Manifest.Layers[len(again.Manifest.Layers)-1].Digest {
		t.Errorf("a fully cached rebuild gave a different last layer")
	}
	// Change the source of one COPY: it and the steps after it run again,
	// the ones before it stay cached.
	writeFiles(t, dir, map[string]string{"app.sh": "#!/bin/sh\necho app v2\n"})
	_, cached, ran = buildPipeline(t, dir)
	for name := range cached {
		if strings.Contains(name, "app.sh ./bin/") || strings.HasPrefix(name, "ADD") || strings.HasPrefix(name, "COMMIT") || strings.Contains(name, "id -u") {
			t.Errorf("%q after the changed step was cached", name)
		}
	}
	for name := range ran {
		if strings.Contains(name, "exec-form") || strings.Contains(name, "/cache/log") {
			t.Errorf("%q before the changed step ran again", name)
		}
	}
	if !ran["COPY --chown=1000:1000 --chmod=0750 app.sh ./bin/"] {
		t.Errorf("the changed COPY did not run: ran %v", keys(ran))
	}
}

func TestPipelineErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"failing RUN", "FROM " + env.base.Ref + "\nENV A=1\nRUN echo some-output-before-failing; exit 3\n",
			[]string{"Commitfile:3:", "exit code: 3", "some-output-before-failing"}},
		{"unknown stage", "FROM " + env.base.Ref + "\nCOPY --from=nosuchstage /x /x\n",
			[]string{"Commitfile:2:", "nosuchstage"}},
		{"own stage", "FROM " + env.base.Ref + " AS a\nCOPY --from=a /x /x\n",
			[]string{"Commitfile:2:", "circular dependency detected on stage: a"}},
		{"missing COPY source", "FROM " + env.base.Ref + "\nCOPY nosuchfile /x\n",
			[]string{"Commitfile:2:", "nosuchfile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			writeFiles(t, ctx, map[string]string{"Commitfile": tc.file})
			out := filepath.Join(ctx, "out.tar")
			r := cfFail(t, ctx, "build", "--progress", "plain", "--output", "type=oci,dest="+out, ctx)
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if st, err := os.Stat(out); err == nil && st.Size() > 0 {
				t.Errorf("a failed build exported %d bytes", st.Size())
			}
		})
	}
}

// TestCommitBuildStep drives a classic per-step build through the Go API —
// run a container from the parent, commit it, run the next step on the
// result — and checks it gives the layers a Commitfile of the same steps gives.
func TestCommitBuildStep(t *testing.T) {
	const ns = "moby"
	c := ctrd(t, ns)
	ctx := context.Background()
	bk, err := solve.Connect(ctx, env.bk.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bk.Close()
	cl := &commit.Client{Containerd: c, Namespace: ns, Buildkit: bk}
	steps := []string{
		"echo first > /first.txt && mkdir -p /data && chown 1000:1000 /data",
		"echo second > /data/second.txt && rm /bin/vi",
	}
	parent := baseName
	parentCfg := imageConfig(t, c, mustImage(t, c, parent))
	for i, step := range steps {
		id := fmt.Sprintf("step-%d", i)
		if _, err := env.ctrd.Ctr(ctx, ns, "run", "--rm=false", parent, id, "sh", "-c", step); err != nil {
			t.Fatalf("running step %d: %v", i, err)
		}
		t.Cleanup(func() {
			_, _ = env.ctrd.Ctr(context.Background(), ns, "tasks", "rm", "-f", id)
			_, _ = env.ctrd.Ctr(context.Background(), ns, "containers", "rm", id)
		})
		cfg := dockerspec.DockerOCIImageConfig{}
		cfg.Env = parentCfg.Config.Env
		cfg.Cmd = parentCfg.Config.Cmd
		res, err := cl.CommitBuildStep(ctx, commit.StepOptions{
			Parent: parent, Snapshotter: "overlayfs", Snapshot: id,
			Config: cfg, CreatedBy: []string{"/bin/sh", "-c", step},
			Ref: fmt.Sprintf("example.com/steps:%d", i),
		})
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		parent = res.Name
	}
	res, err := cl.CommitBuildStep(ctx, commit.StepOptions{
		Parent:    parent,
		Config:    dockerspec.DockerOCIImageConfig{DockerOCIImageConfigExt: dockerspec.DockerOCIImageConfigExt{}, ImageConfig: imageConfig(t, c, mustImage(t, c, parent)).Config},
		CreatedBy: []string{"/bin/sh", "-c", "#(nop) ", `LABEL step=nop`},
		Ref:       "example.com/steps:final",
	})
	if err != nil {
		t.Fatal(err)
	}
	img := mustImage(t, c, res.Name)
	cfg := imageConfig(t, c, img)
	base := baseImage(t)
	var createdBy []string
	for _, h := range cfg.History[len(base.Config.History):] {
		createdBy = append(createdBy, fmt.Sprintf("%s empty=%v", h.CreatedBy, h.EmptyLayer))
	}
	want := []string{
		"/bin/sh -c " + steps[0] + " empty=false",
		"/bin/sh -c " + steps[1] + " empty=false",
		`/bin/sh -c #(nop)  LABEL step=nop empty=true`,
	}
	if strings.Join(createdBy, "\n") != strings.Join(want, "\n") {
		t.Errorf("history:\n%s\nwant:\n%s", strings.Join(createdBy, "\n"), strings.Join(want, "\n"))
	}

	// The same steps as a Commitfile give the same layers, up to timestamps.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Commitfile": "FROM " + env.base.Ref + "\nRUN " + steps[0] + "\nRUN " + steps[1] + "\n"})
	out := filepath.Join(dir, "out.tar")
	cf(t, dir, "build", "--progress", "quiet", "--output", "type=oci,dest="+out, dir)
	viaFile := readOCITar(t, out)
	m := imageManifest(t, c, img)
	if len(m.Layers) != len(viaFile.Manifest.Layers) {
		t.Fatalf("per-step image has %d layers, the Commitfile's %d", len(m.Layers), len(viaFile.Manifest.Layers))
	}
	for i := len(base.Manifest.Layers); i < len(m.Layers); i++ {
		stepLayer := readBlob(t, c, m.Layers[i])
		diffLayers(t, fmt.Sprintf("layer %d", i), layerEntries(t, viaFile.Layers[i]), layerEntries(t, decompress(t, stepLayer, m.Layers[i].MediaType)))
	}
}

// diffLayers compares two layers' entries, ignoring times and the mount
// points a runtime creates (dev, proc, sys).
func diffLayers(t *testing.T, what string, want, got map[string]layerEntry) {
	t.Helper()
	norm := func(m map[string]layerEntry) map[string]string {
		out := map[string]string{}
		for name, e := range m {
			if name == "dev" || name == "proc" || name == "sys" || name == "run" {
				continue
			}
			h := e.Header
			out[name] = fmt.Sprintf("type=%c mode=%o %d:%d link=%q data=%q", h.Typeflag, h.Mode&0o7777, h.Uid, h.Gid, h.Linkname, e.Data)
		}
		return out
	}
	w, g := norm(want), norm(got)
	var diffs []string
	for k, v := range w {
		if g[k] != v {
			diffs = append(diffs, fmt.Sprintf("%q: Commitfile %s, per-step %s", k, v, g[k]))
		}
	}
	for k, v := range g {
		if _, ok := w[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%q only per-step: %s", k, v))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Errorf("%s differs:\n%s", what, strings.Join(diffs, "\n"))
	}
}

func mustImage(t *testing.T, c *containerd.Client, name string) images.Image {
	t.Helper()
	img, err := c.ImageService().Get(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func readBlob(t *testing.T, c *containerd.Client, desc ocispecs.Descriptor) []byte {
	t.Helper()
	dt, err := content.ReadBlob(context.Background(), c.ContentStore(), desc)
	if err != nil {
		t.Fatal(err)
	}
	return dt
}
