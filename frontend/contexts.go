package frontend

import (
	"context"
	"strings"

	"github.com/commit-frontend/commit-frontend/changeset"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerui"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// contexts loads COMMIT contexts and squash bases through the gateway.
type contexts struct {
	bc *dockerui.Client
	c  gwclient.Client
	// tree names the context that holds a change set sent as its tree
	// (the commit option with commit-tree); "" for none.
	// trees are the contexts sent as their trees (KeyCommitTree).
	trees map[string]bool
	// sources are the LLB sources of the contexts whose trees an engine
	// in the client's process writes (KeyCommitSources).
	sources map[string]string
}

func (cs *contexts) namedContext(ctx context.Context, name string, p *ocispecs.Platform) (*bkllb.State, *dockerspec.DockerOCIImage, error) {
	nc, err := cs.bc.NamedContext(name, dockerui.ContextOpt{Platform: p, ResolveMode: cs.bc.ImageResolveMode.String()})
	if err != nil || nc == nil {
		return nil, nil, err
	}
	return nc.Load(ctx)
}

// CommitSource returns what the COMMIT context name holds: a named context
// (--build-context) or a local one (--local), read as a change set when it
// carries a change-set manifest, else as a whole tree.
func (cs *contexts) CommitSource(ctx context.Context, name string, p *ocispecs.Platform, at ...bkllb.ConstraintsOpt) (*cfllb.CommitSource, error) {
	if src := cs.sources[name]; src != "" && name != "" {
		c := bkllb.Constraints{}
		bkllb.WithCustomName("[commit] write " + name + " in place").SetConstraintsOption(&c)
		kind := cfllb.TreeChangeSet
		if strings.HasPrefix(src, cfllb.LayerSourceScheme+"://") {
			kind = cfllb.Layer
		}
		return &cfllb.CommitSource{Kind: kind, State: bkllb.NewState(bkllb.NewSource(src, nil, c).Output())}, nil
	}
	if cs.trees[name] && name != "" {
		// Sent as its tree: nothing to read first. A shared key of its
		// own, so that buildkitd takes no file from an earlier transfer.
		sessionID := cs.sessionID(name)
		lopts := []bkllb.LocalOption{bkllb.SessionID(sessionID), bkllb.SharedKeyHint(name + ":" + sessionID), bkllb.WithCustomName("[commit] load " + name)}
		for _, a := range at {
			if lo, ok := a.(bkllb.LocalOption); ok {
				lopts = append(lopts, lo)
			}
		}
		return &cfllb.CommitSource{Kind: cfllb.TreeChangeSet, State: bkllb.Local(name, lopts...)}, nil
	}
	st, _, err := cs.namedContext(ctx, name, p)
	if err != nil {
		return nil, err
	}
	if st == nil {
		sessionID := cs.sessionID(name)
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
	res, err := cs.c.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
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

// sessionID is the session that serves the local context name.
func (cs *contexts) sessionID(name string) string {
	bo := cs.c.BuildOpts()
	if v, ok := bo.Opts[KeyLocalSessionIDPrefix+name]; ok {
		return v
	}
	return bo.SessionID
}
