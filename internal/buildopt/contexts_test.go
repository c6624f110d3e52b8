package buildopt

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// writeLayout writes an OCI layout whose index names one manifest per tag.
func writeLayout(t *testing.T, dir string, tags map[string]digest.Digest) {
	t.Helper()
	idx := ocispecs.Index{}
	for tag, d := range tags {
		idx.Manifests = append(idx.Manifests, ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageManifest, Digest: d, Size: 1,
			Annotations: map[string]string{ocispecs.AnnotationRefName: tag}})
	}
	dt, _ := json.Marshal(idx)
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispecs.ImageIndexFile), dt, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ocispecs.ImageLayoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAddContexts: each form of --build-context becomes the value dockerui
// reads, and what serves it is attached to the solve.
func TestAddContexts(t *testing.T) {
	dir := t.TempDir()
	local := filepath.Join(dir, "site")
	if err := os.Mkdir(local, 0o755); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "layout")
	v1, v2 := digest.FromString("v1"), digest.FromString("v2")
	writeLayout(t, layout, map[string]digest.Digest{"v1": v1, "latest": v2})

	var opt client.SolveOpt
	o := &frontend.Options{}
	err := AddContexts(&opt, o, []string{
		"site=" + local,
		"img=docker-image://busybox:latest",
		"old=oci-layout://" + layout + ":v1",
		"new=oci-layout://" + layout,
		"pinned=oci-layout://" + layout + "@" + v1.String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.Contexts["site"] != frontend.LocalContext("site") || opt.LocalMounts["site"] == nil {
		t.Errorf("local directory: %q, mounted %v", o.Contexts["site"], opt.LocalMounts["site"] != nil)
	}
	if o.Contexts["img"] != "docker-image://busybox:latest" {
		t.Errorf("an image passes through: %q", o.Contexts["img"])
	}
	for name, want := range map[string]digest.Digest{"old": v1, "new": v2, "pinned": v1} {
		v := o.Contexts[name]
		rest, ok := frontend.CutOCILayout(v)
		if !ok || !strings.HasSuffix(rest, "@"+want.String()) {
			t.Errorf("%s: %q, want the layout by digest %s", name, v, want)
			continue
		}
		storeID, _, _ := strings.Cut(rest, "@")
		if opt.OCIStores[storeID] == nil {
			t.Errorf("%s: no OCI store %s in the solve", name, storeID)
		}
	}
}

// TestAddContextsErrors: a bad --build-context is refused, naming it.
func TestAddContextsErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(dir, "layout")
	writeLayout(t, layout, map[string]digest.Digest{"v1": digest.FromString("v1"), "v2": digest.FromString("v2")})
	for _, tc := range []struct{ spec, want string }{
		{"novalue", `--build-context "novalue": want NAME=VALUE`},
		{"=x", `want NAME=VALUE`},
		{"a=" + filepath.Join(dir, "missing"), "--build-context a="},
		{"a=" + file, "is not a directory"},
		{"a=oci-layout://" + layout + ":v3", `has no image tagged "v3"`},
		{"a=oci-layout://" + layout + "@sha256:nothex", "--build-context a=oci-layout://"},
	} {
		var opt client.SolveOpt
		if err := AddContexts(&opt, &frontend.Options{}, []string{tc.spec}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.spec, err, tc.want)
		}
	}
}
