package integration

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/containerd/containerd/v2/core/images"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// dockerfilePlusCommit is a Commitfile using what BuildKit's Dockerfile
// frontend offers (a secret mount, RUN --network, COPY --exclude, a COPY
// heredoc, WORKDIR) around a COMMIT of a change set.
func dockerfilePlusCommit(firstLine string) string {
	return firstLine + `FROM ` + env.base.Ref + `
RUN --mount=type=secret,id=token,required=true wc -c < /run/secrets/token | tr -d ' ' > /token-size
RUN --network=none ls /sys/class/net > /nets
COPY --exclude=*.key files/ /files/
COPY <<EOT /etc/greeting
hello from a heredoc
EOT
COMMIT --message="the container's changes" rootfs
WORKDIR /made/here
RUN cat /srv/index.html > /seen-after-commit
`
}

// dockerfileFixture writes the context, the COMMIT tree and the secret.
func dockerfileFixture(t *testing.T, firstLine string) (ctxDir, tree, secret string) {
	t.Helper()
	dir := t.TempDir()
	ctxDir = filepath.Join(dir, "ctx")
	writeFiles(t, ctxDir, map[string]string{
		"Commitfile":   dockerfilePlusCommit(firstLine),
		"files/a.txt":  "a\n",
		"files/id.key": "private\n",
	})
	tree = filepath.Join(dir, "changes")
	writeChangeSet(t, tree, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "srv/index.html", Mode: 0o644, Size: 6}, "hello\n")
	})
	secret = filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte("s3cr3t-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ctxDir, tree, secret
}

// checkDockerfileFiles checks the files of a dockerfilePlusCommit image,
// read with read(path) ("" when missing).
func checkDockerfileFiles(t *testing.T, read func(string) string) {
	t.Helper()
	for path, want := range map[string]string{
		"token-size":        "12\n",
		"nets":              "lo\n",
		"files/a.txt":       "a\n",
		"files/id.key":      "",
		"etc/greeting":      "hello from a heredoc\n",
		"srv/index.html":    "hello\n",
		"seen-after-commit": "hello\n",
	} {
		if got := read(path); got != want {
			t.Errorf("/%s = %q, want %q", path, got, want)
		}
	}
}

// imageFiles returns the contents of every file the image's layers hold,
// later layers winning.
func imageFiles(t *testing.T, img *ociImage) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, l := range img.Layers {
		for name, e := range layerEntries(t, l) {
			files[name] = string(e.Data)
		}
	}
	return files
}

// TestBuildDockerfileFeatures builds a Commitfile that uses the Dockerfile
// frontend's flags with `commit-frontend build`, and lands it with -t in
// containerd's image store.
func TestBuildDockerfileFeatures(t *testing.T) {
	ctxDir, tree, secret := dockerfileFixture(t, "")
	out := filepath.Join(t.TempDir(), "out.tar")
	cf(t, ctxDir, "build", "--progress", "plain", "--secret", "id=token,src="+secret,
		"--build-context", "rootfs="+tree, "--output", "type=oci,dest="+out, ".")
	img := readOCITar(t, out)
	files := imageFiles(t, img)
	checkDockerfileFiles(t, func(p string) string { return files[p] })
	if _, ok := files["made/here"]; !ok {
		t.Errorf("WORKDIR made no directory")
	}
	var commit bool
	for _, h := range img.Config.History {
		commit = commit || (h.CreatedBy == "COMMIT rootfs" && h.Comment == "the container's changes" && !h.EmptyLayer)
	}
	if !commit {
		t.Errorf("no COMMIT entry: %+v", img.Config.History)
	}

	// Without the secret, the RUN that needs it fails naming its line
	// (uncached: a cached step mounts nothing).
	r := cfFail(t, ctxDir, "build", "--progress", "plain", "--no-cache", "--build-context", "rootfs="+tree, "--output", "type=oci,dest="+out+".2", ".")
	if !strings.Contains(r.stderr, "Commitfile:2") || !strings.Contains(r.stderr, "secret token") {
		t.Errorf("a build without its secret:\n%s", r.stderr)
	}

	// -t: the image lands in containerd's store, unpacked, under both names.
	const ns = "cf-build"
	r = cf(t, ctxDir, "build", "--progress", "quiet", "--secret", "id=token,src="+secret, "--build-context", "rootfs="+tree,
		"--address", env.ctrd.Addr, "-n", ns, "-t", "example.com/built:1", "-t", "example.com/built:latest", ".")
	id := strings.TrimSpace(r.stdout)
	if id != img.ConfigID {
		t.Errorf("printed %q, want the image ID %s (the same build, cached)", id, img.ConfigID)
	}
	c := ctrd(t, ns)
	ctx := context.Background()
	for _, name := range []string{"example.com/built:1", "example.com/built:latest"} {
		rec, err := c.ImageService().Get(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cfg, err := images.Config(ctx, c.ContentStore(), rec.Target, nil)
		if err != nil || cfg.Digest.String() != id {
			t.Errorf("%s: config %v (%v), want %s", name, cfg.Digest, err, id)
		}
	}
	image, err := c.GetImage(ctx, "example.com/built:1")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := image.IsUnpacked(ctx, "overlayfs"); err != nil || !ok {
		t.Errorf("not unpacked into overlayfs: %v %v", ok, err)
	}
	if r := cfFail(t, ctxDir, "build", "-t", "example.com/x", "--output", "type=oci,dest="+out, "."); !strings.Contains(r.stderr, "give one of them") {
		t.Errorf("-t with --output: %s", r.stderr)
	}
}

// TestBuildCacheExport: --cache-to writes BuildKit's cache where buildctl
// would, and --cache-from reads it back.
func TestBuildCacheExport(t *testing.T) {
	ctxDir, tree, secret := dockerfileFixture(t, "")
	cache := filepath.Join(t.TempDir(), "cache")
	cf(t, ctxDir, "build", "--progress", "quiet", "--secret", "id=token,src="+secret, "--build-context", "rootfs="+tree,
		"--cache-to", "type=local,dest="+cache+",mode=max", "--output", "type=oci,dest="+filepath.Join(t.TempDir(), "o.tar"), ".")
	dt, err := os.ReadFile(filepath.Join(cache, "index.json"))
	if err != nil || !strings.Contains(string(dt), "application/vnd.oci.image.index") && !strings.Contains(string(dt), "manifests") {
		t.Fatalf("no cache written: %v %s", err, dt)
	}
	r := cf(t, ctxDir, "build", "--progress", "plain", "--secret", "id=token,src="+secret, "--build-context", "rootfs="+tree,
		"--cache-from", "type=local,src="+cache, "--output", "type=oci,dest="+filepath.Join(t.TempDir(), "o.tar"), ".")
	if !strings.Contains(r.stderr, "importing cache manifest") {
		t.Errorf("--cache-from did not import:\n%s", r.stderr)
	}
	if r := cfFail(t, ctxDir, "build", "--cache-to", "type=nosuch", "."); !strings.Contains(r.stderr, `"nosuch"`) {
		t.Errorf("a bad --cache-to: %s", r.stderr)
	}
}

// TestBuildxRemoteDockerfileFeatures builds the same Commitfile with buildx's
// remote driver on the standalone buildkitd through the frontend image, and
// answers buildx's --call subrequests.
func TestBuildxRemoteDockerfileFeatures(t *testing.T) {
	ref := frontendImage(t)
	ctxDir, tree, secret := dockerfileFixture(t, "# syntax="+ref+"\n")
	builder := "cf-remote"
	if r := run(t, ctxDir, tool("buildx"), "inspect", builder); r.err != nil {
		if r = run(t, ctxDir, tool("buildx"), "create", "--name", builder, "--driver", "remote", env.bk.Addr); r.err != nil {
			t.Fatalf("buildx create: %v\n%s", r.err, r.stderr)
		}
	}
	out := filepath.Join(t.TempDir(), "out.tar")
	r := run(t, ctxDir, tool("buildx"), "build", "--builder", builder, "--progress", "plain", "-f", "Commitfile",
		"--secret", "id=token,src="+secret, "--build-context", "rootfs="+tree, "--output", "type=oci,dest="+out, ".")
	if r.err != nil {
		t.Fatalf("buildx build: %v\n%s", r.err, r.stderr)
	}
	files := imageFiles(t, readOCITar(t, out))
	checkDockerfileFiles(t, func(p string) string { return files[p] })

	r = run(t, ctxDir, tool("buildx"), "build", "--builder", builder, "-f", "Commitfile", "--call", "outline", ".")
	if r.err != nil || !strings.Contains(r.stdout, "token") {
		t.Errorf("--call outline (wants the secret listed): %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	writeFiles(t, ctxDir, map[string]string{"Commitfile": "# syntax=" + ref + "\nFROM " + env.base.Ref + " as build\nRUN true\nFROM build AS final\nCOMMIT rootfs\n"})
	r = run(t, ctxDir, tool("buildx"), "build", "--builder", builder, "-f", "Commitfile", "--call", "targets", ".")
	if r.err != nil || !strings.Contains(r.stdout, "build") || !strings.Contains(r.stdout, "final") {
		t.Errorf("--call targets: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
	r = run(t, ctxDir, tool("buildx"), "build", "--builder", builder, "-f", "Commitfile", "--call", "check", ".")
	if !strings.Contains(r.stdout+r.stderr, "FromAsCasing") {
		t.Errorf("--call check shows no build check warning: %v\n%s\n%s", r.err, r.stdout, r.stderr)
	}
}

// TestBuildxDockerDriverNetworkNone builds the Commitfile through dockerd's
// own BuildKit (buildx's docker driver) with --network none, as the
// Dockerfile frontend does, and runs the result with docker.
func TestBuildxDockerDriverNetworkNone(t *testing.T) {
	ref := frontendImage(t)
	d := dockerd(t)
	ctxDir, tree, secret := dockerfileFixture(t, "# syntax="+ref+"\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tool("buildx"), "build", "--builder", "default", "--progress", "plain", "-f", "Commitfile",
		"--network", "none", "--secret", "id=token,src="+secret, "--build-context", "rootfs="+tree,
		"--load", "-t", "example.com/buildx-network-none:1", ".")
	cmd.Dir = ctxDir
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host, "BUILDX_CONFIG="+t.TempDir(), "DOCKER_CONFIG="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("buildx build --network none on the docker driver: %v\n%s", err, out)
	}
	checkDockerfileFiles(t, func(p string) string {
		out := docker(t, "run", "--rm", "--network", "none", "example.com/buildx-network-none:1", "sh", "-c", "cat /"+p+" 2>/dev/null; true")
		if out == "" {
			return ""
		}
		return out + "\n"
	})
}

// ociLayoutIndex reads the image index an OCI layout directory holds (the
// one index.json names) and returns it with a reader of the layout's blobs.
func ociLayoutIndex(t *testing.T, dir string) (func(digest.Digest) []byte, ocispecs.Index) {
	t.Helper()
	blob := func(d digest.Digest) []byte {
		dt, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
		if err != nil {
			t.Fatal(err)
		}
		return dt
	}
	var top, idx ocispecs.Index
	dt, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	mustJSON(t, dt, &top)
	mustJSON(t, blob(top.Manifests[0].Digest), &idx)
	return blob, idx
}

// TestBuildMultiPlatform builds a COMMIT for two platforms at once: one
// index, one image per platform, each with the COMMIT's layer and entry.
func TestBuildMultiPlatform(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "changes")
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "etc/motd", Mode: 0o644, Size: 6}, "motd!\n")
	})
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": "FROM scratch\nARG TARGETARCH\nCOPY <<EOT /arch\n${TARGETARCH}\nEOT\nCOMMIT rootfs\n"})
	out := filepath.Join(dir, "out")
	cf(t, dir, "build", "--progress", "quiet", "--platform", "linux/amd64,linux/arm64", "--build-context", "rootfs="+cs,
		"--output", "type=oci,tar=false,dest="+out, filepath.Join(dir, "ctx"))
	blob, idx := ociLayoutIndex(t, out)
	seen := map[string]bool{}
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		var mf ocispecs.Manifest
		mustJSON(t, blob(m.Digest), &mf)
		var img dockerspec.DockerOCIImage
		mustJSON(t, blob(mf.Config.Digest), &img)
		if img.Architecture != m.Platform.Architecture || len(mf.Layers) != 2 {
			t.Errorf("%s: image for %s with %d layers", m.Platform.Architecture, img.Architecture, len(mf.Layers))
			continue
		}
		arch := layerEntries(t, decompress(t, blob(mf.Layers[0].Digest), mf.Layers[0].MediaType))["arch"]
		motd := layerEntries(t, decompress(t, blob(mf.Layers[1].Digest), mf.Layers[1].MediaType))["etc/motd"]
		if string(arch.Data) != img.Architecture+"\n" || string(motd.Data) != "motd!\n" {
			t.Errorf("%s: /arch %q, /etc/motd %q", img.Architecture, arch.Data, motd.Data)
		}
		if h := img.History[len(img.History)-1]; h.CreatedBy != "COMMIT rootfs" || h.EmptyLayer {
			t.Errorf("%s: last history entry %+v", img.Architecture, h)
		}
		seen[img.Architecture] = true
	}
	if !seen["amd64"] || !seen["arm64"] {
		t.Errorf("platforms built: %v", seen)
	}
}

// TestBuildSBOM asks for an SBOM attestation, as `--sbom` / `attest:sbom`
// do, with the Dockerfile frontend's BUILDKIT_SBOM_SCAN_STAGE: BuildKit's
// scanner protocol runs a scanner image (here a busybox script that lists
// the files it is given) on the result and on the earlier stage, both with
// COMMIT's layer.
func TestBuildSBOM(t *testing.T) {
	dir := t.TempDir()
	scanCtx := filepath.Join(dir, "scanner")
	writeFiles(t, scanCtx, map[string]string{
		"Dockerfile": "FROM " + env.base.Ref + "\nCOPY scan.sh /scan.sh\nENTRYPOINT [\"/bin/sh\", \"/scan.sh\"]\n",
		"scan.sh": `core=$(cd "$BUILDKIT_SCAN_SOURCE" && find . -type f -path './srv/*' | sort | tr '\n' ' ')
extras=$(cd "$BUILDKIT_SCAN_SOURCE_EXTRAS" 2>/dev/null && find . -type f -path '*/srv/*' | sort | tr '\n' ' ')
printf '{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://spdx.dev/Document","subject":[],"predicate":{"spdxVersion":"SPDX-2.3","name":"core: %s extras: %s"}}' "$core" "$extras" > "$BUILDKIT_SCAN_DESTINATION/sbom.spdx.json"
`,
	})
	scanner := env.reg.Host + "/sbom-scanner:test"
	if r := run(t, scanCtx, tool("buildctl"), "--addr", env.bk.Addr, "build", "--frontend", "dockerfile.v0",
		"--local", "context=.", "--local", "dockerfile=.", "--output", "type=image,name="+scanner+",push=true,registry.insecure=true"); r.err != nil {
		t.Fatalf("building the scanner image: %v\n%s", r.err, r.stderr)
	}
	cs := filepath.Join(dir, "changes")
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "srv/index.html", Mode: 0o644, Size: 6}, "hello\n")
	})
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": "FROM " + env.base.Ref + " AS build\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOMMIT rootfs\n\nFROM build\nRUN mv /srv /srv2\n"})
	out := filepath.Join(dir, "out")
	cf(t, dir, "build", "--progress", "plain", "--opt", "attest:sbom=generator="+scanner, "--build-context", "rootfs="+cs,
		"--output", "type=oci,tar=false,dest="+out, filepath.Join(dir, "ctx"))
	blob, idx := ociLayoutIndex(t, out)
	var statements []string
	for _, m := range idx.Manifests {
		if m.Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
			continue
		}
		var mf ocispecs.Manifest
		mustJSON(t, blob(m.Digest), &mf)
		for _, l := range mf.Layers {
			if l.Annotations["in-toto.io/predicate-type"] == "https://spdx.dev/Document" {
				statements = append(statements, string(blob(l.Digest)))
			}
		}
	}
	// The result moved /srv away; the scanned stage still has COMMIT's file.
	if len(statements) != 1 || !strings.Contains(statements[0], `"core:  extras: ./sbom-build/srv/index.html "`) {
		t.Errorf("SBOM statements %q, want one whose extras list the build stage's /srv/index.html (from COMMIT) and whose core has no /srv", statements)
	}
}
