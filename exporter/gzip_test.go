package exporter

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/content/local"
	kgzip "github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
)

func TestAsyncWriter(t *testing.T) {
	src := make([]byte, 5*writeBuffer+777)
	rng := rand.NewChaCha8([32]byte{2})
	_, _ = rng.Read(src)
	var dst bytes.Buffer
	a := newAsyncWriter(&dst)
	// Uneven pieces, as a compressor hands them over.
	for off := 0; off < len(src); {
		n := min(len(src)-off, 1+int(rng.Uint64()%(writeBuffer/3)))
		if k, err := a.Write(src[off : off+n]); err != nil || k != n {
			t.Fatalf("Write: %d, %v", k, err)
		}
		off += n
	}
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if !bytes.Equal(dst.Bytes(), src) {
		t.Fatalf("wrote %d bytes, not the %d given in order", dst.Len(), len(src))
	}

	// A failing destination fails the writes after it and Wait.
	fw := &failingWriter{n: writeBuffer + 10}
	a = newAsyncWriter(fw)
	var err error
	for i := 0; i < 8 && err == nil; i++ {
		_, err = a.Write(src[:writeBuffer])
	}
	if werr := a.Wait(); werr == nil || werr.Error() != "containerd went away" {
		t.Errorf("Wait after a failed write: %v", werr)
	}
	if err == nil {
		t.Errorf("eight writes of %d bytes into %d all succeeded", writeBuffer, fw.n)
	}
	a.Close()
	if _, err := a.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
}

// TestAsyncWriterCloseWhileWriting: a commit that fails half-way closes the
// writer while pgzip's goroutine still writes into it: the writes fail,
// Wait returns, nothing panics.
func TestAsyncWriterCloseWhileWriting(t *testing.T) {
	for round := range 200 {
		slow := &slowWriter{}
		a := newAsyncWriter(slow)
		piece := make([]byte, writeBuffer/2+round)
		// pgzip hands its output over from a goroutine of its own.
		wrote := make(chan error, 1)
		go func() {
			var err error
			for i := 0; i < 64 && err == nil; i++ {
				_, err = a.Write(piece)
			}
			wrote <- err
		}()
		time.Sleep(time.Duration(round%7) * 50 * time.Microsecond)
		a.Close()
		if err := <-wrote; err == nil {
			t.Fatalf("round %d: 64 writes after Close all succeeded", round)
		}
		if err := a.Wait(); err == nil {
			t.Fatalf("round %d: Wait after Close reported success", round)
		}
	}
}

// slowWriter takes its time over each piece.
type slowWriter struct{ n atomic.Int64 }

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(20 * time.Microsecond)
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// TestGzipWriter: an uncompressed layer written through the store's gzip
// writer lands in a real containerd content store as a gzip blob that
// decompresses to the very bytes, labelled with their digest; the
// manifest rewritten for it names the gzip blob and keeps the rest.
func TestGzipWriter(t *testing.T) {
	// containerd's own content store: blobs on disk, labels in its
	// metadata database.
	ctx := namespaces.WithNamespace(context.Background(), "test")
	dir := t.TempDir()
	blobs, err := local.NewStore(filepath.Join(dir, "content"))
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	db := metadata.NewDB(bdb, blobs, nil)
	if err := db.Init(ctx); err != nil {
		t.Fatal(err)
	}
	cs := db.ContentStore()
	// Half incompressible, half text: both kinds of gzip block.
	layer := make([]byte, 3*writeBuffer)
	_, _ = rand.NewChaCha8([32]byte{3}).Read(layer[:len(layer)/2])
	copy(layer[len(layer)/2:], bytes.Repeat([]byte("usr/lib/python3/dist-packages/ "), len(layer)/2/31+1))
	udesc := ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}

	for _, level := range []int{-1, 1, 9} {
		layers := &gzipRecord{level: level, blobs: map[digest.Digest]ocispecs.Descriptor{}}
		dst, err := cs.Writer(ctx, content.WithRef("layer"), content.WithDescriptor(ocispecs.Descriptor{}))
		if err != nil {
			t.Fatal(err)
		}
		gw, err := newGzipWriter(dst, ocispecs.Descriptor{Digest: udesc.Digest, Size: udesc.Size}, layers)
		if err != nil {
			t.Fatal(err)
		}
		if err := pipedCopy(ctx, gw, bytes.NewReader(layer), int64(len(layer))); err != nil {
			t.Fatal(err)
		}
		if gw.Digest() != udesc.Digest {
			t.Errorf("Digest %s, want the uncompressed blob's %s", gw.Digest(), udesc.Digest)
		}
		if err := gw.Commit(ctx, udesc.Size, udesc.Digest, content.WithLabels(map[string]string{"keep": "me"})); err != nil {
			t.Fatal(err)
		}
		gw.Close()
		gz, ok := layers.blobs[udesc.Digest]
		if !ok {
			t.Fatalf("level %d: no gzip blob recorded", level)
		}
		info, err := cs.Info(ctx, gz.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if info.Size != gz.Size || info.Labels["containerd.io/uncompressed"] != udesc.Digest.String() || info.Labels["keep"] != "me" {
			t.Errorf("level %d: gzip blob %+v, recorded %+v", level, info, gz)
		}
		blob, err := content.ReadBlob(ctx, cs, gz)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := kgzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, layer) {
			t.Fatalf("level %d: the gzip blob decompresses to %d bytes (%v), not the layer", level, len(got), err)
		}
		if level == 1 && gz.Size >= udesc.Size {
			t.Errorf("level 1: %d bytes for %d", gz.Size, udesc.Size)
		}

		// A committed blob of another size or digest is refused.
		dst2, _ := cs.Writer(ctx, content.WithRef("layer2"))
		gw2, _ := newGzipWriter(dst2, udesc, layers)
		_, _ = gw2.Write(layer[:10])
		if err := gw2.Commit(ctx, udesc.Size, udesc.Digest); err == nil {
			t.Error("a short blob was committed")
		}
		gw2.Close()
	}

	// The manifest: the uncompressed layer replaced, the base layer and
	// the config kept, the gc labels pointing at the new blob.
	layers := &gzipRecord{level: -1, blobs: map[digest.Digest]ocispecs.Descriptor{}}
	dst, _ := cs.Writer(ctx, content.WithRef("layer3"))
	gw, _ := newGzipWriter(dst, udesc, layers)
	_, _ = gw.Write(layer)
	if err := gw.Commit(ctx, udesc.Size, udesc.Digest); err != nil {
		t.Fatal(err)
	}
	gw.Close()
	base := ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageLayerGzip, Digest: digest.FromString("base"), Size: 4}
	cfg := ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6}
	m := ocispecs.Manifest{MediaType: ocispecs.MediaTypeImageManifest, Config: cfg, Layers: []ocispecs.Descriptor{base, udesc}}
	m.SchemaVersion = 2
	dt, _ := json.MarshalIndent(m, "", "  ")
	mdesc := ocispecs.Descriptor{MediaType: m.MediaType, Digest: digest.FromBytes(dt), Size: int64(len(dt)), Platform: &ocispecs.Platform{OS: "linux", Architecture: "amd64"}}
	labels := map[string]string{
		"containerd.io/gc.ref.content.config": cfg.Digest.String(),
		"containerd.io/gc.ref.content.l.0":    base.Digest.String(),
		"containerd.io/gc.ref.content.l.1":    udesc.Digest.String(),
	}
	if err := content.WriteBlob(ctx, cs, "m", bytes.NewReader(dt), mdesc, content.WithLabels(labels)); err != nil {
		t.Fatal(err)
	}
	nd, err := rewriteManifest(ctx, cs, mdesc, layers.blobs)
	if err != nil {
		t.Fatal(err)
	}
	if nd.Digest == mdesc.Digest || nd.Platform == nil || nd.Platform.Architecture != "amd64" {
		t.Errorf("new manifest descriptor %+v", nd)
	}
	var got ocispecs.Manifest
	ndt, _ := content.ReadBlob(ctx, cs, nd)
	if err := json.Unmarshal(ndt, &got); err != nil {
		t.Fatal(err)
	}
	gz := layers.blobs[udesc.Digest]
	if got.Config.Digest != cfg.Digest || got.Layers[0].Digest != base.Digest || got.Layers[1].Digest != gz.Digest ||
		got.Layers[1].MediaType != ocispecs.MediaTypeImageLayerGzip || got.Layers[1].Size != gz.Size {
		t.Errorf("rewritten manifest %s", ndt)
	}
	if !bytes.Contains(ndt, []byte("\n  \"layers\"")) {
		t.Errorf("rewritten manifest not indented as BuildKit writes them: %s", ndt)
	}
	info, _ := cs.Info(ctx, nd.Digest)
	if info.Labels["containerd.io/gc.ref.content.l.1"] != gz.Digest.String() || info.Labels["containerd.io/gc.ref.content.l.0"] != base.Digest.String() ||
		info.Labels["containerd.io/gc.ref.content.config"] != cfg.Digest.String() {
		t.Errorf("rewritten manifest's labels %v", info.Labels)
	}
	// Nothing to replace: the same manifest.
	if same, err := rewriteManifest(ctx, cs, nd, layers.blobs); err != nil || same.Digest != nd.Digest {
		t.Errorf("second rewrite: %s, %v", same.Digest, err)
	}
}
