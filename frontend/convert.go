package frontend

import (
	"context"
	"fmt"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// SourceFunc returns what the COMMIT context name holds, for platform p;
// at ties what it loads to the COMMIT's line.
type SourceFunc func(ctx context.Context, name string, p *ocispecs.Platform, at ...bkllb.ConstraintsOpt) (*cfllb.CommitSource, error)

// ConvertOpt are the inputs of a conversion besides the Commitfile.
type ConvertOpt struct {
	// Dockerfile is what BuildKit's Dockerfile converter is given, as the
	// Dockerfile frontend gives it.
	Dockerfile dockerfile2llb.ConvertOpt
	// Source resolves COMMIT contexts.
	Source SourceFunc
	// Squash, when set, makes every COMMIT squash the stage's layers above
	// it, and the commit's own changes, into one layer on it.
	Squash *cfllb.Squash
	// Author and Message apply to COMMITs that give none.
	Author, Message string
	// CreatedBy, when set, is the created_by of every COMMIT; with no
	// COMMIT at all it adds one history entry with no layer.
	CreatedBy string
	// ImageConfig, when set, replaces the config of the result.
	ImageConfig *dockerspec.DockerOCIImageConfig
	// Changes are `--change` instructions, applied to the result's config
	// only (no layer, no history entry).
	Changes []instructions.Command
}

// Result is a converted Commitfile.
type Result struct {
	// Definition is the LLB, COMMITs spliced in.
	Definition *pb.Definition
	// Image is the image config with its history.
	Image *dockerspec.DockerOCIImage
	// BaseImage is the config of the stage's base, nil for scratch.
	BaseImage *dockerspec.DockerOCIImage
	// Epoch is SOURCE_DATE_EPOCH, when given.
	Epoch *time.Time
	// SBOM is what an SBOM scanner scans, as the Dockerfile converter
	// gives it (the COMMITs not spliced in: the scan sees the stages'
	// other steps).
	SBOM *dockerfile2llb.SBOMTargets
	// IgnoreCache is set when the build asks for no cache.
	IgnoreCache bool
}

// committed is what one COMMIT became.
type committed struct {
	cmd   *commitfile.CommitCommand
	layer bool
}

// Convert converts cf: BuildKit's Dockerfile converter converts every
// instruction (COMMITs are placeholders to it), then each placeholder is
// replaced by the COMMIT's ops and its history entry by the COMMIT's. It
// needs no daemon when opt.Dockerfile and opt.Source need none.
func Convert(ctx context.Context, cf *commitfile.Commitfile, opt ConvertOpt) (*Result, error) {
	dfRes, err := dockerfile2llb.Dockerfile2LLB(ctx, cf.Text, opt.Dockerfile)
	if err != nil {
		return nil, err
	}
	def, err := dfRes.State.Marshal(ctx)
	if err != nil {
		return nil, errors.Wrap(err, "marshalling LLB")
	}
	done := map[int]committed{}
	replace := func(ctx context.Context, site cfllb.Site) (bkllb.State, error) {
		if site.Index >= len(cf.Commits) {
			return bkllb.State{}, errors.Errorf("no COMMIT numbered %d", site.Index)
		}
		c, err := cf.Commits[site.Index].Expanded(cf.EscapeToken, site.Env)
		if err != nil {
			return bkllb.State{}, err
		}
		if opt.CreatedBy != "" {
			c.CreatedBy = opt.CreatedBy
		}
		if c.Author == "" {
			c.Author = opt.Author
		}
		if c.Message == "" {
			c.Message = opt.Message
		}
		at := append([]bkllb.ConstraintsOpt{bkllb.WithCustomName("COMMIT " + c.Context)}, sourceLocation(opt.Dockerfile.SourceMap, c.Loc)...)
		if opt.Source == nil {
			return bkllb.State{}, parser.WithLocation(errors.New("COMMIT: no way to load contexts"), c.Loc)
		}
		src, err := opt.Source(ctx, c.Context, site.Platform, at[1:]...)
		if err != nil {
			return bkllb.State{}, parser.WithLocation(errors.Wrapf(err, "COMMIT %s", c.Context), c.Loc)
		}
		st, layer := cfllb.Apply(site.State, src, at...)
		if opt.Squash != nil {
			st, layer = cfllb.Squashed(st, opt.Squash, at...), true
		}
		done[site.Index] = committed{cmd: c, layer: layer}
		return st, nil
	}
	spliced, err := cfllb.Splice(ctx, def.ToPB(), cf.Key, replace)
	if err != nil {
		return nil, err
	}
	sbom, err := spliceSBOM(ctx, dfRes.SBOM, spliced, cf.Key, replace)
	if err != nil {
		return nil, err
	}
	img, err := commitHistory(dfRes.Image, cf.Key, done, opt, dfRes.Epoch)
	if err != nil {
		return nil, err
	}
	return &Result{Definition: spliced, Image: img, BaseImage: dfRes.BaseImage, Epoch: dfRes.Epoch, SBOM: sbom, IgnoreCache: dfRes.IsIgnoreCache}, nil
}

// spliceSBOM returns the SBOM scan targets with the COMMITs spliced in:
// the core is the build's own result, the extras are spliced one by one.
func spliceSBOM(ctx context.Context, in *dockerfile2llb.SBOMTargets, core *pb.Definition, key string, replace cfllb.Replacer) (*dockerfile2llb.SBOMTargets, error) {
	if in == nil {
		return nil, nil
	}
	st, err := stateOf(core)
	if err != nil {
		return nil, err
	}
	out := &dockerfile2llb.SBOMTargets{Core: st, Extras: map[string]bkllb.State{}}
	for name, x := range in.Extras {
		def, err := x.Marshal(ctx)
		if err != nil {
			return nil, err
		}
		sdef, err := cfllb.Splice(ctx, def.ToPB(), key, replace)
		if err != nil {
			return nil, err
		}
		if out.Extras[name], err = stateOf(sdef); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// stateOf returns the state a marshalled definition stands for.
func stateOf(def *pb.Definition) (bkllb.State, error) {
	if len(def.Def) == 0 {
		return bkllb.Scratch(), nil
	}
	op, err := bkllb.NewDefinitionOp(def)
	if err != nil {
		return bkllb.State{}, err
	}
	return bkllb.NewState(op.Output()), nil
}

// commitHistory returns a copy of img whose placeholder entries are the
// COMMITs' entries, with a squash's marks, the metadata-only entry and the
// replaced config the options ask for.
func commitHistory(img *dockerspec.DockerOCIImage, key string, done map[int]committed, opt ConvertOpt, epoch *time.Time) (*dockerspec.DockerOCIImage, error) {
	out := imageconfig.Clone(img)
	commits := 0
	for i := range out.History {
		h := &out.History[i]
		k, ok := cfllb.PlaceholderIndex(key, h.CreatedBy)
		if !ok {
			continue
		}
		c, ok := done[k]
		if !ok {
			return nil, errors.Errorf("history entry %q stands for a COMMIT that was not converted", h.CreatedBy)
		}
		commits++
		h.CreatedBy = c.cmd.CreatedByText()
		h.Author = c.cmd.Author
		h.Comment = c.cmd.Message
		h.EmptyLayer = !c.layer
		if c.cmd.Author != "" {
			out.Author = c.cmd.Author
		}
		if sq := opt.Squash; sq != nil {
			n := squashHistory(out.History[:i], sq.Layers) + 1
			note := fmt.Sprintf("squashed %d layers above %s into one", n, sq.Name)
			if h.Comment == "" {
				h.Comment = note
			} else {
				h.Comment += " (" + note + ")"
			}
		}
	}
	if commits == 0 && opt.CreatedBy != "" {
		out = imageconfig.AddHistory(out, imageconfig.Entry{
			CreatedBy: opt.CreatedBy, Author: opt.Author, Comment: opt.Message,
			Created: historyTime(epoch), EmptyLayer: true,
		})
	}
	if opt.ImageConfig != nil {
		out.Config = *imageconfig.CloneConfig(opt.ImageConfig)
	}
	out, err := imageconfig.Change(out, opt.Changes)
	if err != nil {
		return nil, errors.Wrap(err, "--change")
	}
	return out, nil
}

// historyTime is the time of a history entry the converter did not write:
// SOURCE_DATE_EPOCH when given, else now.
func historyTime(epoch *time.Time) *time.Time {
	if epoch != nil {
		return epoch
	}
	t := time.Now().UTC()
	return &t
}

// squashHistory marks the layer entries of history after the first keep
// as empty_layer: they stay as a record, their layers squashed into the
// next one. It returns how many it marked.
func squashHistory(history []ocispecs.History, keep int) int {
	seen, marked := 0, 0
	for i := range history {
		if history[i].EmptyLayer {
			continue
		}
		if seen++; seen > keep {
			history[i].EmptyLayer = true
			marked++
		}
	}
	return marked
}

// sourceLocation ties ops to the Commitfile lines of an instruction.
func sourceLocation(sm *bkllb.SourceMap, loc []parser.Range) []bkllb.ConstraintsOpt {
	if sm == nil || len(loc) == 0 {
		return nil
	}
	return []bkllb.ConstraintsOpt{sm.Location(pbRanges(loc))}
}

func pbRanges(loc []parser.Range) []*pb.Range {
	out := make([]*pb.Range, 0, len(loc))
	for _, l := range loc {
		out = append(out, &pb.Range{
			Start: &pb.Position{Line: int32(l.Start.Line), Character: int32(l.Start.Character)},
			End:   &pb.Position{Line: int32(l.End.Line), Character: int32(l.End.Character)},
		})
	}
	return out
}
