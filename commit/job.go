package commit

import (
	"context"
	"fmt"
	"io"
	gofs "io/fs"
	"os"
	"slices"
	"time"

	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/session/filesync"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// The named contexts a commit gives the frontend: the container's base
// image and the --squash-since image.
const (
	baseContext   = "base"
	squashContext = "squash-base"
)

// job is one solve that lands an image: a commit or a builder step.
type job struct {
	*Client
	container string
	// target holds the snapshot (empty snapshot: none) and the base
	// (empty manifest digest: scratch).
	target *container.Target
	pause  bool
	name   string
	// opts are the frontend options; run adds the contexts.
	opts *frontend.Options

	outputs []bkclient.ExportEntry
	layer   exporter.Layer
	exclude []string
	// squashRoot is the manifest of the --squash-since image; with
	// squashKeep above 0, run makes it: the base's first squashKeep
	// layers (--max-layers).
	squashRoot ocispecs.Descriptor
	squashKeep int
	// brief reads a running container's changes before pausing it, and
	// in the pause only what changed since (Options.PauseBrief).
	brief bool
	// maxLayerSize, above 0, splits the change set into layers of at most
	// that many bytes of contents each.
	maxLayerSize int64
	// volumes are the mounts whose data the change set includes.
	volumes []container.Mount
	// secretScan is Options.SecretScan; "" (a builder step) scans nothing.
	secretScan string
}

// baseInput returns the base image as the frontend input baseContext, an
// OCI layout in the session's store storeID as the frontend would load it,
// and names it in fo with its config.
func (j *job) baseInput(ctx context.Context, fo *frontend.Options, storeID string) (map[string]llb.State, error) {
	cs := j.Containerd.ContentStore()
	desc, err := images.Config(ctx, cs, j.target.Manifest, platforms.All)
	if err != nil {
		return nil, err
	}
	config, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		return nil, err
	}
	name, err := reference.ParseNormalizedNamed(baseContext)
	if err != nil {
		return nil, err
	}
	named, err := reference.WithDigest(name, j.target.Manifest.Digest)
	if err != nil {
		return nil, err
	}
	value, key, metadata, err := frontend.InputContext(baseContext, config)
	if err != nil {
		return nil, err
	}
	fo.Contexts[baseContext] = value
	if fo.Extra == nil {
		fo.Extra = map[string]string{}
	}
	fo.Extra[key] = metadata
	st := llb.OCILayout(named.String(), llb.OCIStore("", storeID), llb.Platform(j.target.Platform), llb.WithCustomName("[context base] OCI load from client"))
	return map[string]llb.State{baseContext: st}, nil
}

// run reads the change set, solves and lands, in that order; what each
// stage holds (the landing's lease, the container's pause and lock, the
// commit's records in BuildKit's cache) ends on every way out.
func (j *job) run(ctx context.Context) (_ *Result, retErr error) {
	tg := j.target
	// What the solve leaves in BuildKit's cache that is the commit's own
	// goes when the commit ends, on every path (pruneOwn is set before
	// the solve).
	var pruneOwn func(context.Context) error
	defer func() {
		if pruneOwn == nil {
			return
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := pruneOwn(pctx); err != nil {
			j.warnf("removing the commit's records from BuildKit's cache: %v", err)
		}
	}()
	// Everything written from here on is held by a lease until the image
	// record references it; the lease ends with the commit, on every path.
	l, err := exporter.Begin(ctx, j.Containerd, j.Namespace, j.Buildkit)
	if err != nil {
		return nil, err
	}
	defer l.End(&retErr)
	storeID := "containerd-" + container.Sanitize(j.Namespace)
	if j.squashKeep > 0 {
		if j.squashRoot, err = container.LayerPrefix(l.Context(), j.Containerd.ContentStore(), tg.Manifest, j.squashKeep); err != nil {
			return nil, errors.Wrap(err, "--max-layers")
		}
	}
	var roots []ocispecs.Descriptor
	if tg.Manifest.Digest != "" {
		roots = append(roots, tg.Manifest)
	}
	if j.squashRoot.Digest != "" {
		roots = append(roots, j.squashRoot)
	}
	// buildkitd reads the base and writes the export through the session,
	// and gets nothing more of the namespace.
	sessionStore, err := l.SessionStore(roots...)
	if err != nil {
		return nil, errors.Wrap(err, "the base image's blobs")
	}

	fo := j.opts.Clone()
	fo.Contexts = map[string]string{}
	if j.squashRoot.Digest != "" {
		fo.Contexts[squashContext] = frontend.OCILayoutContext(storeID, j.squashRoot.Digest)
	}
	fo.Platform = platforms.FormatAll(tg.Platform)
	var inputs map[string]llb.State
	switch {
	case tg.Remote != "":
		// The base's layers were discarded after unpacking: BuildKit
		// fetches them from the base's registry, by digest.
		fo.Base = baseContext
		fo.Contexts[baseContext] = frontend.ImageContext(tg.Remote)
	case tg.Manifest.Digest != "" && j.BuildkitInProcess && !fo.Attested():
		// The engine in this process reads the base's layers from
		// containerd itself: the frontend is given the base's config too,
		// rather than resolve it through the session (a sixth of a small
		// commit's solve). Provenance names a base BuildKit resolved.
		fo.Base = baseContext
		if inputs, err = j.baseInput(ctx, fo, storeID); err != nil {
			return nil, errors.Wrap(err, "the base image's config")
		}
	case tg.Manifest.Digest != "":
		fo.Base = baseContext
		fo.Contexts[baseContext] = frontend.OCILayoutContext(storeID, tg.Manifest.Digest)
	default:
		fo.Base = frontend.Scratch
	}
	so := bkclient.SolveOpt{OCIStores: map[string]content.Store{storeID: sessionStore}, Session: j.Session, FrontendInputs: inputs}
	// BuildKit's Dockerfile converter reads .dockerignore from the main
	// context whatever the build: a commit's is empty.
	dirs := filesync.StaticDirSource{dockerui.DefaultLocalNameContext: emptyContext{}}

	toStore := len(j.outputs) == 0
	eo := exporter.ExportOpt{
		Outputs: j.outputs, Name: j.name, Snapshotter: tg.Snapshotter, Docker: j.BuildkitIsDocker, SessionStore: sessionStore,
		Layer:       j.layer,
		OneManifest: fo.Provenance == "",
		GzipFirst:   j.BuildkitInProcess,
	}
	// The exports ask BuildKit about its worker: an engine still
	// starting must serve first (and the container is read after).
	if j.BuildkitReady != nil {
		if err := j.BuildkitReady(); err != nil {
			return nil, err
		}
	}
	if so.Exports, err = l.Exports(ctx, eo); err != nil {
		return nil, err
	}

	// A change set that fails as it streams stops the solve with its error.
	solveCtx, stopSolve := context.WithCancelCause(ctx)
	defer stopSolve(nil)
	res := &Result{}
	// linked is a change set whose files are the container's inodes.
	var linked *changes
	// onBase is a change set written in place on the base.
	onBase := false
	if tg.Snapshot != "" {
		cs, err := j.readChanges(l.Context(), exporter.Record(so.Exports), func(err error) { stopSolve(err) })
		if err != nil {
			return nil, err
		}
		// The container is resumed as soon as its changes have crossed the
		// session, and on every way out at the latest; a staged copy goes
		// with the commit.
		defer cs.remove()
		defer func() {
			if err := cs.release(); err != nil && retErr == nil {
				retErr = err
			}
			res.Paused = cs.paused
		}()
		res.ChangeSet = *cs.m
		res.Secrets = cs.secrets
		// The change set's name is what provenance records of it.
		local := "rootfs"
		if fo.Provenance != "" {
			local = "container-" + container.Sanitize(j.Namespace) + "-" + container.Sanitize(j.container)
		}
		fo.Commit, fo.CommitTree = local, cs.tree
		if cs.sources != nil {
			// Written in place by the engine: nothing crosses.
			fo.CommitSources = cs.sources
			for i := range cs.sources[1:] {
				fo.CommitParts = append(fo.CommitParts, fmt.Sprintf("%s-part-%d", local, i+2))
			}
			// Linked to the container's files, or copied from a staged
			// change set (a container that went on running).
			res.Transfer = "link"
			if !cs.linked {
				res.Transfer = "staged"
			}
			onBase = cs.onBase
		} else {
			dirs[local] = cs.fs
			for i, part := range cs.parts {
				name := fmt.Sprintf("%s-part-%d", local, i+2)
				dirs[name] = part
				fo.CommitParts = append(fo.CommitParts, name)
			}
			res.Transfer = "tar"
			if cs.tree {
				res.Transfer = "tree"
			}
		}
		if cs.linked {
			linked = cs
		}
		if cs.sources != nil && eo.GzipFirst && cs.m.Bytes < gzipFirstMin {
			// A small layer is gzipped by BuildKit's exporter as it
			// writes the image in place: the copy that gzips on the way
			// costs more than it saves. (The exports' record in the
			// change set's header is for a transfer: none here.)
			eo.GzipFirst = false
			if so.Exports, err = l.Exports(ctx, eo); err != nil {
				return nil, err
			}
		}
	}
	if base := j.baseInPlace(); j.Trees != nil && tg.Snapshot != "" && !onBase && base.Digest != "" {
		// The change set goes through BuildKit's image sources and ops on
		// the base: the engine takes containerd's snapshot of the base
		// first, where BuildKit would extract its layers.
		if err := j.Trees.TakeBase(ctx, base); err != nil {
			return nil, err
		}
	}
	if onBase {
		// The one record the solve makes is the change set written in
		// place, on the base: the engine's, whose state no other process
		// uses meanwhile.
		pruneOwn = func(ctx context.Context) error { return solve.PruneWrittenInPlace(ctx, j.Buildkit) }
	} else if before, err := solve.CacheRecords(ctx, j.Buildkit); err == nil {
		pruneOwn = func(ctx context.Context) error {
			return solve.PruneCommitRecords(ctx, j.Buildkit, before, j.BuildkitIsDocker)
		}
	}
	// The session serves the directories itself, owners as they are:
	// BuildKit's client would give every entry of LocalMounts to root.
	so.Session = append(slices.Clone(so.Session), filesync.NewFSSyncProvider(dirs))
	if so.FrontendAttrs, err = fo.Attrs(); err != nil {
		return nil, err
	}

	progress := j.Progress
	if progress == "" {
		progress = "quiet"
	}
	// The solve runs on ctx, not the landing's context: that carries the
	// lease as gRPC metadata, which buildkitd would take for a lease of
	// its own.
	var watch func(*bkclient.SolveStatus)
	if linked != nil && len(so.Exports) == 1 {
		// Once the export has computed its layers, the differ has read
		// the links: the container goes on while the image is written
		// and unpacked.
		watch = func(s *bkclient.SolveStatus) {
			for _, st := range s.Statuses {
				if st.ID == solve.ExportedLayers && st.Completed != nil {
					_ = linked.release()
				}
			}
		}
	}
	resp, err := solve.RunWatching(solveCtx, j.Buildkit, so, progress, watch)
	if linked != nil {
		// The layer has been read from the links: the container goes on
		// (the error, if any, is the deferred release's).
		_ = linked.release()
	}
	if cause := context.Cause(solveCtx); cause != nil && ctx.Err() == nil {
		// Also when BuildKit took the short tar for a whole one.
		return nil, cause
	}
	if err != nil {
		if tg.Remote != "" && ctx.Err() == nil {
			err = errors.Wrapf(err, "the base image's layers are not in containerd's content store (discarded after unpacking), and BuildKit fetches them from %s", tg.Remote)
		}
		return nil, errors.Wrap(err, "committing through buildkitd")
	}
	res.ExporterResponse = resp.ExporterResponse
	res.ImageID = digest.Digest(resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey])
	if !toStore {
		return res, nil
	}
	landed, err := l.Land(resp.ExporterResponse, []string{j.name}, tg.Snapshotter)
	if err != nil {
		return nil, err
	}
	res.land(landed)
	return res, nil
}

// gzipFirstMin is the size of a change set's file contents from which the
// engine's gzip layer is compressed on its way into containerd (pgzip, on
// every core) rather than by BuildKit's exporter as it writes the image in
// place (the standard library's, on one core): the copy costs about 60 ms
// of its own, and 10,000 files of 512 bytes (5 MB, a 10 MB tar) committed
// as fast either way (0.67-0.76 s against 0.72-0.73 s).
const gzipFirstMin = 8 << 20

// emptyContext is an empty directory tree.
type emptyContext struct{}

func (emptyContext) Walk(context.Context, string, gofs.WalkDirFunc) error { return nil }

func (emptyContext) Open(p string) (io.ReadCloser, error) {
	return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
}
