package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/rootfs"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// nativeCommit is the baseline: the commit docker's containerd image store
// and `nerdctl commit` perform with containerd alone — a lease, the
// container's snapshot diffed against its parent by containerd's walking
// differ (rootfs.CreateDiff through the diff service), the layer applied into
// a new snapshot, config and manifest written with gc labels, the image
// record. Benchmark-only code.
func nativeCommit(ctx context.Context, cc *containerd.Client, id, ref, compression string) (digest.Digest, error) {
	ctx, done, err := cc.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return "", err
	}
	defer done(context.WithoutCancel(ctx))
	c, err := cc.LoadContainer(ctx, id)
	if err != nil {
		return "", err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return "", err
	}
	task, err := c.Task(ctx, nil)
	if err == nil {
		if err := task.Pause(ctx); err != nil {
			return "", err
		}
		defer task.Resume(context.WithoutCancel(ctx))
	}
	img, err := cc.ImageService().Get(ctx, info.Image)
	if err != nil {
		return "", err
	}
	cs := cc.ContentStore()
	manifest, err := images.Manifest(ctx, cs, img.Target, platforms.Default())
	if err != nil {
		return "", err
	}
	var cfg ocispecs.Image
	if err := readJSON(ctx, cs, manifest.Config, &cfg); err != nil {
		return "", err
	}
	mediaType := ocispecs.MediaTypeImageLayerGzip
	switch compression {
	case "zstd":
		mediaType = ocispecs.MediaTypeImageLayerZstd
	case "uncompressed":
		mediaType = ocispecs.MediaTypeImageLayer
	}
	sn := cc.SnapshotService(info.Snapshotter)
	layer, err := rootfs.CreateDiff(ctx, info.SnapshotKey, sn, cc.DiffService(), diff.WithMediaType(mediaType),
		diff.WithReference(fmt.Sprintf("native-commit-%d", time.Now().UnixNano())))
	if err != nil {
		return "", err
	}
	layerInfo, err := cs.Info(ctx, layer.Digest)
	if err != nil {
		return "", err
	}
	diffID := layer.Digest
	if mediaType != ocispecs.MediaTypeImageLayer {
		if diffID, err = digest.Parse(layerInfo.Labels["containerd.io/uncompressed"]); err != nil {
			return "", fmt.Errorf("layer %s has no uncompressed digest: %w", layer.Digest, err)
		}
	}
	// Apply the layer into a new snapshot, as nerdctl and docker do.
	chain := append(append([]digest.Digest{}, cfg.RootFS.DiffIDs...), diffID)
	if _, err := rootfs.ApplyLayer(ctx, rootfs.Layer{Blob: layer, Diff: ocispecs.Descriptor{Digest: diffID, MediaType: ocispecs.MediaTypeImageLayer}},
		cfg.RootFS.DiffIDs, sn, cc.DiffService()); err != nil && !errdefs.IsAlreadyExists(err) {
		return "", err
	}
	now := time.Now().UTC()
	cfg.Created = &now
	cfg.RootFS.DiffIDs = chain
	cfg.History = append(cfg.History, ocispecs.History{Created: &now, CreatedBy: "native commit"})
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	cfgDesc := ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageConfig, Digest: digest.FromBytes(cfgBytes), Size: int64(len(cfgBytes))}
	if err := content.WriteBlob(ctx, cs, cfgDesc.Digest.String(), strings.NewReader(string(cfgBytes)), cfgDesc,
		content.WithLabels(map[string]string{"containerd.io/gc.ref.snapshot." + info.Snapshotter: identity.ChainID(chain).String()})); err != nil {
		return "", err
	}
	m := manifest
	m.Config = cfgDesc
	m.Layers = append(append([]ocispecs.Descriptor{}, manifest.Layers...), layer)
	mBytes, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	mDesc := ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageManifest, Digest: digest.FromBytes(mBytes), Size: int64(len(mBytes))}
	labels := map[string]string{"containerd.io/gc.ref.content.config": cfgDesc.Digest.String()}
	for i, l := range m.Layers {
		labels[fmt.Sprintf("containerd.io/gc.ref.content.l.%d", i)] = l.Digest.String()
	}
	if err := content.WriteBlob(ctx, cs, mDesc.Digest.String(), strings.NewReader(string(mBytes)), mDesc, content.WithLabels(labels)); err != nil {
		return "", err
	}
	newImg := images.Image{Name: ref, Target: mDesc}
	if _, err := cc.ImageService().Create(ctx, newImg); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return "", err
		}
		if _, err := cc.ImageService().Update(ctx, newImg, "target"); err != nil {
			return "", err
		}
	}
	return cfgDesc.Digest, nil
}

func readJSON(ctx context.Context, p content.Provider, desc ocispecs.Descriptor, v any) error {
	dt, err := content.ReadBlob(ctx, p, desc)
	if err != nil {
		return err
	}
	return json.Unmarshal(dt, v)
}
