package integration

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestExamplePipeline builds examples/pipeline with commit-frontend build and
// with buildx through the frontend image, and checks the image.
func TestExamplePipeline(t *testing.T) {
	dir := filepath.Join(env.repoRoot, "examples", "pipeline")
	out := filepath.Join(t.TempDir(), "app.tar")
	site := "site=" + filepath.Join(dir, "site")
	cf(t, dir, "build", "--progress", "quiet", "--build-arg", "BASE="+env.base.Ref, "--build-context", site, "--output", "type=oci,dest="+out, ".")
	checkExample(t, out)

	// The site stage alone: one layer, the COMMIT's entry with its author
	// and message.
	siteOut := filepath.Join(t.TempDir(), "site.tar")
	cf(t, dir, "build", "--progress", "quiet", "--target", "published", "--build-context", site, "--output", "type=oci,dest="+siteOut, ".")
	img := readOCITar(t, siteOut)
	h := img.Config.History
	if len(h) != 1 || len(img.Manifest.Layers) != 1 || h[0].CreatedBy != "COMMIT site" || h[0].Author != "Web team <web@example.com>" || h[0].Comment != "the site as published" || img.Config.Author != h[0].Author {
		t.Errorf("site image: history %+v, %d layers, author %q", h, len(img.Manifest.Layers), img.Config.Author)
	}

	ref := frontendImage(t)
	builder := "cf-remote"
	if r := run(t, dir, tool("buildx"), "inspect", builder); r.err != nil {
		if r = run(t, dir, tool("buildx"), "create", "--name", builder, "--driver", "remote", env.bk.Addr); r.err != nil {
			t.Fatalf("buildx create: %v\n%s", r.err, r.stderr)
		}
	}
	out = filepath.Join(t.TempDir(), "app.tar")
	r := run(t, dir, tool("buildx"), "build", "--builder", builder, "--progress", "plain",
		"--build-arg", "BUILDKIT_SYNTAX="+ref, "--build-arg", "BASE="+env.base.Ref, "--build-context", "site=site",
		"-f", "Commitfile", "--output", "type=oci,dest="+out, ".")
	if r.err != nil {
		t.Fatalf("buildx build: %v\n%s", r.err, r.stderr)
	}
	checkExample(t, out)
}

func checkExample(t *testing.T, out string) {
	t.Helper()
	img := readOCITar(t, out)
	base := baseImage(t)
	steps := nonEmptyHistory(&img.Config)[len(base.Manifest.Layers):]
	// WORKDIR makes its directory: a layer, as in a Dockerfile.
	if len(steps) != 5 || len(img.Manifest.Layers) != len(base.Manifest.Layers)+5 {
		t.Fatalf("want 5 layers (install, adduser, workdir, copy app, copy site): %+v", steps)
	}
	if !strings.Contains(steps[0].CreatedBy, "cp -a /tmp/packages/bin/.") || steps[2].CreatedBy != "WORKDIR /srv/app" || !strings.HasPrefix(steps[3].CreatedBy, "COPY --chown=1000:1000 --chmod=0755 app/ ./") {
		t.Errorf("history: %+v", steps)
	}
	files := map[string]layerEntry{}
	for _, l := range img.Layers[len(base.Manifest.Layers):] {
		for k, v := range layerEntries(t, l) {
			files[k] = v
		}
	}
	if e := files["srv/app/public/index.html"]; !strings.Contains(string(e.Data), "hello from the site") {
		t.Errorf("srv/app/public/index.html = %q", e.Data)
	}
	if e := files["etc/greet.version"]; string(e.Data) != "greet 1.0\n" {
		t.Errorf("etc/greet.version = %q", e.Data)
	}
	if _, ok := files["tmp/packages/bin/greet"]; ok {
		t.Errorf("the bind-mounted packages leaked into the layer")
	}
	if e := files["srv/app/run.sh"]; e.Header == nil || e.Header.Uid != 1000 || e.Header.Mode&0o777 != 0o755 {
		t.Errorf("srv/app/run.sh: %+v", e.Header)
	}
	c := img.Config.Config
	if c.User != "app" || c.WorkingDir != "/srv/app" || c.Cmd[0] != "./run.sh" || !contains(c.Env, "GREETING=hello from the pipeline") {
		t.Errorf("config: %+v", c)
	}
}
