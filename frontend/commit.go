package frontend

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	"github.com/distribution/reference"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/util/system"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// CommitOpt describes a commit made of options alone: a base, at most one
// COMMIT on it, and config changes.
type CommitOpt struct {
	// Platform is the image's platform, used when the base is scratch.
	Platform ocispecs.Platform
	// Source is what the COMMIT applies; nil for a step without one
	// (a builder's metadata-only step).
	Source *cfllb.CommitSource
	// Parts are the rest of Source's change set: each is applied on the
	// one before as a layer of its own, with a history entry of its own.
	Parts []*cfllb.CommitSource
	// Squash, when set, squashes the layers above Squash's image, and the
	// commit's own changes, into one layer.
	Squash *cfllb.Squash
	// CreatedBy, Author and Message make the history entry; without a
	// Source an entry is added only when CreatedBy is set.
	CreatedBy, Author, Message string
	// ImageConfig, when set, replaces the base's config.
	ImageConfig *dockerspec.DockerOCIImageConfig
	// Changes are `docker commit --change` instructions, applied to the
	// config only.
	Changes []instructions.Command
	// Labels are added to the config (the label:NAME options).
	Labels map[string]string
	// Epoch is SOURCE_DATE_EPOCH: the time of the image and its entry; nil
	// for now.
	Epoch *time.Time
	// Constraints apply to the COMMIT's ops.
	Constraints []bkllb.ConstraintsOpt
	// WalkingDiffer has the layer computed by the worker's walking
	// differ, as docker commit computes it (cfllb.WalkingDiffer).
	WalkingDiffer bool
}

// ConvertCommit returns the state and image a commit makes of base, whose
// image is baseImg (nil for scratch), as docker commit makes it: one layer
// (none for an empty change set), one history entry of its own time, the
// changes in the config only. No instruction runs: the base's ONBUILD
// triggers never fire, and the config keeps only the ONBUILD lines the
// changes add, as docker commit's does. It needs no daemon.
func ConvertCommit(base bkllb.State, baseImg *dockerspec.DockerOCIImage, opt CommitOpt) (bkllb.State, *dockerspec.DockerOCIImage, error) {
	var img *dockerspec.DockerOCIImage
	if baseImg != nil {
		img = imageconfig.Clone(baseImg)
		// docker commit leaves the base's triggers out (moby's merge of
		// a container's config never copies OnBuild), as a Dockerfile's
		// FROM clears them once run: here they are cleared, not run.
		img.Config.OnBuild = nil
	} else {
		img = emptyImage(opt.Platform)
	}
	// The time is set here, never left to the exporter: it would take the
	// layer's time from BuildKit's cache, and a second commit of the same
	// changes would get the first one's.
	created := historyTime(opt.Epoch)
	st, layer, partLayers := base, false, 0
	if opt.Source != nil {
		st, layer = cfllb.Apply(base, opt.Source, opt.Constraints...)
		if opt.WalkingDiffer && layer && opt.Squash == nil {
			st = cfllb.WalkingDiffer(base, st, opt.Constraints...)
		}
		for _, part := range opt.Parts {
			next, l := cfllb.Apply(st, part, opt.Constraints...)
			if opt.WalkingDiffer && l && opt.Squash == nil {
				next = cfllb.WalkingDiffer(st, next, opt.Constraints...)
			}
			st = next
			if l {
				partLayers++
			}
		}
		if opt.Squash != nil {
			st, layer, partLayers = cfllb.Squashed(st, opt.Squash, opt.Constraints...), true, 0
		}
	}
	if opt.Source != nil || opt.CreatedBy != "" {
		e := imageconfig.Entry{CreatedBy: opt.CreatedBy, Author: opt.Author, Comment: opt.Message, Created: created, EmptyLayer: !layer}
		if sq := opt.Squash; sq != nil && opt.Source != nil {
			n := squashHistory(img.History, sq.Layers) + 1
			note := fmt.Sprintf("squashed %d layers above %s into one", n, sq.Name)
			if e.Comment == "" {
				e.Comment = note
			} else {
				e.Comment += " (" + note + ")"
			}
		}
		img = imageconfig.AddHistory(img, e)
		for i := range partLayers {
			img = imageconfig.AddHistory(img, imageconfig.Entry{
				CreatedBy: opt.CreatedBy, Created: created,
				Comment: fmt.Sprintf("part %d of %d of the layers of the commit above", i+2, partLayers+1),
			})
		}
	}
	if opt.ImageConfig != nil {
		img.Config = *imageconfig.CloneConfig(opt.ImageConfig)
	}
	img, err := imageconfig.Change(img, opt.Changes)
	if err != nil {
		return bkllb.State{}, nil, errors.Wrap(err, "--change")
	}
	if len(opt.Labels) > 0 {
		if img.Config.Labels == nil {
			img.Config.Labels = map[string]string{}
		}
		maps.Copy(img.Config.Labels, opt.Labels)
	}
	img.Created = created
	return st, img, nil
}

// emptyImage is the config of scratch on platform p, as BuildKit's
// Dockerfile converter starts FROM scratch.
func emptyImage(p ocispecs.Platform) *dockerspec.DockerOCIImage {
	img := &dockerspec.DockerOCIImage{}
	img.Architecture, img.OS, img.OSVersion, img.Variant = p.Architecture, p.OS, p.OSVersion, p.Variant
	img.RootFS.Type = "layers"
	img.Config.WorkingDir = "/"
	if p.OS != "windows" {
		img.Config.Env = []string{"PATH=" + system.DefaultPathEnv(p.OS)}
	}
	return img
}

// base loads the base of an options-only build for platform p: scratch, a
// named context, or an image reference resolved as a Dockerfile's FROM
// resolves it.
func (cs *contexts) base(ctx context.Context, name string, p ocispecs.Platform) (bkllb.State, *dockerspec.DockerOCIImage, error) {
	if name == "" || name == Scratch {
		return bkllb.Scratch().Platform(p), nil, nil
	}
	st, img, err := cs.namedContext(ctx, name, &p)
	if err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "%s=%s", KeyBase, name)
	}
	if st != nil {
		return *st, img, nil
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "%s=%s", KeyBase, name)
	}
	named = reference.TagNameOnly(named)
	mode := cs.bc.ImageResolveMode
	_, dgst, dt, err := cs.c.ResolveImageConfig(ctx, named.String(), sourceresolver.Opt{
		LogName:  "[base] resolve " + name,
		ImageOpt: &sourceresolver.ResolveImageOpt{Platform: &p, ResolveMode: mode.String()},
	})
	if err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "%s=%s", KeyBase, name)
	}
	img = &dockerspec.DockerOCIImage{}
	if err := json.Unmarshal(dt, img); err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "%s=%s: its config", KeyBase, name)
	}
	ref := named.String()
	if dgst != "" {
		if withDigest, err := reference.WithDigest(named, dgst); err == nil {
			ref = withDigest.String()
		}
	}
	base, err := bkllb.Image(ref, bkllb.Platform(p), mode, bkllb.WithCustomName("[base] "+name)).WithImageConfig(dt)
	if err != nil {
		return bkllb.State{}, nil, errors.Wrapf(err, "%s=%s", KeyBase, name)
	}
	return base, img, nil
}

// epochOf is SOURCE_DATE_EPOCH among the build arguments, nil when unset.
func epochOf(args map[string]string) (*time.Time, error) {
	v, ok := args["SOURCE_DATE_EPOCH"]
	if !ok || v == "" {
		return nil, nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, errors.Errorf("SOURCE_DATE_EPOCH=%q: not a number of seconds", v)
	}
	t := time.Unix(sec, 0).UTC()
	return &t, nil
}

// convertOptions converts a build that options alone describe, for
// platform p: the base, the commit context COMMITted on it, the changes.
func (cs *contexts) convertOptions(ctx context.Context, o *Options, changes []instructions.Command, p ocispecs.Platform) (*Result, error) {
	epoch, err := epochOf(cs.bc.BuildArgs)
	if err != nil {
		return nil, err
	}
	base, baseImg, err := cs.base(ctx, o.Base, p)
	if err != nil {
		return nil, err
	}
	opt := CommitOpt{
		Platform: p, CreatedBy: o.CreatedBy, Author: o.Author, Message: o.Message,
		ImageConfig: o.ImageConfig, Changes: changes, Labels: cs.bc.Labels, Epoch: epoch,
		WalkingDiffer: o.LayerDiffer == DifferWalking,
	}
	noCache := cs.bc.IsNoCache("")
	if noCache {
		opt.Constraints = append(opt.Constraints, bkllb.IgnoreCache)
	}
	if o.Commit != "" {
		if opt.CreatedBy == "" {
			opt.CreatedBy = "COMMIT " + o.Commit
		}
		if opt.Source, err = cs.CommitSource(ctx, o.Commit, &p, opt.Constraints...); err != nil {
			return nil, errors.Wrapf(err, "COMMIT %s", o.Commit)
		}
		for _, name := range o.CommitParts {
			part, err := cs.CommitSource(ctx, name, &p, opt.Constraints...)
			if err != nil {
				return nil, errors.Wrapf(err, "COMMIT %s, its part %s", o.Commit, name)
			}
			opt.Parts = append(opt.Parts, part)
		}
		opt.Constraints = append([]bkllb.ConstraintsOpt{bkllb.WithCustomName("COMMIT " + o.Commit)}, opt.Constraints...)
	}
	if opt.Squash, err = cs.squash(ctx, o, &p); err != nil {
		return nil, err
	}
	st, img, err := ConvertCommit(base, baseImg, opt)
	if err != nil {
		return nil, err
	}
	def, err := st.Marshal(ctx)
	if err != nil {
		return nil, errors.Wrap(err, "marshalling LLB")
	}
	return &Result{
		Definition: def.ToPB(), Image: img, BaseImage: baseImg, Epoch: epoch,
		SBOM: &dockerfile2llb.SBOMTargets{Core: st}, IgnoreCache: noCache,
	}, nil
}
