package container

import (
	"context"
	"encoding/json"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// parentChain returns the chain ID of the layers a container snapshot
// stands on: its parent's name, which containerd's unpacker (and moby's)
// gives every layer snapshot. Docker's init layer (<key>-init) between
// the container and its image is looked through. "" for a snapshot on
// nothing.
func parentChain(ctx context.Context, cc *containerd.Client, snapshotter, key string) (string, error) {
	sn := cc.SnapshotService(snapshotter)
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return "", errors.Wrapf(err, "snapshot %s in snapshotter %s", key, snapshotter)
	}
	if info.Parent != "" && info.Parent == key+"-init" {
		if info, err = sn.Stat(ctx, info.Parent); err != nil {
			return "", errors.Wrapf(err, "snapshot %s in snapshotter %s", key+"-init", snapshotter)
		}
	}
	return info.Parent, nil
}

// baseImage is one platform's manifest of an image in the store.
type baseImage struct {
	image    images.Image
	manifest ocispecs.Descriptor
	platform ocispecs.Platform
}

// findBase returns the image the container snapshot stands on: the
// manifest, among the hinted images' (the container record's image, by
// name or digest), whose layers' chain ID is chain; else any image of the
// namespace whose layers are those. A name is only a hint — kubelet
// re-pulls :latest, `nerdctl tag` and `ctr images tag --force` move tags —
// so a commit never puts the changes on layers they were not made on.
func findBase(ctx context.Context, cc *containerd.Client, chain string, hints []images.Image, what string) (baseImage, bool, error) {
	cs := cc.ContentStore()
	for _, img := range hints {
		if b, ok, err := manifestOnChain(ctx, cs, img, chain); err != nil || ok {
			return b, false, err
		}
	}
	all, err := cc.ImageService().List(ctx)
	if err != nil {
		return baseImage{}, false, errors.Wrap(err, "listing images")
	}
	for _, img := range all {
		b, ok, err := manifestOnChain(ctx, cs, img, chain)
		if err != nil {
			// An image whose blobs are partly gone cannot be the base.
			continue
		}
		if ok {
			return b, true, nil
		}
	}
	var names []string
	for _, h := range hints {
		names = append(names, h.Name)
	}
	if len(names) == 0 {
		return baseImage{}, false, errors.Errorf("%s has no image, and no image in the namespace has the layers its snapshot stands on (chain %s): give the base with --base", what, chain)
	}
	return baseImage{}, false, errors.Errorf("%s: its image %s does not have the layers the container's snapshot stands on (chain %s), and no image in the namespace has them: the image was re-tagged or removed; give the base with --base", what, strings.Join(names, ", "), chain)
}

// manifestOnChain returns img's manifest, of any platform, whose layers'
// chain ID is chain; this machine's platform is tried first.
func manifestOnChain(ctx context.Context, cs content.Provider, img images.Image, chain string) (baseImage, bool, error) {
	ms, err := manifests(ctx, cs, img.Target)
	if err != nil {
		return baseImage{}, false, err
	}
	def := platforms.Default()
	for pass := 0; pass < 2; pass++ {
		for _, m := range ms {
			p, ids, err := configOf(ctx, cs, m)
			if err != nil {
				if errdefs.IsNotFound(err) {
					continue // another platform, not pulled
				}
				return baseImage{}, false, errors.Wrapf(err, "image %s", img.Name)
			}
			if (pass == 0) != def.Match(p) {
				continue
			}
			if identity.ChainID(ids).String() == chain || (chain == "" && len(ids) == 0) {
				return baseImage{image: img, manifest: m, platform: p}, true, nil
			}
		}
	}
	return baseImage{}, false, nil
}

// manifests lists the manifests under desc (an index's, nested indexes
// included).
func manifests(ctx context.Context, cs content.Provider, desc ocispecs.Descriptor) ([]ocispecs.Descriptor, error) {
	switch {
	case images.IsManifestType(desc.MediaType):
		return []ocispecs.Descriptor{desc}, nil
	case images.IsIndexType(desc.MediaType):
		dt, err := content.ReadBlob(ctx, cs, desc)
		if err != nil {
			return nil, err
		}
		var idx ocispecs.Index
		if err := json.Unmarshal(dt, &idx); err != nil {
			return nil, errors.Wrapf(err, "index %s", desc.Digest)
		}
		var out []ocispecs.Descriptor
		for _, c := range idx.Manifests {
			ms, err := manifests(ctx, cs, c)
			if err != nil {
				if errdefs.IsNotFound(err) {
					continue
				}
				return nil, err
			}
			out = append(out, ms...)
		}
		return out, nil
	}
	return nil, nil
}

// configOf reads manifest m's platform and layer diff IDs from its config.
func configOf(ctx context.Context, cs content.Provider, m ocispecs.Descriptor) (ocispecs.Platform, []digest.Digest, error) {
	dt, err := content.ReadBlob(ctx, cs, m)
	if err != nil {
		return ocispecs.Platform{}, nil, err
	}
	var man ocispecs.Manifest
	if err := json.Unmarshal(dt, &man); err != nil {
		return ocispecs.Platform{}, nil, errors.Wrapf(err, "manifest %s", m.Digest)
	}
	switch man.Config.MediaType {
	case ocispecs.MediaTypeImageConfig, images.MediaTypeDockerSchema2Config:
	default:
		// An attestation manifest, or another artifact: no image.
		return ocispecs.Platform{}, nil, errors.Wrapf(errdefs.ErrNotFound, "manifest %s is not an image's", m.Digest)
	}
	cdt, err := content.ReadBlob(ctx, cs, man.Config)
	if err != nil {
		return ocispecs.Platform{}, nil, err
	}
	var img ocispecs.Image
	if err := json.Unmarshal(cdt, &img); err != nil {
		return ocispecs.Platform{}, nil, errors.Wrapf(err, "config %s", man.Config.Digest)
	}
	p := img.Platform
	if p.OS == "" && m.Platform != nil {
		p = *m.Platform
	}
	return platforms.Normalize(p), img.RootFS.DiffIDs, nil
}

// PlatformManifest returns the manifest of target for platform want (target
// itself when it is a manifest; of an index, the best match as
// platforms.Only ranks them) and the platform the image config names.
func PlatformManifest(ctx context.Context, p content.Provider, target ocispecs.Descriptor, want ocispecs.Platform) (ocispecs.Descriptor, ocispecs.Platform, error) {
	match := platforms.Only(want)
	desc := target
	if images.IsIndexType(target.MediaType) {
		dt, err := content.ReadBlob(ctx, p, target)
		if err != nil {
			return desc, ocispecs.Platform{}, err
		}
		var idx ocispecs.Index
		if err := json.Unmarshal(dt, &idx); err != nil {
			return desc, ocispecs.Platform{}, err
		}
		found := false
		for _, m := range idx.Manifests {
			if m.Platform != nil && match.Match(*m.Platform) && images.IsManifestType(m.MediaType) {
				if !found || match.Less(*m.Platform, *desc.Platform) {
					desc, found = m, true
				}
			}
		}
		if !found {
			return desc, ocispecs.Platform{}, errors.Errorf("image index %s has no manifest for %s", target.Digest, platforms.FormatAll(want))
		}
	}
	dt, err := content.ReadBlob(ctx, p, desc)
	if err != nil {
		return desc, ocispecs.Platform{}, errors.Wrap(err, "reading the manifest")
	}
	var m ocispecs.Manifest
	if err := json.Unmarshal(dt, &m); err != nil {
		return desc, ocispecs.Platform{}, err
	}
	cdt, err := content.ReadBlob(ctx, p, m.Config)
	if err != nil {
		return desc, ocispecs.Platform{}, errors.Wrap(err, "reading the image config")
	}
	var img ocispecs.Image
	if err := json.Unmarshal(cdt, &img); err != nil {
		return desc, ocispecs.Platform{}, err
	}
	plat := img.Platform
	if plat.OS == "" {
		plat = platforms.DefaultSpec()
	}
	return desc, platforms.Normalize(plat), nil
}
