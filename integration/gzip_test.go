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
