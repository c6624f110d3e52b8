package container

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestLayerPrefix: the image of the first layers of another keeps its
// config (fields this code does not know included), those layers' diff
// IDs and blobs, and the history down to the last kept layer's entry.
func TestLayerPrefix(t *testing.T) {
	ctx := context.Background()
	cs, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	layers := []ocispecs.Descriptor{
		{MediaType: ocispecs.MediaTypeImageLayerGzip, Digest: digest.FromString("l1"), Size: 1},
		{MediaType: ocispecs.MediaTypeImageLayerGzip, Digest: digest.FromString("l2"), Size: 2},
		{MediaType: ocispecs.MediaTypeImageLayerGzip, Digest: digest.FromString("l3"), Size: 3},
	}
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux", "config": map[string]any{"Env": []string{"A=1"}}, "x-unknown": "kept",
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{digest.FromString("d1").String(), digest.FromString("d2").String(), digest.FromString("d3").String()}},
		"history": []map[string]any{{"created_by": "one"}, {"created_by": "env", "empty_layer": true}, {"created_by": "two"}, {"created_by": "label", "empty_layer": true}, {"created_by": "three"}},
	}
	cdesc, err := writeJSON(ctx, cs, ocispecs.MediaTypeImageConfig, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := writeJSON(ctx, cs, ocispecs.MediaTypeImageManifest, ocispecs.Manifest{MediaType: ocispecs.MediaTypeImageManifest, Config: cdesc, Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Layers(ctx, cs, m); err != nil || n != 3 {
		t.Fatalf("Layers: %d %v", n, err)
	}
	p, err := LayerPrefix(ctx, cs, m, 2)
	if err != nil {
		t.Fatal(err)
	}
	var man ocispecs.Manifest
	readJSON(t, cs, p, &man)
	if p.MediaType != ocispecs.MediaTypeImageManifest || man.MediaType != ocispecs.MediaTypeImageManifest || !reflect.DeepEqual(man.Layers, layers[:2]) {
		t.Errorf("manifest %s: %+v", p.MediaType, man)
	}
	var got map[string]any
	readJSON(t, cs, man.Config, &got)
	var img ocispecs.Image
	readJSON(t, cs, man.Config, &img)
	if got["x-unknown"] != "kept" || len(img.Config.Env) != 1 {
		t.Errorf("config lost fields: %v", got)
	}
	if len(img.RootFS.DiffIDs) != 2 || img.RootFS.DiffIDs[1] != digest.FromString("d2") {
		t.Errorf("diff IDs %v", img.RootFS.DiffIDs)
	}
	var by []string
	for _, h := range img.History {
		by = append(by, h.CreatedBy)
	}
	if !reflect.DeepEqual(by, []string{"one", "env", "two"}) {
		t.Errorf("history %q", by)
	}
	for _, keep := range []int{0, 4} {
		if _, err := LayerPrefix(ctx, cs, m, keep); err == nil {
			t.Errorf("keep %d of 3 layers: no error", keep)
		}
	}
}

func readJSON(t *testing.T, cs content.Provider, d ocispecs.Descriptor, v any) {
	t.Helper()
	dt, err := content.ReadBlob(context.Background(), cs, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dt, v); err != nil {
		t.Fatal(err)
	}
}
