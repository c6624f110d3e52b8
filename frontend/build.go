// Package frontend is the commit frontend and its options codec. A
// Commitfile is converted by BuildKit's Dockerfile converter, every
// instruction but COMMIT, with the COMMITs spliced in; a build of options
// alone (every commit) is converted as docker commit makes an image — the
// base, one COMMIT layer, the changes in the config. The result is solved
// and returned with its image config, for any BuildKit exporter.
package frontend

import (
	"context"
	"maps"
	"strings"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	"github.com/containerd/platforms"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/attestations/sbom"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/frontend/subrequests/convertllb"
	"github.com/moby/buildkit/frontend/subrequests/lint"
	"github.com/moby/buildkit/frontend/subrequests/outline"
	"github.com/moby/buildkit/frontend/subrequests/targets"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/solver/result"
	"github.com/moby/buildkit/util/bkmaps"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// fallbackFile is read when there is no Commitfile: a Dockerfile whose
// `# syntax=` line chose this frontend.
const fallbackFile = "Dockerfile"

// Build is the frontend's entry point, for grpcclient.RunFromEnvironment and
// for an in-process client.Build. It orchestrates as BuildKit's Dockerfile
// frontend does: dockerui reads the options and the Commitfile, the
// conversion runs per platform, dockerui assembles the result.
func Build(ctx context.Context, c gwclient.Client) (_ *gwclient.Result, err error) {
	o, err := ParseOptions(c.BuildOpts().Opts)
	if err != nil {
		return nil, err
	}
	bc, src, cf, err := read(ctx, c, o)
	if err != nil {
		return nil, err
	}
	// The changes go into the config of the image built, never into its
	// layers or history, as docker commit applies them.
	changes, err := commitfile.ParseChanges(strings.Join(o.Changes, "\n"))
	if err != nil {
		return nil, err
	}
	if src != nil {
		defer func() {
			var el *parser.LocationError
			if errors.As(err, &el) {
				for _, l := range el.Locations {
					err = wrapSource(err, src.SourceMap, l)
				}
			}
		}()
	}
	dfOpt := dockerfile2llb.ConvertOpt{Config: bc.Config, Client: bc, MetaResolver: c}
	if src != nil {
		dfOpt.SourceMap = src.SourceMap
		dfOpt.Warn = func(rule, description, url, msg string, location []parser.Range) {
			line := 0
			if len(location) > 0 {
				line = location[0].Start.Line
			}
			src.Warn(ctx, linter.LintFormatShort(rule, msg, line), gwclient.WarnOpts{Level: 1, Detail: [][]byte{[]byte(description)}, URL: url, Range: pbRanges(location)})
		}
	}
	if res, ok, err := bc.HandleSubrequest(ctx, dockerui.RequestHandler{
		Outline: func(ctx context.Context) (*outline.Outline, error) {
			return dockerfile2llb.Dockerfile2Outline(ctx, cf.Text, dfOpt)
		},
		ListTargets: func(ctx context.Context) (*targets.List, error) {
			return dockerfile2llb.ListTargets(ctx, cf.Text)
		},
		Lint: func(ctx context.Context) (*lint.LintResults, error) {
			return dockerfile2llb.DockerfileLint(ctx, cf.Text, dfOpt)
		},
		ConvertLLB: func(ctx context.Context) (*convertllb.Result, error) {
			return dockerfile2llb.DockerfileConvertLLB(ctx, cf.Text, dfOpt)
		},
	}); err != nil || ok {
		return res, err
	}
	cs := &contexts{bc: bc, c: c, sources: map[string]string{}}
	for i, src := range o.CommitSources {
		if src == "" {
			continue
		}
		if i == 0 {
			cs.sources[o.Commit] = src
		} else {
			cs.sources[o.CommitParts[i-1]] = src
		}
	}
	if o.CommitTree {
		cs.trees = map[string]bool{o.Commit: true}
		for _, p := range o.CommitParts {
			cs.trees[p] = true
		}
	}
	var scanner sbom.Scanner
	if bc.SBOM != nil {
		p := bc.BuildPlatforms[0]
		scanner, err = sbom.CreateSBOMScanner(ctx, c, bc.SBOM.Generator, p, sourceresolver.Opt{
			ImageOpt: &sourceresolver.ResolveImageOpt{ResolveMode: bc.ImageResolveMode.String(), Platform: &p},
		}, bc.SBOM.Parameters)
		if err != nil {
			return nil, err
		}
	}
	var scanTargets bkmaps.SyncMap[string, *Result]
	rb, err := bc.Build(ctx, func(ctx context.Context, platform *ocispecs.Platform, idx int) (*dockerui.BuildResult, error) {
		var res *Result
		if o.optionsOnly() {
			p := platforms.DefaultSpec()
			if platform != nil {
				p = *platform
			}
			if res, err = cs.convertOptions(ctx, o, changes, platforms.Normalize(p)); err != nil {
				return nil, err
			}
		} else {
			opt := ConvertOpt{
				Dockerfile: dfOpt, Source: cs.CommitSource,
				Author: o.Author, Message: o.Message, CreatedBy: o.CreatedBy, ImageConfig: o.ImageConfig,
				Changes: changes,
			}
			opt.Dockerfile.BuildArgs = maps.Clone(opt.Dockerfile.BuildArgs)
			opt.Dockerfile.TargetPlatform = platform
			if idx != 0 {
				opt.Dockerfile.Warn = nil
			}
			if opt.Squash, err = cs.squash(ctx, o, platform); err != nil {
				return nil, err
			}
			if res, err = Convert(ctx, cf, opt); err != nil {
				return nil, err
			}
		}
		if res.Image, err = o.finishImage(res.Image); err != nil {
			return nil, err
		}
		r, err := c.Solve(ctx, gwclient.SolveRequest{Definition: res.Definition, CacheImports: bc.CacheImports})
		if err != nil {
			return nil, err
		}
		ref, err := r.SingleRef()
		if err != nil {
			return nil, err
		}
		p := platforms.DefaultSpec()
		if platform != nil {
			p = *platform
		}
		scanTargets.Store(platforms.FormatAll(platforms.Normalize(p)), res)
		return &dockerui.BuildResult{Reference: ref, Image: res.Image, BaseImage: res.BaseImage, Epoch: res.Epoch}, nil
	})
	if err != nil {
		return nil, err
	}
	if scanner != nil {
		// SBOM attestations, as the Dockerfile frontend makes them.
		if err := rb.EachPlatform(ctx, func(ctx context.Context, id string, p ocispecs.Platform) error {
			target, ok := scanTargets.Load(id)
			if !ok || target.SBOM == nil {
				return errors.Errorf("no SBOM scan target for %s", id)
			}
			var opts []bkllb.ConstraintsOpt
			if target.IgnoreCache {
				opts = append(opts, bkllb.IgnoreCache)
			}
			att, err := scanner(ctx, id, target.SBOM.Core, target.SBOM.Extras, opts...)
			if err != nil {
				return err
			}
			solved, err := result.ConvertAttestation(&att, func(st *bkllb.State) (gwclient.Reference, error) {
				def, err := st.Marshal(ctx)
				if err != nil {
					return nil, err
				}
				r, err := c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
				if err != nil {
					return nil, err
				}
				return r.Ref, nil
			})
			if err != nil {
				return err
			}
			rb.AddAttestation(id, *solved)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	out, err := rb.Finalize()
	if err != nil {
		return nil, err
	}
	o.annotate(out, len(bc.TargetPlatforms) > 1 || bc.MultiPlatformRequested)
	return out, nil
}

// read reads the Commitfile, or makes one of the options (for the
// subrequests: an options-only build is converted by ConvertCommit).
func read(ctx context.Context, c gwclient.Client, o *Options) (*dockerui.Client, *dockerui.Source, *commitfile.Commitfile, error) {
	if o.optionsOnly() {
		bc, err := dockerui.NewClient(c)
		if err != nil {
			return nil, nil, nil, err
		}
		cf, err := commitfile.FromOptions(o.Base, o.Commit)
		if err != nil {
			return nil, nil, nil, err
		}
		return bc, nil, cf, nil
	}
	bc, src, err := readCommitfile(ctx, c, o.Filename != "")
	if err != nil {
		return nil, nil, nil, err
	}
	cf, err := commitfile.Parse(src.Data)
	if err != nil {
		var el *parser.LocationError
		if errors.As(err, &el) {
			for _, l := range el.Locations {
				err = wrapSource(err, src.SourceMap, l)
			}
		}
		return nil, nil, nil, err
	}
	return bc, src, cf, nil
}

// readCommitfile reads the Commitfile: the one named by `filename`, or
// Commitfile, or a Dockerfile carrying the `# syntax=` line that chose this
// frontend.
func readCommitfile(ctx context.Context, c gwclient.Client, named bool) (*dockerui.Client, *dockerui.Source, error) {
	if named {
		bc, err := dockerui.NewClient(c)
		if err != nil {
			return nil, nil, err
		}
		src, err := bc.ReadEntrypoint(ctx, "Commitfile")
		return bc, src, err
	}
	var firstErr error
	for _, name := range []string{DefaultFilename, fallbackFile} {
		bc, err := dockerui.NewClient(withOpt(c, KeyFilename, name))
		if err != nil {
			return nil, nil, err
		}
		src, err := bc.ReadEntrypoint(ctx, "Commitfile")
		if err == nil {
			return bc, src, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, nil, errors.Wrapf(firstErr, "no %s (and no %s or %s option) in the build context", DefaultFilename, KeyBase, KeyCommit)
}

// optClient is a gateway client whose build options carry one more option.
type optClient struct {
	gwclient.Client
	opts gwclient.BuildOpts
}

func (c *optClient) BuildOpts() gwclient.BuildOpts { return c.opts }

func withOpt(c gwclient.Client, k, v string) gwclient.Client {
	bo := c.BuildOpts()
	bo.Opts = maps.Clone(bo.Opts)
	bo.Opts[k] = v
	return &optClient{Client: c, opts: bo}
}

func wrapSource(err error, sm *bkllb.SourceMap, ranges []parser.Range) error {
	if sm == nil {
		return err
	}
	return errdefs.WithSource(err, &errdefs.Source{
		Info: &pb.SourceInfo{
			Data:       sm.Data,
			Filename:   sm.Filename,
			Language:   sm.Language,
			Definition: sm.Definition.ToPB(),
		},
		Ranges: pbRanges(ranges),
	})
}

// squash resolves the squash-since option for one platform.
func (cs *contexts) squash(ctx context.Context, o *Options, platform *ocispecs.Platform) (*cfllb.Squash, error) {
	switch o.SquashSince {
	case "":
		return nil, nil
	case SquashScratch:
		return &cfllb.Squash{Name: SquashScratch}, nil
	}
	st, img, err := cs.namedContext(ctx, o.SquashSince, platform)
	if err != nil {
		return nil, errors.Wrapf(err, "%s=%s", KeySquashSince, o.SquashSince)
	}
	if st == nil || img == nil {
		return nil, errors.Errorf("%s=%s: no image context of that name", KeySquashSince, o.SquashSince)
	}
	sq := &cfllb.Squash{Name: o.SquashSince, State: *st, Layers: len(img.RootFS.DiffIDs)}
	if o.SquashSinceName != "" {
		sq.Name = o.SquashSinceName
	}
	return sq, nil
}
