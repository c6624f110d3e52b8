package container

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"

	containerd "github.com/containerd/containerd/v2/client"

	"github.com/containerd/containerd/v2/core/content"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Layers is the number of layers of the image whose manifest is m.
func Layers(ctx context.Context, cs content.Provider, m ocispecs.Descriptor) (int, error) {
	_, ids, err := configOf(ctx, cs, m)
	return len(ids), err
}

// LayerPrefix writes into cs (under ctx's lease) the image made of the
// first keep layers of the image whose manifest is m, and returns its
// manifest: the same config with those layers' diff IDs and the history
// down to the entry of the last of them, and a manifest of those layers,
// of m's media types. It is the image a squash keeps when the layers above
// it are to become one (--max-layers).
func LayerPrefix(ctx context.Context, cs content.Store, m ocispecs.Descriptor, keep int) (ocispecs.Descriptor, error) {
	dt, err := content.ReadBlob(ctx, cs, m)
	if err != nil {
		return ocispecs.Descriptor{}, err
	}
	var man map[string]json.RawMessage
	var layers struct {
		Config ocispecs.Descriptor   `json:"config"`
		Layers []ocispecs.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(dt, &man); err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "manifest %s", m.Digest)
	}
	if err := json.Unmarshal(dt, &layers); err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "manifest %s", m.Digest)
	}
	if keep <= 0 || keep > len(layers.Layers) {
		return ocispecs.Descriptor{}, errors.Errorf("manifest %s has %d layers: cannot keep %d", m.Digest, len(layers.Layers), keep)
	}
	cdt, err := content.ReadBlob(ctx, cs, layers.Config)
	if err != nil {
		return ocispecs.Descriptor{}, err
	}
	var cfg map[string]json.RawMessage
	var img ocispecs.Image
	if err := json.Unmarshal(cdt, &cfg); err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "config %s", layers.Config.Digest)
	}
	if err := json.Unmarshal(cdt, &img); err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "config %s", layers.Config.Digest)
	}
	if len(img.RootFS.DiffIDs) != len(layers.Layers) {
		return ocispecs.Descriptor{}, errors.Errorf("image %s: %d layers in its manifest, %d in its config", m.Digest, len(layers.Layers), len(img.RootFS.DiffIDs))
	}
	img.RootFS.DiffIDs = img.RootFS.DiffIDs[:keep]
	seen := 0
	for i, h := range img.History {
		if !h.EmptyLayer {
			if seen++; seen == keep {
				img.History = img.History[:i+1]
				break
			}
		}
	}
	if cfg["rootfs"], err = json.Marshal(img.RootFS); err != nil {
		return ocispecs.Descriptor{}, err
	}
	if cfg["history"], err = json.Marshal(img.History); err != nil {
		return ocispecs.Descriptor{}, err
	}
	config := layers.Config
	if config, err = writeJSON(ctx, cs, config.MediaType, cfg); err != nil {
		return ocispecs.Descriptor{}, err
	}
	if man["config"], err = json.Marshal(config); err != nil {
		return ocispecs.Descriptor{}, err
	}
	if man["layers"], err = json.Marshal(layers.Layers[:keep]); err != nil {
		return ocispecs.Descriptor{}, err
	}
	out, err := writeJSON(ctx, cs, m.MediaType, man)
	if err != nil {
		return ocispecs.Descriptor{}, err
	}
	out.Platform = m.Platform
	return out, nil
}

// writeJSON writes v as a blob of media type mt.
func writeJSON(ctx context.Context, cs content.Store, mt string, v any) (ocispecs.Descriptor, error) {
	dt, err := json.Marshal(v)
	if err != nil {
		return ocispecs.Descriptor{}, err
	}
	desc := ocispecs.Descriptor{MediaType: mt, Digest: digest.FromBytes(dt), Size: int64(len(dt))}
	if err := content.WriteBlob(ctx, cs, "commit-frontend-prefix-"+desc.Digest.String(), bytes.NewReader(dt), desc); err != nil {
		return ocispecs.Descriptor{}, errors.Wrap(err, "writing the squash base")
	}
	return desc, nil
}

// FirstBase is the image of the namespace with the fewest layers (one at
// least) that are the first layers of the container's image: the base a
// chain of commits started from. Its name and manifest, or no name when no
// image is.
func FirstBase(ctx context.Context, cc *containerd.Client, tg *Target) (string, ocispecs.Descriptor, int, error) {
	of, err := diffIDs(ctx, cc, tg.Manifest)
	if err != nil {
		return "", ocispecs.Descriptor{}, 0, err
	}
	imgs, err := cc.ImageService().List(ctx)
	if err != nil {
		return "", ocispecs.Descriptor{}, 0, errors.Wrap(err, "listing the images")
	}
	var name string
	var best ocispecs.Descriptor
	layers := 0
	for _, img := range imgs {
		m, _, err := PlatformManifest(ctx, cc.ContentStore(), img.Target, tg.Platform)
		if err != nil {
			continue
		}
		ids, err := diffIDs(ctx, cc, m)
		if err != nil || len(ids) == 0 || len(ids) >= len(of) || !slices.Equal(ids, of[:len(ids)]) {
			continue
		}
		if layers == 0 || len(ids) < layers || (len(ids) == layers && img.Name < name) {
			name, best, layers = img.Name, m, len(ids)
		}
	}
	return name, best, layers, nil
}
