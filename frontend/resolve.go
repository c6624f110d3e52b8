package frontend

import (
	"context"
	"encoding/json"

	"github.com/distribution/reference"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// resolveImage resolves an image reference to a pinned image state and its config.
func resolveImage(ctx context.Context, c gwclient.Client, ref string, p *ocispecs.Platform, mode string) (bkllb.State, *dockerspec.DockerOCIImage, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "invalid image reference %q", ref)
	}
	named = reference.TagNameOnly(named)
	resolved, dgst, dt, err := c.ResolveImageConfig(ctx, named.String(), sourceresolver.Opt{
		LogName:  "[internal] load metadata for " + named.String(),
		ImageOpt: &sourceresolver.ResolveImageOpt{Platform: p, ResolveMode: mode},
	})
	if err != nil {
		return bkllb.State{}, nil, err
	}
	var img dockerspec.DockerOCIImage
	if err := json.Unmarshal(dt, &img); err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "image %s: bad config", ref)
	}
	pinned := resolved
	if dgst != "" {
		if c, err := reference.WithDigest(named, dgst); err == nil {
			pinned = c.String()
		}
	}
	opts := []bkllb.ImageOption{bkllb.WithCustomName("[base] " + named.String())}
	if p != nil {
		opts = append(opts, bkllb.Platform(*p))
	}
	st, err := bkllb.Image(pinned, opts...).WithImageConfig(dt)
	if err != nil {
		return bkllb.State{}, nil, err
	}
	return st, &img, nil
}
