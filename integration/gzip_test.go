package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestCommitGzipInStore: a gzip commit into containerd's store (buildkitd's
// differ makes the layer, it is gzipped on its way into containerd) gives
// the layer BuildKit's own gzip export of the same container gives, entry
// for entry and to the diff ID; the blob is gzip, decompresses to its diff
// ID, carries containerd's uncompressed label, and the image runs. Both a
// layer that is fetched from buildkitd (2 MiB) and one that crosses the
// session (a few KiB) are checked; --compression-level reaches the
// compressor; the metadata file names the manifest that landed.
func TestCommitGzipInStore(t *testing.T) {
	const ns = "default"
	cases := []struct {
		id, script string
	}{
		{"gzip-large", "head -c 1048576 /dev/urandom > /big; i=0; while [ $i -lt 20000 ]; do echo line $i; i=$((i+1)); done > /text; touch /ready; exec sleep 3600"},
		{"gzip-small", "echo small > /small; touch /ready; exec sleep 3600"},
	}
	for _, tc := range cases {
		t.Run(tc.id, func(t *testing.T) {
			ct := startContainer(t, ns, "overlayfs", tc.id, tc.script, false)
			c := ct.c
			ctx := context.Background()
			ref := "example.com/gzip:" + tc.id
			md := filepath.Join(t.TempDir(), "md.json")
			cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--metadata-file", md, tc.id, ref)...)
			img, err := c.ImageService().Get(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if meta := readMetadata(t, md); meta["containerimage.digest"] != img.Target.Digest.String() {
				t.Errorf("metadata names manifest %s, the image record %s", meta["containerimage.digest"], img.Target.Digest)
			}
			m := imageManifest(t, c, img)
			cfg := imageConfig(t, c, img)
			top := m.Layers[len(m.Layers)-1]
			diffID := cfg.RootFS.DiffIDs[len(cfg.RootFS.DiffIDs)-1]
			if top.MediaType != ocispecs.MediaTypeImageLayerGzip {
				t.Fatalf("new layer %s", top.MediaType)
			}
			blob, err := content.ReadBlob(ctx, c.ContentStore(), top)
			if err != nil {
				t.Fatal(err)
			}
			zr, err := gzip.NewReader(bytes.NewReader(blob))
			if err != nil {
				t.Fatalf("the new layer is not gzip: %v", err)
			}
			layer, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			if digest.FromBytes(layer) != diffID {
				t.Errorf("the layer decompresses to %s, the config says %s", digest.FromBytes(layer), diffID)
			}
			if info, err := c.ContentStore().Info(ctx, top.Digest); err != nil || info.Labels["containerd.io/uncompressed"] != diffID.String() {
				t.Errorf("blob labels %v (%v)", info.Labels, err)
			}
			if len(blob) >= len(layer) && tc.id == "gzip-large" {
				t.Errorf("gzip blob %d bytes for a %d-byte layer with 1 MB of text", len(blob), len(layer))
			}
			// Every blob of the image is in the store, under its gc labels.
			if err := images.Walk(ctx, images.ChildrenHandler(c.ContentStore()), img.Target); err != nil {
				t.Errorf("walking the image: %v", err)
			}

			// BuildKit's own gzip of the same container.
			oci, _ := commitOCI(t, ns, tc.id)
			bkTop := oci.Manifest.Layers[len(oci.Manifest.Layers)-1]
			if bkTop.MediaType != ocispecs.MediaTypeImageLayerGzip {
				t.Errorf("BuildKit's export: %s", bkTop.MediaType)
			}
			// Another compressor wrote the store's blob: other bytes.
			if bkTop.Digest == top.Digest {
				t.Errorf("the store's layer blob is BuildKit's own gzip (%s): not compressed on its way into containerd", top.Digest)
			}
			if got := oci.Config.RootFS.DiffIDs[len(oci.Config.RootFS.DiffIDs)-1]; got != diffID {
				t.Errorf("diff ID %s in the store, %s from BuildKit's gzip export", diffID, got)
				bk, ours := layerEntries(t, oci.Layers[len(oci.Layers)-1]), layerEntries(t, layer)
				for name, e := range ours {
					if b, ok := bk[name]; !ok || !bytes.Equal(b.Data, e.Data) || b.Header.ModTime != e.Header.ModTime || b.Header.Mode != e.Header.Mode {
						t.Errorf("entry %s differs: %+v vs BuildKit's %+v", name, e.Header, b.Header)
					}
				}
			}

			// --compression-level 9 gives another blob of the same layer.
			ref9 := ref + "-9"
			cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--compression-level", "9", tc.id, ref9)...)
			img9, err := c.ImageService().Get(ctx, ref9)
			if err != nil {
				t.Fatal(err)
			}
			m9, cfg9 := imageManifest(t, c, img9), imageConfig(t, c, img9)
			if cfg9.RootFS.DiffIDs[len(cfg9.RootFS.DiffIDs)-1] != diffID {
				t.Errorf("level 9 changed the layer's content")
			}
			if tc.id == "gzip-large" && m9.Layers[len(m9.Layers)-1].Digest == top.Digest {
				t.Errorf("level 9 gave the default level's blob %s", top.Digest)
			}

			out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", ref, tc.id+"-run", "sh", "-c", "ls /big /text /small 2>/dev/null; cat /small 2>/dev/null; [ ! -f /text ] || wc -l < /text")
			want := map[string]string{"gzip-large": "/big\n/text\n20000", "gzip-small": "/small\nsmall"}[tc.id]
			if err != nil || strings.TrimSpace(out) != want {
				t.Errorf("running the image: %q, %v; want %q", out, err, want)
			}
		})
	}
}

// TestBuildGzipInStore: `build -t` gzips the build's new layers on their
// way into containerd; the image is the one BuildKit's own gzip export of
// the same build gives (same config, so same diff IDs), every layer is
// gzip, and a rebuild from BuildKit's cache lands the very same manifest.
func TestBuildGzipInStore(t *testing.T) {
	const ns = "cf-build-gzip"
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"Commitfile": "FROM " + env.base.Ref + "\n" +
			"RUN i=0; while [ $i -lt 40000 ]; do echo gzip line $i; i=$((i+1)); done > /text; head -c 1100000 /dev/urandom > /random\n" +
			"COPY small /small\n",
		"small": "small\n",
	})
	ctx := context.Background()
	c := ctrd(t, ns)
	build := func(tag string) (ocispecs.Manifest, ocispecs.Image, string) {
		r := cf(t, dir, "build", "--progress", "quiet", "--address", env.ctrd.Addr, "-n", ns, "-t", tag, ".")
		img, err := c.ImageService().Get(ctx, tag)
		if err != nil {
			t.Fatal(err)
		}
		return imageManifest(t, c, img), imageConfig(t, c, img), strings.TrimSpace(r.stdout) + "@" + img.Target.Digest.String()
	}
	m1, cfg1, id1 := build("example.com/gzip-build:1")
	for i, l := range m1.Layers {
		if l.MediaType != ocispecs.MediaTypeImageLayerGzip {
			t.Errorf("layer %d: %s", i, l.MediaType)
		}
		info, err := c.ContentStore().Info(ctx, l.Digest)
		if err != nil || info.Labels["containerd.io/uncompressed"] != cfg1.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d labels %v (%v), diff ID %s", i, info.Labels, err, cfg1.RootFS.DiffIDs[i])
		}
	}
	_, _, id2 := build("example.com/gzip-build:2")
	if id2 != id1 {
		t.Errorf("a cached rebuild landed %s, the first build %s", id2, id1)
	}

	out := filepath.Join(t.TempDir(), "out.tar")
	cf(t, dir, "build", "--progress", "quiet", "--output", "type=oci,dest="+out, ".")
	oci := readOCITar(t, out)
	if want := strings.SplitN(id1, "@", 2)[0]; oci.ConfigID != want {
		t.Errorf("BuildKit's export of the same build: config %s, ours %s", oci.ConfigID, want)
	}
	// The build's own layers (the RUN's and the COPY's) were compressed on
	// their way into containerd, by another compressor than BuildKit's.
	base := baseImage(t)
	for i := len(base.Manifest.Layers); i < len(m1.Layers); i++ {
		if m1.Layers[i].Digest == oci.Manifest.Layers[i].Digest {
			t.Errorf("layer %d is BuildKit's own gzip blob %s", i, m1.Layers[i].Digest)
		}
	}
	out2, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", "example.com/gzip-build:1", "gzip-build-run", "sh", "-c", "wc -l < /text; cat /small")
	if err != nil || strings.TrimSpace(out2) != "40000\nsmall" {
		t.Errorf("running the image: %q, %v", out2, err)
	}
}

// TestCommitGzipReuseVerified: a gzip blob in containerd that claims to be
// the layer (the uncompressed label, the level label, gzip magic) but holds
// other bytes is never reused: the commit writes the layer's own blob.
func TestCommitGzipReuseVerified(t *testing.T) {
	const ns = "default"
	const id = "gzip-planted"
	ct := startContainer(t, ns, "overlayfs", id, "echo mine > /mine", true)
	c := ct.c
	ctx, done, err := c.WithLease(context.Background(), leases.WithRandomID())
	if err != nil {
		t.Fatal(err)
	}
	defer done(context.WithoutCancel(ctx))
	ref := "example.com/gzip-planted:1"
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id, ref)...)
	img, err := c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	first := imageManifest(t, c, img).Layers
	diffIDs := imageConfig(t, c, img).RootFS.DiffIDs
	diffID := diffIDs[len(diffIDs)-1]
	if err := c.ImageService().Delete(ctx, ref, images.SynchronousDelete()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ContentStore().Info(ctx, first[len(first)-1].Digest); err == nil {
		t.Fatalf("the first commit's blob outlived its image")
	}

	// Another layer's gzip, labelled as this one's.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(bytes.Repeat([]byte("not the layer\n"), 100)); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	planted := ocispecs.Descriptor{Digest: digest.FromBytes(buf.Bytes()), Size: int64(buf.Len())}
	if err := content.WriteBlob(ctx, c.ContentStore(), "planted", bytes.NewReader(buf.Bytes()), planted,
		content.WithLabels(map[string]string{"containerd.io/uncompressed": diffID.String(), "commit-frontend.gzip-level": "-1"})); err != nil {
		t.Fatal(err)
	}
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), id, ref)...)
	img, err = c.ImageService().Get(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	m := imageManifest(t, c, img)
	top := m.Layers[len(m.Layers)-1]
	if top.Digest == planted.Digest {
		t.Fatalf("the planted blob %s became the layer", planted.Digest)
	}
	blob, err := content.ReadBlob(ctx, c.ContentStore(), top)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil || digest.FromBytes(layer) != diffID {
		t.Errorf("the layer blob decompresses to %s (%v), want %s", digest.FromBytes(layer), err, diffID)
	}
}
