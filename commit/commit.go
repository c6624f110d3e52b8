// Package commit commits a containerd container into an image through
// BuildKit: the container's change set crosses the session, the commit
// frontend turns it into one layer on the container's image, and the result
// lands in containerd's image store (or any BuildKit output). It fills the
// role of moby's CommitImage for daemons that embed it.
package commit

import (
	"context"
	"io"
	gofs "io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/platforms"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/filesync"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	dockerclient "github.com/moby/moby/client"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Options describe one commit.
type Options struct {
	// Containerd is a client of the containerd holding the container, with
	// the container's namespace as its default namespace.
	Containerd *containerd.Client
	// Namespace is the containerd namespace (for labels and messages).
	Namespace string
	// Buildkit is a client of the buildkitd that computes the layer.
	Buildkit *bkclient.Client

	// Container is the container ID.
	Container string
	// Snapshotter, Snapshot and Base name the snapshotter, the snapshot key
	// and the base image directly, for a container without a containerd
	// record (a stopped docker container); each overrides the record.
	Snapshotter, Snapshot, Base string

	// Ref is REPOSITORY[:TAG] for the image record; empty for a dangling image.
	Ref string
	// Author and Message go into the history entry.
	Author, Message string
	// Changes are `docker commit --change` instructions.
	Changes []string
	// Pause pauses a running container while its filesystem is read.
	Pause bool
	// Layer is how the new layer is written: compression, level,
	// file times clamped to SourceDateEpoch.
	Layer exporter.Layer
	// Outputs, when set, send the image there (buildctl's --output forms)
	// instead of into containerd's image store.
	Outputs []bkclient.ExportEntry
	// Progress is the progress display mode; "quiet" shows nothing.
	Progress string
	// Docker, when set, is the Engine API of the Docker Engine holding the
	// container: Container is then a docker name, ID or unique ID prefix,
	// the image config is the one docker commit writes, and Containerd
	// must be dockerd's containerd in DockerNamespace.
	Docker *dockerclient.Client
	// DockerExport tells that Buildkit is dockerd's own BuildKit: the image
	// lands through its exporter, straight into docker's image store.
	DockerExport bool
	// SquashSince, when set, names an image in the store whose layers are
	// the first layers of the container's image: they stay, and everything
	// above them plus the container's changes becomes one layer. The
	// squashed history entries stay, marked empty_layer.
	SquashSince string
	// Squash squashes the whole filesystem into one layer.
	Squash bool
	// Provenance, when set ("mode=min" or "mode=max"), attaches BuildKit's
	// SLSA provenance attestation to the image.
	Provenance string
	// Exclude are .dockerignore-style patterns on container paths: what
	// matches is neither added nor removed by the commit.
	Exclude []string
	// SourceDateEpoch, when set, is the time of the image and its new
	// history entry (SOURCE_DATE_EPOCH).
	SourceDateEpoch *time.Time
	// Session holds what the commit's BuildKit session offers besides the
	// change set and the base image: registry credentials
	// (solve.DockerAuth), for a base pulled from a registry or a pushed
	// output.
	Session []session.Attachable
	// Warnf, when set, is told what the user should know that is not an
	// error: a wait for another commit, a container resumed for a commit
	// that did not finish.
	Warnf func(format string, args ...any)
}

// Result is what a commit made.
type Result struct {
	// ImageID is the digest of the image config, docker's image ID.
	ImageID digest.Digest
	// Manifest is the image manifest's descriptor.
	Manifest ocispecs.Descriptor
	// Name is the image record's name in containerd ("" with Outputs).
	Name string
	// ChangeSet describes what crossed the session.
	ChangeSet changeset.Manifest
	// Exported is the number of bytes the export wrote into containerd's
	// content store: new blobs only, never the base's layers.
	Exported int64
	// Fetched is the part of Exported read straight from buildkitd's
	// content store (blobs of exporter.DirectMin bytes or more) instead of
	// received through the session.
	Fetched int64
	// ExporterResponse is BuildKit's exporter response.
	ExporterResponse map[string]string
	// Paused is how long the container was paused.
	Paused time.Duration
	// Transfer is how the change set crossed the session: "tree" (the
	// entries themselves, whiteouts for removals) or "tar" (a tar BuildKit
	// extracts); "" without a change set.
	Transfer string
}

// Commit commits the container.
func Commit(ctx context.Context, opt Options) (*Result, error) {
	if opt.Containerd == nil || opt.Buildkit == nil {
		return nil, errors.New("commit needs a containerd and a buildkitd client")
	}
	if strings.TrimSpace(opt.Container) == "" {
		return nil, errors.Errorf("the container name is empty (%q): name a container by its ID, or k8s://NAMESPACE/POD[/CONTAINER]", opt.Container)
	}
	name, err := imageName(opt.Ref)
	if err != nil {
		return nil, err
	}
	if _, err := parseChanges(opt.Changes); err != nil {
		return nil, err
	}
	if err := opt.Layer.Validate(opt.Outputs); err != nil {
		return nil, err
	}
	if err := solve.CheckProgress(opt.Progress); err != nil {
		return nil, err
	}
	if err := (&changeset.Writer{}).Exclude(opt.Exclude); err != nil {
		return nil, err
	}
	if opt.Layer.RewriteTimestamp && opt.SourceDateEpoch == nil {
		return nil, errors.New("--rewrite-timestamp needs --source-date-epoch (or SOURCE_DATE_EPOCH)")
	}
	fo := &frontend.Options{Changes: opt.Changes, Author: opt.Author, Message: opt.Message}
	var tg *target
	if opt.Docker != nil {
		var cfg *dockerspec.DockerOCIImageConfig
		if tg, cfg, err = resolveDocker(ctx, opt); err != nil {
			return nil, err
		}
		// The changes are in the config already. The layer is computed
		// by the walking differ, docker commit's.
		fo.Changes, fo.ImageConfig = nil, cfg
		fo.LayerDiffer = frontend.DifferWalking
	} else if tg, err = resolve(ctx, opt); err != nil {
		return nil, err
	}
	fo.CreatedBy = tg.createdBy
	var squashRoot ocispecs.Descriptor
	switch {
	case opt.Squash && opt.SquashSince != "":
		return nil, errors.New("--squash and --squash-since exclude each other")
	case opt.Squash:
		fo.SquashSince = frontend.SquashScratch
	case opt.SquashSince != "":
		m, name, err := squashBase(ctx, opt.Containerd, opt.SquashSince, tg)
		if err != nil {
			return nil, err
		}
		squashRoot = m
		fo.SquashSince, fo.SquashSinceName = squashContext, name
	}
	if opt.Provenance != "" {
		switch opt.Provenance {
		case "mode=min", "mode=max":
		default:
			return nil, errors.Errorf("--provenance=%s: want mode=min or mode=max", opt.Provenance)
		}
		fo.Provenance = opt.Provenance
	}
	if opt.SourceDateEpoch != nil {
		fo.BuildArgs = map[string]string{"SOURCE_DATE_EPOCH": strconv.FormatInt(opt.SourceDateEpoch.Unix(), 10)}
	}
	j := &job{
		cc: opt.Containerd, ns: opt.Namespace, bk: opt.Buildkit,
		container: opt.Container, target: tg, pause: opt.Pause, name: name,
		opts:    fo,
		outputs: opt.Outputs, layer: opt.Layer, progress: opt.Progress,
		warnf: opt.Warnf, dockerExport: opt.DockerExport, session: opt.Session,
		exclude: opt.Exclude, squashRoot: squashRoot,
	}
	return j.run(ctx)
}

// The named contexts a commit gives the frontend: the container's base
// image and the --squash-since image.
const (
	baseContext   = "base"
	squashContext = "squash-base"
)

// job is one solve that lands an image: a commit or a builder step.
type job struct {
	cc        *containerd.Client
	ns        string
	bk        *bkclient.Client
	container string
	// target holds the snapshot (empty snapshot: none) and the base
	// (empty manifest digest: scratch).
	target *target
	pause  bool
	name   string
	// opts are the frontend options; run adds the contexts.
	opts *frontend.Options

	outputs      []bkclient.ExportEntry
	layer        exporter.Layer
	progress     string
	warnf        func(string, ...any)
	dockerExport bool
	session      []session.Attachable
	exclude      []string
	// squashRoot is the manifest of the --squash-since image.
	squashRoot ocispecs.Descriptor
}

func (j *job) run(ctx context.Context) (_ *Result, retErr error) {
	cc, tg := j.cc, j.target
	// What the solve leaves in BuildKit's cache that is the commit's own
	// goes when the commit ends, on every path.
	if before, err := cacheRecords(ctx, j.bk); err == nil {
		defer func() {
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := pruneCommitRecords(pctx, j.bk, before, j.dockerExport); err != nil && j.warnf != nil {
				j.warnf("removing the commit's records from BuildKit's cache: %v", err)
			}
		}()
	}
	// Everything written from here on is held by a lease until the image
	// record references it; the lease ends with the commit, on every path.
	l, err := newLanding(ctx, cc, j.ns, j.bk)
	if err != nil {
		return nil, err
	}
	defer l.release(&retErr)
	lctx, store := l.ctx, l.store
	storeID := "containerd-" + sanitizeID(j.ns)
	var roots []ocispecs.Descriptor
	if tg.manifest.Digest != "" {
		roots = append(roots, tg.manifest)
	}
	if j.squashRoot.Digest != "" {
		roots = append(roots, j.squashRoot)
	}
	// buildkitd reads the base and writes the export through the session,
	// and gets nothing more of the namespace.
	sessionStore, err := exporter.Confine(lctx, store, roots...)
	if err != nil {
		return nil, errors.Wrap(err, "the base image's blobs")
	}

	fo := j.opts.Clone()
	fo.Contexts = map[string]string{}
	if j.squashRoot.Digest != "" {
		fo.Contexts[squashContext] = "oci-layout://" + storeID + "@" + j.squashRoot.Digest.String()
	}
	fo.Platform = platforms.FormatAll(tg.platform)
	switch {
	case tg.remote != "":
		// The base's layers were discarded after unpacking: BuildKit
		// fetches them from the base's registry, by digest.
		fo.Base = baseContext
		fo.Contexts[baseContext] = "docker-image://" + tg.remote
	case tg.manifest.Digest != "":
		fo.Base = baseContext
		fo.Contexts[baseContext] = "oci-layout://" + storeID + "@" + tg.manifest.Digest.String()
	default:
		fo.Base = "scratch"
	}
	so := bkclient.SolveOpt{OCIStores: map[string]contentStore{storeID: sessionStore}, Session: j.session}
	// BuildKit's Dockerfile converter reads .dockerignore from the main
	// context whatever the build: a commit's is empty.
	dirs := filesync.StaticDirSource{dockerui.DefaultLocalNameContext: emptyContext{}}

	toStore := len(j.outputs) == 0
	var direct bool
	so.Exports, direct, err = l.exports(ctx, exportOpt{
		outputs: j.outputs, name: j.name, snapshotter: tg.snapshotter, dockerExport: j.dockerExport, sessionStore: sessionStore,
		layer:      j.layer,
		gzipLayers: fo.Provenance == "",
	})
	if err != nil {
		return nil, err
	}

	// A change set that fails as it streams stops the solve with its error.
	solveCtx, stopSolve := context.WithCancelCause(ctx)
	defer stopSolve(nil)
	res := &Result{}
	if tg.snapshot != "" {
		var csDir string
		stage := func() (string, error) {
			var err error
			csDir, err = os.MkdirTemp("", "commit-frontend-changes-")
			return csDir, err
		}
		defer func() {
			if csDir != "" {
				os.RemoveAll(csDir)
			}
		}()
		cs, err := readChanges(lctx, j, stage, layerRecords(so.Exports), func(err error) { stopSolve(err) })
		if err != nil {
			return nil, err
		}
		// The container is resumed as soon as its changes have crossed the
		// session, and on every way out at the latest.
		defer func() {
			if err := cs.release(); err != nil && retErr == nil {
				retErr = err
			}
			res.Paused = cs.paused
		}()
		res.ChangeSet = *cs.m
		csFS := cs.fs
		// The change set's name is what provenance records of it.
		local := "rootfs"
		if fo.Provenance != "" {
			local = "container-" + sanitizeID(j.ns) + "-" + sanitizeID(j.container)
		}
		dirs[local] = csFS
		fo.Commit, fo.CommitTree = local, cs.tree
		res.Transfer = "tar"
		if cs.tree {
			res.Transfer = "tree"
		}
	}
	// The session serves the directories itself, owners as they are:
	// BuildKit's client would give every entry of LocalMounts to root.
	so.Session = append(slices.Clone(so.Session), filesync.NewFSSyncProvider(dirs))
	if so.FrontendAttrs, err = fo.Attrs(); err != nil {
		return nil, err
	}

	progress := j.progress
	if progress == "" {
		progress = "quiet"
	}
	// The solve runs on ctx, not lctx: lctx carries the lease as gRPC
	// metadata, which buildkitd would take for a lease of its own.
	resp, err := solve.Run(solveCtx, j.bk, so, progress)
	if cause := context.Cause(solveCtx); cause != nil && ctx.Err() == nil {
		// Also when BuildKit took the short tar for a whole one.
		return nil, cause
	}
	if err != nil {
		if tg.remote != "" && ctx.Err() == nil {
			err = errors.Wrapf(err, "the base image's layers are not in containerd's content store (discarded after unpacking), and BuildKit fetches them from %s", tg.remote)
		}
		return nil, errors.Wrap(err, "committing through buildkitd")
	}
	res.ExporterResponse = resp.ExporterResponse
	res.ImageID = digest.Digest(resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey])
	if !toStore {
		return res, nil
	}
	if err := l.land(resp.ExporterResponse, direct, j.name, tg.snapshotter, res); err != nil {
		return nil, err
	}
	return res, nil
}

// emptyContext is an empty directory tree.
type emptyContext struct{}

func (emptyContext) Walk(context.Context, string, gofs.WalkDirFunc) error { return nil }

func (emptyContext) Open(p string) (io.ReadCloser, error) {
	return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
}

// danglingPrefix names an image committed without a repository, as docker's
// containerd image store names them.
const danglingPrefix = "moby-dangling"

type contentStore = content.Store

// parseChanges checks the changes before anything is paused or written.
func parseChanges(changes []string) ([]instructions.Command, error) {
	var out []instructions.Command
	for i, c := range changes {
		if strings.ContainsAny(c, "\n\r") {
			return nil, errors.Errorf("--change %d (%q): a change is one instruction on one line; give each as its own --change, without line continuations", i+1, c)
		}
		cmd, err := commitfile.ParseChange(c)
		if err != nil {
			return nil, errors.Wrapf(err, "--change %d (%q)", i+1, c)
		}
		out = append(out, cmd)
	}
	return out, nil
}

// layerRecords are the change set's header records: how each export
// writes the new layer. They make BuildKit's cache key for the layer
// depend on it, so that a layer cached with another compression is not
// handed out for this one.
func layerRecords(exports []bkclient.ExportEntry) map[string]string {
	return map[string]string{"layer": exporter.Record(exports)}
}
