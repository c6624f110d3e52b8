package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/commit-frontend/commit-frontend/internal/solve"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/labels"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/moby/buildkit/cache"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/snapshot"
	"github.com/moby/buildkit/solver"
	"github.com/moby/buildkit/solver/llbsolver/provenance"
	"github.com/moby/buildkit/solver/pb"
	"github.com/moby/buildkit/source"
	"github.com/moby/buildkit/util/leaseutil"
	"github.com/moby/buildkit/util/overlay"
	"github.com/moby/buildkit/worker/base"
	digest "github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Fill writes a tree into dir, a new empty directory of a snapshot on the
// worker's snapshotter (the container's filesystem, where hard links to
// the container's files can be made). Removals are whiteouts, as
// overlayfs writes them. opaqueXattr, when not empty, tells that dir is the
// upper directory of an overlay snapshot on the base, where a directory
// that replaces the base's is marked opaque with that extended attribute
// (trusted.overlay.opaque, or user.overlay.opaque on a userxattr mount).
type Fill func(ctx context.Context, dir, opaqueXattr string) error

// OfferTree offers fill as an LLB source, once: the first solve that reads
// the source's identifier gets a new snapshot written by fill, with no
// session transfer. withdraw forgets the offer.
//
// With no base the snapshot is the tree alone (scheme
// cfllb.TreeSourceScheme). With base, an image manifest in the worker's
// content store (the container's containerd), the snapshot is that
// image's filesystem with the tree written as its upper directory, one
// layer on the base's (cfllb.LayerSourceScheme): the differ then reads the
// tree as it is, with no merge of it on the base first.
func (e *Engine) OfferTree(fill Fill, base ocispecs.Descriptor) (ident string, withdraw func()) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	scheme := cfllb.TreeSourceScheme
	if base.Digest != "" {
		scheme = cfllb.LayerSourceScheme
	}
	e.trees.mu.Lock()
	e.trees.offers[id] = offer{fill: fill, base: base}
	e.trees.mu.Unlock()
	return scheme + "://" + id, func() {
		e.trees.mu.Lock()
		delete(e.trees.offers, id)
		e.trees.mu.Unlock()
	}
}

// TakeBase makes sure the engine's cache holds the image of manifest, a
// base image in containerd's store, on containerd's own snapshot of it
// (trees.adoptBase) rather than extract its layers, for a solve that reads
// the base through BuildKit's image sources (a change set that is not
// written in place on it).
func (e *Engine) TakeBase(ctx context.Context, manifest ocispecs.Descriptor) error {
	ref, err := e.trees.image(ctx, manifest)
	if err != nil {
		return errors.Wrapf(err, "the base image %s", manifest.Digest)
	}
	return ref.Release(context.WithoutCancel(ctx))
}

// trees is the source of the offered trees.
type trees struct {
	w      *base.Worker
	mu     sync.Mutex
	offers map[string]offer
}

type offer struct {
	fill Fill
	base ocispecs.Descriptor
}

func (t *trees) Schemes() []string {
	return []string{cfllb.TreeSourceScheme, cfllb.LayerSourceScheme}
}

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

func (id treeID) String() string { return cfllb.TreeSourceScheme + "://" + string(id) }
func (id treeID) Scheme() string { return cfllb.TreeSourceScheme }

// Capture records nothing: a tree is the change set of one commit, which
// provenance names by the commit's local context instead.
func (id treeID) Capture(*provenance.Capture, string) error { return nil }

type treeInstance struct {
	t  *trees
	id string
}

// CacheKey is the offer's own: no other solve has the same tree.
func (ti *treeInstance) CacheKey(context.Context, solver.JobContext, int) (string, string, solver.CacheOpts, bool, error) {
	return cfllb.TreeSourceScheme + ":" + ti.id, ti.id, nil, true, nil
}

func (ti *treeInstance) Snapshot(ctx context.Context, _ solver.JobContext) (_ cache.ImmutableRef, retErr error) {
	ti.t.mu.Lock()
	o, ok := ti.t.offers[ti.id]
	delete(ti.t.offers, ti.id)
	ti.t.mu.Unlock()
	if !ok {
		return nil, errors.Errorf("%s: no such tree offered by this process, or read already", ti.id)
	}
	var parent cache.ImmutableRef
	if o.base.Digest != "" {
		var err error
		if parent, err = ti.t.image(ctx, o.base); err != nil {
			return nil, errors.Wrapf(err, "the base image %s", o.base.Digest)
		}
		defer parent.Release(context.WithoutCancel(ctx))
	}
	m, err := ti.t.w.CacheMgr.New(ctx, parent, nil, cache.WithRecordType(bkclient.UsageRecordTypeLocalSource), cache.WithDescription(solve.InPlaceRecord))
	if err != nil {
		return nil, err
	}
	defer func() {
		if m != nil {
			_ = m.Release(context.WithoutCancel(ctx))
		}
	}()
	if parent != nil {
		err = ti.t.writeUpper(ctx, m, o.fill)
	} else {
		err = writeMounted(ctx, m, o.fill)
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

// writeMounted fills the snapshot of m through a mount of it.
func writeMounted(ctx context.Context, m cache.MutableRef, fill Fill) error {
	mnt, err := m.Mount(ctx, false, nil)
	if err != nil {
		return err
	}
	lm := snapshot.LocalMounter(mnt)
	dir, err := lm.Mount()
	if err != nil {
		return err
	}
	err = fill(ctx, dir, "")
	if uerr := lm.Unmount(); err == nil {
		err = uerr
	}
	return err
}

// writeUpper fills the upper directory of m, an overlay snapshot on its
// parent (made by the cache manager, which extracted the parent first):
// the tree's whiteouts are then overlayfs's own. The mounts are the
// snapshotter's own; a new ref's snapshot has the ref's ID. The differ
// checks later that the snapshot is one layer on the parent's.
func (t *trees) writeUpper(ctx context.Context, m cache.MutableRef, fill Fill) error {
	upper, err := t.w.Snapshotter.Mounts(ctx, m.ID())
	if err != nil {
		return err
	}
	upperMounts, releaseUpper, err := upper.Mount()
	if err != nil {
		return err
	}
	defer releaseUpper()
	var dir string
	if len(upperMounts) == 1 && overlay.IsOverlayMountType(upperMounts[0]) {
		for _, o := range upperMounts[0].Options {
			if d, ok := strings.CutPrefix(o, "upperdir="); ok {
				dir = d
			}
		}
	}
	if dir == "" {
		return errors.Errorf("the change set's snapshot is not an overlay on its base: %v", upperMounts)
	}
	// overlayfs reads the marks of a userxattr mount (rootless) in the
	// user namespace, the others in the trusted one.
	opaque := "trusted.overlay.opaque"
	for _, m := range upperMounts {
		if slices.Contains(m.Options, "userxattr") {
			opaque = "user.overlay.opaque"
		}
	}
	return fill(ctx, dir, opaque)
}

// image is the worker's cache record of the image of manifest: its
// layers as BuildKit's image sources record them (by blob and diff ID),
// so that it is the record of the same image loaded by the solve.
func (t *trees) image(ctx context.Context, manifest ocispecs.Descriptor) (cache.ImmutableRef, error) {
	cs := t.w.ContentStore()
	mf, err := images.Manifest(ctx, cs, manifest, platforms.All)
	if err != nil {
		return nil, err
	}
	diffIDs, err := images.RootFS(ctx, cs, mf.Config)
	if err != nil {
		return nil, err
	}
	if len(diffIDs) != len(mf.Layers) {
		return nil, errors.Errorf("%d layers and %d diff IDs", len(mf.Layers), len(diffIDs))
	}
	layers := make([]ocispecs.Descriptor, len(mf.Layers))
	for i, l := range mf.Layers {
		l.Annotations = maps.Clone(l.Annotations)
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[labels.LabelUncompressed] = diffIDs[i].String()
		layers[i] = l
	}
	ref, err := t.w.FromRemote(ctx, &solver.Remote{Descriptors: layers, Provider: cs})
	if err != nil || len(diffIDs) == 0 {
		return ref, err
	}
	if err := t.adoptBase(ctx, identity.ChainID(diffIDs)); err != nil {
		ref.Release(context.WithoutCancel(ctx))
		return nil, errors.Wrap(err, "taking containerd's snapshot of the base")
	}
	return ref, nil
}

// adoptBase makes the snapshot in which BuildKit's cache keeps the layers
// of chain (snapshot.LayerSnapshotID), when it has none, from
// containerd's own snapshot of the same chain: the base as containerd
// unpacked it, the one the container stands on, as docker commit and
// nerdctl commit take it. The new snapshot holds nothing of its own on
// top of containerd's. BuildKit's cache then finds the base extracted; it
// would otherwise extract the base's layers from their blobs into
// snapshots of its own, a second copy of the whole base on disk (16 s for
// 2 GB). The cache record of the base (FromRemote) leases the snapshot by
// that name. Without a committed snapshot of containerd's by the chain's
// name (the base is not unpacked) BuildKit extracts the base itself.
func (t *trees) adoptBase(ctx context.Context, chain digest.Digest) error {
	sn := t.w.Snapshotter
	name := snapshot.LayerSnapshotID(chain)
	if _, err := sn.Stat(ctx, name); !cerrdefs.IsNotFound(err) {
		return err
	}
	if info, err := sn.Stat(ctx, chain.String()); err != nil || info.Kind != snapshots.KindCommitted {
		if err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	ctx, done, err := leaseutil.WithLease(ctx, t.w.LeaseManager(), leaseutil.MakeTemporary)
	if err != nil {
		return err
	}
	defer done(context.WithoutCancel(ctx))
	var b [8]byte
	_, _ = rand.Read(b[:])
	key := "commit-frontend-base-" + hex.EncodeToString(b[:]) + " " + chain.String()
	if err := sn.Prepare(ctx, key, chain.String()); err != nil {
		return err
	}
	if err := sn.Commit(ctx, name, key); err != nil {
		_ = sn.Remove(context.WithoutCancel(ctx), key)
		if cerrdefs.IsAlreadyExists(err) {
			// Another process's extraction, made meanwhile.
			return nil
		}
		return err
	}
	return nil
}
