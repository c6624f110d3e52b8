package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/images"
)

// importDockerfileImage builds text (a Dockerfile whose FROM is the
// registry's busybox) with BuildKit's Dockerfile frontend and imports the
// image into namespace ns as name (docker.io/library/NAME:latest).
func importDockerfileImage(t *testing.T, ns, name, text string) string {
	t.Helper()
	ctrd(t, ns)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": text})
	ref := "docker.io/library/" + name + ":latest"
	out := filepath.Join(dir, "out.tar")
	if r := run(t, dir, tool("buildctl"), "--addr", env.bk.Addr, "build", "--frontend", "dockerfile.v0",
		"--local", "context=.", "--local", "dockerfile=.", "--output", "type=oci,dest="+out+",name="+ref); r.err != nil {
		t.Fatalf("building %s: %v\n%s", name, r.err, r.stderr)
	}
	if o, err := env.ctrd.Ctr(context.Background(), ns, "images", "import", "--all-platforms", out); err != nil {
		t.Fatalf("importing %s: %v\n%s", name, err, o)
	}
	return ref
}

// storedImage returns the image named ref in the container's namespace.
func storedImage(t *testing.T, ct *container, ref string) images.Image {
	t.Helper()
	img, err := ct.c.ImageService().Get(context.Background(), ref)
	if err != nil {
		t.Fatalf("image %s: %v", ref, err)
	}
	return img
}

// TestCommitConfigOnly: a commit with --change WORKDIR and ENV of a
// container whose image has an ONBUILD trigger gives what docker commit
// gives: one new layer, one history entry, the changes in the config
// alone, no trigger run and none left in the config. A second commit of
// the unchanged container is a new image of its own time.
func TestCommitConfigOnly(t *testing.T) {
	const ns = "default"
	base := importDockerfileImage(t, ns, "onbuild-base", "FROM "+env.base.Ref+"\nRUN echo base > /base-file\nONBUILD RUN echo triggered > /onbuild-ran\n")
	ct := startContainerFrom(t, ns, "overlayfs", base, "config-only", "echo changed > /changed", true)
	baseImg := storedImage(t, ct, base)
	baseCfg := dockerImageConfig(t, ct.c, baseImg)
	if len(baseCfg.Config.OnBuild) != 1 {
		t.Fatalf("the base has OnBuild %q", baseCfg.Config.OnBuild)
	}
	ref := "example.com/config-only:1"
	r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "-c", "WORKDIR /home/app", "-c", "ENV A=1 B=x", "config-only", ref)...)...)
	img := storedImage(t, ct, ref)
	cfg := dockerImageConfig(t, ct.c, img)
	m := imageManifest(t, ct.c, img)
	if n := len(m.Layers) - len(imageManifest(t, ct.c, baseImg).Layers); n != 1 {
		t.Errorf("%d layers added, want 1", n)
	}
	added := cfg.History[len(baseCfg.History):]
	if len(added) != 1 || added[0].EmptyLayer {
		t.Errorf("history entries added: %+v, want one with a layer", added)
	}
	if cfg.Config.WorkingDir != "/home/app" || !contains(cfg.Config.Env, "A=1") || !contains(cfg.Config.Env, "B=x") {
		t.Errorf("config %+v", cfg.Config)
	}
	if len(cfg.Config.OnBuild) != 0 {
		t.Errorf("OnBuild %q: docker commit leaves the base's triggers out", cfg.Config.OnBuild)
	}
	tree := imageTree(t, ct.c, ref, "overlayfs")
	if _, ok := tree["onbuild-ran"]; ok {
		t.Error("the base's ONBUILD trigger ran in the commit")
	}
	if _, ok := tree["home/app"]; ok {
		t.Error("WORKDIR made a directory: a change is config only")
	}
	if _, ok := tree["changed"]; !ok {
		t.Error("the container's change is not in the image")
	}

	// Again, unchanged: a new image, of the second commit's own time.
	r2 := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "config-only", ref)...)...)
	if r2.stdout == r.stdout {
		t.Errorf("the second commit returned the first image %s", strings.TrimSpace(r.stdout))
	}
	cfg2 := imageConfig(t, ct.c, storedImage(t, ct, ref))
	if cfg.Created == nil || cfg2.Created == nil || !cfg2.Created.After(*cfg.Created) {
		t.Errorf("created %v then %v: each commit has its own time", cfg.Created, cfg2.Created)
	}
	if h := cfg2.History[len(cfg2.History)-1]; h.Created == nil || !h.Created.Equal(*cfg2.Created) {
		t.Errorf("the entry's time %v is not the image's %v", h.Created, cfg2.Created)
	}
}
