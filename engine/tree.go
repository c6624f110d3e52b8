package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"

	"github.com/moby/buildkit/cache"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/snapshot"
	"github.com/moby/buildkit/solver"
	"github.com/moby/buildkit/solver/llbsolver/provenance"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/source"
	"github.com/pkg/errors"
)

// TreeScheme is the scheme of the LLB sources that are trees written by
// this process (OfferTree): "commit-frontend-tree://ID". Only the engine
// in the process that offered a tree knows it.
const TreeScheme = "commit-frontend-tree"

// Fill writes a tree into dir, a new empty directory of a snapshot on the
// worker's snapshotter (the container's filesystem, where hard links to
// the container's files can be made).
type Fill func(ctx context.Context, dir string) error

// OfferTree offers fill as an LLB source, once: the first solve that reads
// the source's identifier gets a new snapshot written by fill, with no
// session transfer. withdraw forgets the offer.
func (e *Engine) OfferTree(fill Fill) (ident string, withdraw func()) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	e.trees.mu.Lock()
	e.trees.fills[id] = fill
	e.trees.mu.Unlock()
	return TreeScheme + "://" + id, func() {
		e.trees.mu.Lock()
		delete(e.trees.fills, id)
		e.trees.mu.Unlock()
	}
}

// trees is the source of the offered trees.
type trees struct {
	cm    cache.Manager
	mu    sync.Mutex
	fills map[string]Fill
}

func (t *trees) Schemes() []string { return []string{TreeScheme} }

func (t *trees) Identifier(scheme, ref string, _ map[string]string, _ *pb.Platform) (source.Identifier, error) {
	return treeID(ref), nil
}

func (t *trees) Resolve(_ context.Context, id source.Identifier, _ *session.Manager, _ solver.Vertex) (source.SourceInstance, error) {
	tid, ok := id.(treeID)
	if !ok {
		return nil, errors.Errorf("not a tree of this process: %v", id)
	}
	return &treeInstance{t: t, id: string(tid)}, nil
}

type treeID string

func (id treeID) String() string { return TreeScheme + "://" + string(id) }
func (id treeID) Scheme() string { return TreeScheme }

// Capture records nothing: a tree is the change set of one commit, which
// provenance names by the commit's local context instead.
func (id treeID) Capture(*provenance.Capture, string) error { return nil }

type treeInstance struct {
	t  *trees
	id string
}

// CacheKey is the offer's own: no other solve has the same tree.
func (ti *treeInstance) CacheKey(context.Context, solver.JobContext, int) (string, string, solver.CacheOpts, bool, error) {
	return TreeScheme + ":" + ti.id, ti.id, nil, true, nil
}

func (ti *treeInstance) Snapshot(ctx context.Context, _ solver.JobContext) (_ cache.ImmutableRef, retErr error) {
	ti.t.mu.Lock()
	fill := ti.t.fills[ti.id]
	delete(ti.t.fills, ti.id)
	ti.t.mu.Unlock()
	if fill == nil {
		return nil, errors.Errorf("%s://%s: no such tree offered by this process, or read already", TreeScheme, ti.id)
	}
	m, err := ti.t.cm.New(ctx, nil, nil, cache.WithRecordType(bkclient.UsageRecordTypeLocalSource), cache.WithDescription("[commit] change set written in place"))
	if err != nil {
		return nil, err
	}
	defer func() {
		if m != nil {
			_ = m.Release(context.WithoutCancel(ctx))
		}
	}()
	mnt, err := m.Mount(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	lm := snapshot.LocalMounter(mnt)
	dir, err := lm.Mount()
	if err != nil {
		return nil, err
	}
	err = fill(ctx, dir)
	if uerr := lm.Unmount(); err == nil {
		err = uerr
	}
	if err != nil {
		return nil, err
	}
	ref, err := m.Commit(ctx)
	if err != nil {
		return nil, err
	}
	m = nil
	return ref, nil
}
