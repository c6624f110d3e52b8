// Package frontend is the commit frontend: it reads a Commitfile (or the
// frontend options), converts it to LLB, solves it and returns the result
// with its image config, for any BuildKit exporter.
package frontend

import (
	"context"
	"encoding/json"
	"maps"
	"strconv"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Option keys the frontend reads besides those dockerui handles.
const (
	keyFilename = "filename"
	keyBase     = "base"
	keyCommit   = "commit"
	keyChange   = "change"
	keyAuthor   = "author"
	keyMessage  = "message"
	keyCreated  = "created-by"
	keyConfig   = "image-config"
	// keySquashSince makes every COMMIT squash everything above the named
	// context's image (or "scratch": everything) into one layer.
	keySquashSince = "squash-since"
	// keySquashName is how history names the squash base.
	keySquashName = "squash-since-name"

	// DefaultFilename is the Commitfile read when no filename is given.
	DefaultFilename = "Commitfile"
	fallbackFile    = "Dockerfile"
	keyEpochArg     = "build-arg:SOURCE_DATE_EPOCH"
)

// Build is the frontend's entry point, for grpcclient.RunFromEnvironment and
// for an in-process client.Build.
func Build(ctx context.Context, c gwclient.Client) (_ *gwclient.Result, err error) {
	opts := c.BuildOpts().Opts
	_, hasFile := opts[keyFilename]
	optionsOnly := !hasFile && (opts[keyBase] != "" || opts[keyCommit] != "")

	var (
		src *dockerui.Source
		bc  *dockerui.Client
	)
	// parse gives each platform its own AST: the conversion expands the
	// instructions in place.
	parse := func() (*commitfile.Commitfile, error) {
		var cf *commitfile.Commitfile
		if optionsOnly {
			cf, err = commitfile.FromOptions(commitfile.Options{
				Base:      opts[keyBase],
				Commit:    opts[keyCommit],
				Change:    opts[keyChange],
				CreatedBy: opts[keyCreated],
			})
		} else {
			cf, err = commitfile.Parse(src.SourceMap.Data)
			if err == nil {
				err = cf.AppendChanges(opts[keyChange])
			}
		}
		if err != nil {
			return nil, err
		}
		if createdBy := opts[keyCreated]; createdBy != "" {
			for i := range cf.Stages {
				for _, cmd := range cf.Stages[i].Commands {
					if cc, ok := cmd.(*commitfile.CommitCommand); ok {
						cc.CreatedBy = createdBy
					}
				}
			}
		}
		return cf, nil
	}
	if optionsOnly {
		if bc, err = dockerui.NewClient(c); err != nil {
			return nil, err
		}
	} else {
		bc, src, err = readCommitfile(ctx, c, hasFile)
		if err != nil {
			return nil, err
		}
		defer func() {
			var el *parser.LocationError
			if errors.As(err, &el) {
				for _, l := range el.Locations {
					err = wrapSource(err, src.SourceMap, l)
				}
			}
		}()
	}
	// Parse once up front so that a bad input fails before anything is solved.
	if _, err := parse(); err != nil {
		return nil, err
	}
	epoch, err := parseEpoch(opts[keyEpochArg])
	if err != nil {
		return nil, err
	}
	var imageConfig *dockerspec.DockerOCIImageConfig
	if v := opts[keyConfig]; v != "" {
		imageConfig = &dockerspec.DockerOCIImageConfig{}
		if err := json.Unmarshal([]byte(v), imageConfig); err != nil {
			return nil, errors.Wrapf(err, "option %s: not an image config", keyConfig)
		}
	}

	rb, err := bc.Build(ctx, func(ctx context.Context, platform *ocispecs.Platform, idx int) (*dockerui.BuildResult, error) {
		cf, err := parse()
		if err != nil {
			return nil, err
		}
		var squash *cfllb.Squash
		if name := opts[keySquashSince]; name == "scratch" {
			squash = &cfllb.Squash{Name: "scratch"}
		} else if name != "" {
			st, img, err := (&resolver{bc: bc, c: c}).NamedContext(ctx, name, platform)
			if err != nil {
				return nil, errors.Wrapf(err, "%s=%s", keySquashSince, name)
			}
			if st == nil || img == nil {
				return nil, errors.Errorf("%s=%s: no image context of that name", keySquashSince, name)
			}
			squash = &cfllb.Squash{Name: name, State: *st, Layers: len(img.RootFS.DiffIDs)}
			if n := opts[keySquashName]; n != "" {
				squash.Name = n
			}
		}
		res, err := cfllb.Convert(ctx, cf, cfllb.ConvertOpt{
			SquashSince:    squash,
			BuildArgs:      maps.Clone(bc.BuildArgs),
			TargetPlatform: platform,
			Epoch:          epoch,
			Target:         bc.Target,
			Author:         opts[keyAuthor],
			Message:        opts[keyMessage],
			Resolver:       &resolver{bc: bc, c: c},
			Config:         imageConfig,
			SourceMap:      sourceMap(src),
		})
		if err != nil {
			return nil, err
		}
		def, err := res.State.Marshal(ctx)
		if err != nil {
			return nil, errors.Wrap(err, "marshalling LLB")
		}
		r, err := c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB(), CacheImports: bc.CacheImports})
		if err != nil {
			return nil, err
		}
		ref, err := r.SingleRef()
		if err != nil {
			return nil, err
		}
		for k, v := range bc.Labels {
			if res.Image.Config.Labels == nil {
				res.Image.Config.Labels = map[string]string{}
			}
			res.Image.Config.Labels[k] = v
		}
		return &dockerui.BuildResult{Reference: ref, Image: res.Image, BaseImage: res.BaseImage, Epoch: epoch}, nil
	})
	if err != nil {
		return nil, err
	}
	return rb.Finalize()
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
		bc, err := dockerui.NewClient(withOpt(c, keyFilename, name))
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
	return nil, nil, errors.Wrapf(firstErr, "no %s (and no base or commit option) in the build context", DefaultFilename)
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

func parseEpoch(v string) (*time.Time, error) {
	if v == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return nil, errors.Errorf("invalid SOURCE_DATE_EPOCH %q: not a number of seconds", v)
	}
	t := time.Unix(n, 0).UTC()
	return &t, nil
}

func sourceMap(src *dockerui.Source) *bkllb.SourceMap {
	if src == nil {
		return nil
	}
	return src.SourceMap
}

func wrapSource(err error, sm *bkllb.SourceMap, ranges []parser.Range) error {
	if sm == nil {
		return err
	}
	s := &errdefs.Source{
		Info: &pb.SourceInfo{
			Data:       sm.Data,
			Filename:   sm.Filename,
			Language:   sm.Language,
			Definition: sm.Definition.ToPB(),
		},
	}
	for _, r := range ranges {
		s.Ranges = append(s.Ranges, &pb.Range{
			Start: &pb.Position{Line: int32(r.Start.Line), Character: int32(r.Start.Character)},
			End:   &pb.Position{Line: int32(r.End.Line), Character: int32(r.End.Character)},
		})
	}
	return errdefs.WithSource(err, s)
}

// resolver looks things up through the gateway for the conversion.
type resolver struct {
	bc *dockerui.Client
	c  gwclient.Client
}

func (r *resolver) NamedContext(ctx context.Context, name string, p *ocispecs.Platform) (*bkllb.State, *dockerspec.DockerOCIImage, error) {
	nc, err := r.bc.NamedContext(name, dockerui.ContextOpt{Platform: p, ResolveMode: r.bc.ImageResolveMode.String()})
	if err != nil || nc == nil {
		return nil, nil, err
	}
	return nc.Load(ctx)
}

func (r *resolver) ResolveImage(ctx context.Context, ref string, p *ocispecs.Platform) (bkllb.State, *dockerspec.DockerOCIImage, error) {
	return resolveImage(ctx, r.c, ref, p, r.bc.ImageResolveMode.String())
}

func (r *resolver) Context(ctx context.Context, name string) (bkllb.State, error) {
	if name == "" {
		st, err := r.bc.MainContext(ctx)
		if err != nil {
			return bkllb.State{}, err
		}
		return *st, nil
	}
	st, _, err := r.NamedContext(ctx, name, nil)
	if err != nil {
		return bkllb.State{}, err
	}
	if st == nil {
		return bkllb.State{}, errors.Errorf("no build context named %q", name)
	}
	return *st, nil
}

func (r *resolver) CommitSource(ctx context.Context, name string, p *ocispecs.Platform, at ...bkllb.ConstraintsOpt) (*cfllb.CommitSource, error) {
	st, _, err := r.NamedContext(ctx, name, p)
	if err != nil {
		return nil, err
	}
	if st == nil {
		bo := r.c.BuildOpts()
		sessionID := bo.SessionID
		if v, ok := bo.Opts["local-sessionid:"+name]; ok {
			sessionID = v
		}
		lopts := []bkllb.LocalOption{bkllb.SessionID(sessionID), bkllb.SharedKeyHint(name), bkllb.WithCustomName("[commit] load " + name)}
		for _, a := range at {
			if lo, ok := a.(bkllb.LocalOption); ok {
				lopts = append(lopts, lo)
			}
		}
		l := bkllb.Local(name, lopts...)
		st = &l
	}
	def, err := st.Marshal(ctx)
	if err != nil {
		return nil, err
	}
	res, err := r.c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
	if err != nil {
		return nil, errors.Wrapf(err, "loading the context %q (give it with --local %s=DIR or --build-context %s=...)", name, name, name)
	}
	ref, err := res.SingleRef()
	if err != nil {
		return nil, err
	}
	dt, err := ref.ReadFile(ctx, gwclient.ReadRequest{Filename: changeset.ManifestFile})
	if err != nil {
		// No manifest: a plain tree.
		return &cfllb.CommitSource{Kind: cfllb.Tree, State: *st}, nil
	}
	m, err := changeset.ParseManifest(dt)
	if err != nil {
		return nil, errors.Wrapf(err, "context %q", name)
	}
	src := &cfllb.CommitSource{Kind: cfllb.ChangeSet, State: *st, TarPath: "/" + changeset.TarFile, Entries: m.Entries}
	if m.Whiteouts > 0 {
		wh, err := ref.ReadFile(ctx, gwclient.ReadRequest{Filename: changeset.WhiteoutFile})
		if err != nil {
			return nil, errors.Wrapf(err, "context %q: reading %s", name, changeset.WhiteoutFile)
		}
		if src.Deletions, src.Opaque, err = changeset.ParseWhiteouts(wh); err != nil {
			return nil, errors.Wrapf(err, "context %q", name)
		}
	}
	return src, nil
}
