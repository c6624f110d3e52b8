package integration

import (
	"archive/tar"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commit-frontend/commit-frontend/changeset"
)

// frontendImage builds the frontend image from Dockerfile.frontend with the
// binary built in TestMain (no network, no base image) and pushes it to the
// test registry.
func frontendImage(t *testing.T) string {
	t.Helper()
	env.feOnce.Do(func() {
		ctxDir := filepath.Join(env.dir, "frontend-image")
		if err := os.MkdirAll(filepath.Join(ctxDir, "bin"), 0o755); err != nil {
			env.feErr = err
			return
		}
		dt, err := os.ReadFile(env.cli)
		if err != nil {
			env.feErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "bin", "commit-frontend"), dt, 0o755); err != nil {
			env.feErr = err
			return
		}
		df, err := os.ReadFile(filepath.Join(env.repoRoot, "Dockerfile.frontend"))
		if err != nil {
			env.feErr = err
			return
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile.frontend"), df, 0o644); err != nil {
			env.feErr = err
			return
		}
		ref := env.reg.Host + "/commit-frontend:test"
		r := run(t, ctxDir, tool("buildctl"), "--addr", env.bk.Addr, "build", "--progress", "plain",
			"--frontend", "dockerfile.v0", "--local", "context=.", "--local", "dockerfile=.",
			"--opt", "filename=Dockerfile.frontend", "--opt", "build-arg:BINARY=prebuilt",
			"--output", "type=image,name="+ref+",push=true,registry.insecure=true")
		if r.err != nil {
			env.feErr = r.err
			t.Logf("building the frontend image:\n%s", r.stderr)
			return
		}
		env.frontend = ref
	})
	if env.feErr != nil {
		t.Fatalf("frontend image: %v", env.feErr)
	}
	return env.frontend
}

// gatewayFixture writes a Commitfile and a change set and returns the dirs.
func gatewayFixture(t *testing.T, firstLine string) (ctxDir, cs string) {
	t.Helper()
	dir := t.TempDir()
	cs = filepath.Join(dir, "cs")
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "srv/index.html", Mode: 0o644, Uid: 33, Gid: 33, Size: 6}, "hello\n")
		_ = w.Delete("bin/vi")
	})
	ctxDir = filepath.Join(dir, "ctx")
	writeFiles(t, ctxDir, map[string]string{"Dockerfile": firstLine + "FROM " + env.base.Ref + `
COMMIT --message=gateway rootfs
LABEL via=gateway
CMD ["httpd", "-f", "-h", "/srv"]
`})
	return ctxDir, cs
}

func checkGatewayImage(t *testing.T, out string) {
	t.Helper()
	img := readOCITar(t, out)
	base := baseImage(t)
	if len(img.Manifest.Layers) != len(base.Manifest.Layers)+1 {
		t.Fatalf("layers: %d", len(img.Manifest.Layers))
	}
	l := layerEntries(t, img.Layers[len(img.Layers)-1])
	if e := l["srv/index.html"]; e.Header == nil || e.Header.Uid != 33 || string(e.Data) != "hello\n" {
		t.Errorf("srv/index.html: %+v", e)
	}
	if _, ok := l["bin/.wh.vi"]; !ok {
		t.Errorf("no whiteout for bin/vi: %q", keys(l))
	}
	if img.Config.Config.Labels["via"] != "gateway" {
		t.Errorf("labels: %v", img.Config.Config.Labels)
	}
	var commit bool
	for _, h := range img.Config.History {
		if h.CreatedBy == "COMMIT rootfs" && h.Comment == "gateway" && !h.EmptyLayer {
			commit = true
		}
	}
	if !commit {
		t.Errorf("no COMMIT history entry: %+v", img.Config.History)
	}
}

// TestGatewayBuildctl runs the frontend image through
// `buildctl build --frontend gateway.v0 --opt source=IMAGE`.
func TestGatewayBuildctl(t *testing.T) {
	ref := frontendImage(t)
	ctxDir, cs := gatewayFixture(t, "")
	out := filepath.Join(t.TempDir(), "out.tar")
	r := run(t, ctxDir, tool("buildctl"), "--addr", env.bk.Addr, "build", "--progress", "plain",
		"--frontend", "gateway.v0", "--opt", "source="+ref, "--opt", "filename=Dockerfile",
		"--local", "context=.", "--local", "dockerfile=.", "--local", "rootfs="+cs,
		"--output", "type=oci,dest="+out)
	if r.err != nil {
		t.Fatalf("buildctl: %v\n%s", r.err, r.stderr)
	}
	checkGatewayImage(t, out)
}

// TestBuildxSyntax builds a file whose first line is `# syntax=IMAGE` with
// standalone buildx on the remote driver: the `docker buildx build` path.
func TestBuildxSyntax(t *testing.T) {
	ref := frontendImage(t)
	ctxDir, cs := gatewayFixture(t, "# syntax="+ref+"\n")
	builder := "cf-remote"
	r := run(t, ctxDir, tool("buildx"), "inspect", builder)
	if r.err != nil {
		if r = run(t, ctxDir, tool("buildx"), "create", "--name", builder, "--driver", "remote", env.bk.Addr); r.err != nil {
			t.Fatalf("buildx create: %v\n%s", r.err, r.stderr)
		}
	}
	out := filepath.Join(t.TempDir(), "out.tar")
	r = run(t, ctxDir, tool("buildx"), "build", "--builder", builder, "--progress", "plain",
		"--build-context", "rootfs="+cs, "--output", "type=oci,dest="+out, ".")
	if r.err != nil {
		t.Fatalf("buildx build: %v\n%s", r.err, r.stderr)
	}
	checkGatewayImage(t, out)

	// A bad line is reported with its line number through buildx as well.
	writeFiles(t, ctxDir, map[string]string{"Dockerfile": "# syntax=" + ref + "\nFROM scratch\nNOPE x\n"})
	r = run(t, ctxDir, tool("buildx"), "build", "--builder", builder, "--progress", "plain", ".")
	if r.err == nil {
		t.Fatalf("buildx build of a bad file succeeded")
	}
	if !containsAll(r.stderr, "unknown instruction: NOPE", "Dockerfile:3") {
		t.Errorf("buildx error output:\n%s", r.stderr)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestGatewayOptionsOnly builds from frontend options alone through the
// gateway image, as `buildctl --opt` users do, with no Commitfile at all.
func TestGatewayOptionsOnly(t *testing.T) {
	ref := frontendImage(t)
	_, cs := gatewayFixture(t, "")
	empty := t.TempDir()
	out := filepath.Join(t.TempDir(), "out.tar")
	r := run(t, empty, tool("buildctl"), "--addr", env.bk.Addr, "build", "--progress", "plain",
		"--frontend", "gateway.v0", "--opt", "source="+ref,
		"--opt", "base="+env.base.Ref, "--opt", "commit=rootfs", "--opt", "message=gateway",
		"--opt", "change=LABEL via=gateway\nCMD [\"httpd\", \"-f\", \"-h\", \"/srv\"]",
		"--local", "rootfs="+cs, "--output", "type=oci,dest="+out)
	if r.err != nil {
		t.Fatalf("buildctl: %v\n%s", r.err, r.stderr)
	}
	checkGatewayImage(t, out)
}

// TestGatewaySquash: the squash-since option works for buildctl through the
// frontend image: "scratch" squashes the whole filesystem into one layer.
func TestGatewaySquash(t *testing.T) {
	ref := frontendImage(t)
	ctxDir, cs := gatewayFixture(t, "")
	out := filepath.Join(t.TempDir(), "out.tar")
	r := run(t, ctxDir, tool("buildctl"), "--addr", env.bk.Addr, "build", "--progress", "plain",
		"--frontend", "gateway.v0", "--opt", "source="+ref, "--opt", "filename=Dockerfile", "--opt", "squash-since=scratch",
		"--local", "context=.", "--local", "dockerfile=.", "--local", "rootfs="+cs,
		"--output", "type=oci,dest="+out)
	if r.err != nil {
		t.Fatalf("buildctl: %v\n%s", r.err, r.stderr)
	}
	img := readOCITar(t, out)
	if len(img.Manifest.Layers) != 1 {
		t.Fatalf("%d layers", len(img.Manifest.Layers))
	}
	l := layerEntries(t, img.Layers[0])
	if _, ok := l["bin/busybox"]; !ok || string(l["srv/index.html"].Data) != "hello\n" {
		t.Errorf("the squashed layer lacks the base or the change: %d entries", len(l))
	}
	if _, ok := l["bin/vi"]; ok {
		t.Errorf("the removed file is in the squashed layer")
	}
	if n := len(nonEmptyHistory(&img.Config)); n != 1 {
		t.Errorf("%d history entries with a layer", n)
	}
}
