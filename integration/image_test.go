package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/platforms"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
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

// TestCommitMovedTag: the container's image name was moved to another image
// after the container was made (kubelet re-pulls :latest; `ctr images tag
// --force`): the commit still stands on the container's own layers, found
// by their chain ID under another name, and refuses, naming both, when no
// image has them.
func TestCommitMovedTag(t *testing.T) {
	const ns = "default"
	app := importDockerfileImage(t, ns, "moved-app", "FROM "+env.base.Ref+"\nRUN echo app > /from-app\n")
	keep := "docker.io/library/moved-app-keep:latest"
	ctx := context.Background()
	if o, err := env.ctrd.Ctr(ctx, ns, "images", "tag", app, keep); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	other := importDockerfileImage(t, ns, "moved-other", "FROM "+env.base.Ref+"\nRUN rm /bin/vi && echo other > /from-other\n")
	ct := startContainerFrom(t, ns, "overlayfs", app, "moved-tag", "echo changed > /changed", true)
	if o, err := env.ctrd.Ctr(ctx, ns, "images", "tag", "--force", other, app); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	ref := "example.com/moved-tag:1"
	r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "moved-tag", ref)...)...)
	tree := imageTree(t, ct.c, ref, "overlayfs")
	for _, p := range []string{"from-app", "changed", "bin/vi"} {
		if _, ok := tree[p]; !ok {
			t.Errorf("/%s is missing: the commit is not on the container's own layers", p)
		}
	}
	if _, ok := tree["from-other"]; ok {
		t.Error("/from-other is in the image: the commit stood on the image the name was moved to")
	}
	if !strings.Contains(r.stderr, "moved-app-keep") {
		t.Errorf("stderr does not say which image the commit stood on:\n%s", r.stderr)
	}

	// No image left with the container's layers: refused, nothing landed.
	for _, name := range []string{keep} {
		if o, err := env.ctrd.Ctr(ctx, ns, "images", "rm", name); err != nil {
			t.Fatalf("%v: %s", err, o)
		}
	}
	bad := cfFail(t, "", append([]string{"commit"}, append(ctrArgs(ns), "moved-tag", "example.com/moved-tag:2")...)...)
	if !strings.Contains(bad.stderr, app) || !strings.Contains(bad.stderr, "no image in the namespace has them") {
		t.Errorf("error does not name the image and say what is missing:\n%s", bad.stderr)
	}
	if _, err := ct.c.ImageService().Get(ctx, "example.com/moved-tag:2"); err == nil {
		t.Error("a refused commit left an image")
	}
}

// TestCommitWhiteoutNameAndAbsoluteExclude: a file the container named
// /etc/.wh.passwd never deletes /etc/passwd (it is left out, named on
// stderr, counted), `--exclude /root/.ssh` (a container path as users
// write it) keeps the secret out, and a pattern that excludes nothing is
// named — on both readers (overlayfs upper directory, native walking diff).
func TestCommitWhiteoutNameAndAbsoluteExclude(t *testing.T) {
	const ns = "default"
	for _, sn := range []string{"overlayfs", "native"} {
		t.Run(sn, func(t *testing.T) {
			id := "wh-name-" + sn
			startContainer(t, ns, sn, id, "touch /etc/.wh.passwd; mkdir -p /root/.ssh /srv; echo secret > /root/.ssh/id_ed25519; echo kept > /srv/kept", true)
			dir := t.TempDir()
			out, md := filepath.Join(dir, "out.tar"), filepath.Join(dir, "md.json")
			r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--output", "type=oci,dest="+out, "--metadata-file", md,
				"--exclude", "/root/.ssh", "--exclude", "/no/such/path", id)...)...)
			img := readOCITar(t, out)
			var all map[string]layerEntry
			for _, l := range img.Layers {
				for k, v := range layerEntries(t, l) {
					if all == nil {
						all = map[string]layerEntry{}
					}
					all[k] = v
				}
			}
			layer := layerEntries(t, img.Layers[len(img.Layers)-1])
			for p := range layer {
				if strings.HasPrefix(p, "etc/.wh.") || strings.HasPrefix(p, "root/.ssh/") {
					t.Errorf("%s is in the new layer", p)
				}
			}
			if string(layer["srv/kept"].Data) != "kept\n" {
				t.Errorf("srv/kept missing from the layer")
			}
			if _, ok := all["etc/passwd"]; !ok {
				t.Error("/etc/passwd is gone from the image")
			}
			for _, want := range []string{`"/etc/.wh.passwd"`, `--exclude "/no/such/path" excluded nothing`} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not say %s:\n%s", want, r.stderr)
				}
			}
			if strings.Contains(r.stderr, `"/root/.ssh" excluded nothing`) {
				t.Errorf("an absolute pattern that excluded something is reported unused:\n%s", r.stderr)
			}
			m := readMetadata(t, md)
			if m["commit-frontend.whiteout-names-skipped"] != "1" || m["commit-frontend.excluded"] != "1" {
				t.Errorf("metadata whiteout-names-skipped=%q excluded=%q", m["commit-frontend.whiteout-names-skipped"], m["commit-frontend.excluded"])
			}
		})
	}
}

// TestCommitCompressionLevelZero: --compression-level 0 is gzip's "store",
// honoured both when the layer is gzipped on its way into containerd and
// when BuildKit writes an --output; not the default level.
func TestCommitCompressionLevelZero(t *testing.T) {
	const ns = "default"
	id := "level-zero"
	ct := startContainer(t, ns, "overlayfs", id, "dd if=/dev/zero of=/zeros bs=1M count=2 2>/dev/null", true)
	ref := "example.com/level-zero:1"
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--compression-level", "0", id, ref)...)...)
	m := imageManifest(t, ct.c, storedImage(t, ct, ref))
	if l := m.Layers[len(m.Layers)-1]; !strings.Contains(l.MediaType, "gzip") || l.Size < 2<<20 {
		t.Errorf("layer %s of %d bytes: want gzip that stores 2 MiB of zeros as they are", l.MediaType, l.Size)
	}
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), id, ref)...)...)
	m = imageManifest(t, ct.c, storedImage(t, ct, ref))
	if l := m.Layers[len(m.Layers)-1]; l.Size > 1<<20 {
		t.Errorf("default level: layer of %d bytes", l.Size)
	}
	out := filepath.Join(t.TempDir(), "out.tar")
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--compression-level", "0", "--output", "type=oci,dest="+out, id)...)...)
	img := readOCITar(t, out)
	if l := img.Manifest.Layers[len(img.Manifest.Layers)-1]; l.Size < 2<<20 {
		t.Errorf("--output: layer of %d bytes, want 2 MiB of zeros stored", l.Size)
	}
}

// TestHistoryEscapes: what a container's command, an author or a message
// holds reaches the terminal escaped, each entry on its own line, in
// `commit-frontend history` as in errors.
func TestHistoryEscapes(t *testing.T) {
	const ns = "default"
	id := "history-escapes"
	startContainer(t, ns, "overlayfs", id, "echo '\x1b]0;owned\x07' > /x #\x1b[2J", true)
	ref := "example.com/history-escapes:1"
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "-a", "evil\x1b[31m", "-m", "line one\nFORGED\tline", id, ref)...)...)
	r := cf(t, "", append([]string{"history"}, append(ctrArgs(ns), ref)...)...)
	if strings.ContainsAny(r.stdout, "\x1b\x07") {
		t.Errorf("raw control characters in history: %q", r.stdout)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if strings.HasPrefix(strings.TrimSpace(lines[len(lines)-1]), "FORGED") || !strings.Contains(r.stdout, `line one\nFORGED\tline`) || !strings.Contains(r.stdout, `evil\x1b[31m`) {
		t.Errorf("history:\n%s", r.stdout)
	}
	if len(lines) != 1+len(baseImage(t).Config.History)+1 {
		t.Errorf("%d lines, want a header and one per entry:\n%s", len(lines), r.stdout)
	}
}

// TestCommitOtherPlatform: a container made from the arm64 image of a
// two-platform index (on an amd64 machine) is committed on the arm64
// image's layers, as an arm64 image: the base is the manifest whose layers
// the snapshot stands on, not this machine's platform's.
func TestCommitOtherPlatform(t *testing.T) {
	const ns = "default"
	c := ctrd(t, ns)
	ctx := context.Background()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Dockerfile": "FROM scratch\nARG TARGETARCH\nCOPY $TARGETARCH /arch\n", "amd64": "amd64\n", "arm64": "arm64\n"})
	ref := "docker.io/library/two-platforms:latest"
	out := filepath.Join(dir, "out.tar")
	if r := run(t, dir, tool("buildctl"), "--addr", env.bk.Addr, "build", "--frontend", "dockerfile.v0", "--opt", "platform=linux/amd64,linux/arm64",
		"--local", "context=.", "--local", "dockerfile=.", "--output", "type=oci,dest="+out+",name="+ref); r.err != nil {
		t.Fatalf("building: %v\n%s", r.err, r.stderr)
	}
	if o, err := env.ctrd.Ctr(ctx, ns, "images", "import", "--all-platforms", out); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	rec, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	arm := ocispecs.Platform{OS: "linux", Architecture: "arm64"}
	img := containerd.NewImageWithPlatform(c, rec, platforms.Only(arm))
	if err := img.Unpack(ctx, "overlayfs"); err != nil {
		t.Fatal(err)
	}
	const id = "other-platform"
	ct, err := c.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id, img), containerd.WithNewSpec(oci.WithImageConfigArgs(img, []string{"/bin/app"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ct.Delete(context.WithoutCancel(ctx), containerd.WithSnapshotCleanup) })
	mounts, err := c.SnapshotService("overlayfs").Mounts(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	writeViaMount(t, mounts, map[string]string{"changed": "by the container\n"})

	outTar := filepath.Join(t.TempDir(), "commit.tar")
	cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--output", "type=oci,dest="+outTar, id)...)...)
	got := readOCITar(t, outTar)
	if got.Config.Architecture != "arm64" {
		t.Errorf("the image is %s/%s, want linux/arm64", got.Config.OS, got.Config.Architecture)
	}
	if n := len(got.Layers); n != 2 {
		t.Fatalf("%d layers, want the base's one and the commit's", n)
	}
	if e := layerEntries(t, got.Layers[0])["arch"]; string(e.Data) != "arm64\n" {
		t.Errorf("the base layer holds /arch %q: not the arm64 image's", e.Data)
	}
	if e := layerEntries(t, got.Layers[1])["changed"]; string(e.Data) != "by the container\n" {
		t.Errorf("the commit's layer lacks the change")
	}
}

// TestK8sMovedTag: kubelet re-pulled the pod's image tag (:latest now names
// another image) after the container started: k8s://NAMESPACE/POD/CONTAINER
// still commits on the container's own layers.
func TestK8sMovedTag(t *testing.T) {
	const ns = "k8s.io"
	app := importDockerfileImage(t, ns, "k8s-app", "FROM "+env.base.Ref+"\nRUN echo app > /from-app\n")
	ctx := context.Background()
	// The image keeps a second name, as kubelet keeps a repo@digest one.
	if o, err := env.ctrd.Ctr(ctx, ns, "images", "tag", app, "docker.io/library/k8s-app-pinned:latest"); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	other := importDockerfileImage(t, ns, "k8s-other", "FROM "+env.base.Ref+"\nRUN rm /bin/vi && echo other > /from-other\n")
	startContainerWith(t, ns, "overlayfs", app, "moved-k8s", podLabels("moved-pod", "main", "container"), "echo changed > /changed; touch /ready; exec sleep 3600", false)
	if o, err := env.ctrd.Ctr(ctx, ns, "images", "tag", "--force", other, app); err != nil {
		t.Fatalf("%v: %s", err, o)
	}
	img, _ := commitOCI(t, ns, "k8s://shop/moved-pod/main")
	files := map[string]bool{}
	for _, l := range img.Layers {
		for p := range layerEntries(t, l) {
			files[p] = true
		}
	}
	if !files["from-app"] || files["from-other"] || !files["changed"] {
		t.Errorf("from-app %v, from-other %v, changed %v: want the container's own layers and its change", files["from-app"], files["from-other"], files["changed"])
	}
}
