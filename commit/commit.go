// Package commit commits a containerd container into an image through
// BuildKit: the container's change set crosses the session, the commit
// frontend turns it into one layer on the container's image, and the result
// lands in containerd's image store (or any BuildKit output). It fills the
// role of moby's CommitImage for daemons that embed it.
package commit

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/worker/label"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil"
	"golang.org/x/sys/unix"
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
	// Compression and CompressionLevel select the new layer's compression.
	Compression      string
	CompressionLevel int
	// Outputs, when set, send the image there (buildctl's --output forms)
	// instead of into containerd's image store.
	Outputs []bkclient.ExportEntry
	// Progress is the progress display mode; "quiet" shows nothing.
	Progress string
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
}

// target is what the commit reads from containerd.
type target struct {
	snapshotter string
	snapshot    string
	image       images.Image
	manifest    ocispecs.Descriptor
	platform    ocispecs.Platform
	createdBy   string
	task        containerd.Task
}

// Commit commits the container.
func Commit(ctx context.Context, opt Options) (*Result, error) {
	if opt.Containerd == nil || opt.Buildkit == nil {
		return nil, errors.New("commit needs a containerd and a buildkitd client")
	}
	name, err := imageName(opt.Ref)
	if err != nil {
		return nil, err
	}
	if _, err := parseChanges(opt.Changes); err != nil {
		return nil, err
	}
	tg, err := resolve(ctx, opt)
	if err != nil {
		return nil, err
	}
	j := &job{
		cc: opt.Containerd, ns: opt.Namespace, bk: opt.Buildkit,
		container: opt.Container, target: tg, pause: opt.Pause, name: name,
		attrs: map[string]string{
			"change":     strings.Join(opt.Changes, "\n"),
			"author":     opt.Author,
			"message":    opt.Message,
			"created-by": tg.createdBy,
		},
		outputs: opt.Outputs, compression: opt.Compression, compressionLevel: opt.CompressionLevel, progress: opt.Progress,
	}
	return j.run(ctx)
}

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
	attrs  map[string]string

	outputs          []bkclient.ExportEntry
	compression      string
	compressionLevel int
	progress         string
}

func (j *job) run(ctx context.Context) (_ *Result, retErr error) {
	cc, tg := j.cc, j.target
	// Everything written from here on is held by a lease until the image
	// record references it; the lease ends with the commit, on every path.
	lctx, doneLease, err := cc.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour))
	if err != nil {
		return nil, errors.Wrap(err, "creating a containerd lease")
	}
	defer func() {
		// Retry for a while: containerd may be restarting.
		var err error
		for i := 0; i < 10; i++ {
			if err = doneLease(context.WithoutCancel(lctx)); err == nil || errdefs.IsNotFound(err) {
				return
			}
			time.Sleep(time.Second)
		}
		if retErr == nil {
			retErr = errors.Wrap(err, "releasing the containerd lease")
		}
	}()
	leaseID, _ := leases.FromContext(lctx)
	store := exporter.LeasedStore(cc.ContentStore(), j.ns, leaseID, exporter.BuildkitContent(j.bk))
	storeID := "containerd-" + sanitizeID(j.ns)

	attrs := maps.Clone(j.attrs)
	so := bkclient.SolveOpt{FrontendAttrs: attrs, OCIStores: map[string]contentStore{storeID: store}}
	attrs["platform"] = platforms.FormatAll(tg.platform)
	if tg.manifest.Digest != "" {
		attrs["base"] = "base"
		attrs["context:base"] = "oci-layout://" + storeID + "@" + tg.manifest.Digest.String()
	} else {
		attrs["base"] = "scratch"
	}
	res := &Result{}
	if tg.snapshot != "" {
		csDir, err := os.MkdirTemp("", "commit-frontend-changes-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(csDir)
		cs, err := readChanges(lctx, j, csDir)
		if err != nil {
			return nil, err
		}
		res.ChangeSet = *cs
		csFS, err := fsutil.NewFS(csDir)
		if err != nil {
			return nil, err
		}
		so.LocalMounts = map[string]fsutil.FS{"rootfs": csFS}
		attrs["commit"] = "rootfs"
	}

	so.Exports = j.outputs
	toStore := len(so.Exports) == 0
	// When buildkitd's containerd worker works in this very containerd
	// and namespace, BuildKit's own image exporter writes the image where
	// it belongs: no blob crosses the session and the new layer is already
	// a snapshot there. Otherwise the OCI export streams the new blobs
	// into containerd's content store through the session.
	direct := false
	if toStore {
		direct, err = sharesContainerd(ctx, cc, j.bk, j.ns, tg.snapshotter)
		if err != nil {
			return nil, err
		}
	}
	switch {
	case direct:
		attrs := map[string]string{
			string(exptypes.OptKeyUnpack): "true", string(exptypes.OptKeyOCITypes): "true",
		}
		if j.name != "" {
			attrs[string(exptypes.OptKeyName)] = j.name
		} else {
			attrs[string(exptypes.OptKeyDanglingPrefix)] = danglingPrefix
		}
		so.Exports = []bkclient.ExportEntry{{Type: bkclient.ExporterImage, Attrs: attrs}}
	case toStore:
		so.Exports = []bkclient.ExportEntry{{
			Type:        bkclient.ExporterOCI,
			Attrs:       map[string]string{"tar": "false", "oci-mediatypes": "true"},
			OutputStore: store,
		}}
	}
	for _, e := range so.Exports {
		if e.Attrs == nil {
			continue
		}
		if _, ok := e.Attrs["compression"]; !ok && j.compression != "" {
			e.Attrs["compression"] = j.compression
		}
		if _, ok := e.Attrs["compression-level"]; !ok && j.compressionLevel != 0 {
			e.Attrs["compression-level"] = strconv.Itoa(j.compressionLevel)
		}
	}
	progress := j.progress
	if progress == "" {
		progress = "quiet"
	}
	// The solve runs on ctx, not lctx: lctx carries the lease as gRPC
	// metadata, which buildkitd would take for a lease of its own.
	resp, err := solve.Run(ctx, j.bk, so, progress)
	if err != nil {
		return nil, errors.Wrap(err, "committing through buildkitd")
	}
	res.ExporterResponse = resp.ExporterResponse
	res.ImageID = digest.Digest(resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey])
	if !toStore {
		return res, nil
	}
	desc, err := exporter.ManifestDescriptor(lctx, store, resp.ExporterResponse)
	if err != nil {
		return nil, err
	}
	res.Manifest = desc
	res.Exported, res.Fetched = store.Written(), store.Fetched()
	if direct {
		// BuildKit wrote the record, labels and snapshots itself.
		res.Name = resp.ExporterResponse[exptypes.ExporterImageNameKey]
		if _, err := cc.ImageService().Get(lctx, res.Name); err != nil {
			return nil, errors.Wrapf(err, "the image buildkitd's containerd worker wrote (%q)", res.Name)
		}
		return res, nil
	}
	name := j.name
	if name == "" {
		name = danglingPrefix + "@" + desc.Digest.String()
	}
	if err := exporter.Store(lctx, cc, exporter.StoreOpt{
		Name:        name,
		Manifest:    desc,
		Snapshotter: tg.snapshotter,
		Store:       store,
	}); err != nil {
		return nil, err
	}
	res.Name = name
	return res, nil
}

// danglingPrefix names an image committed without a repository, as docker's
// containerd image store names them.
const danglingPrefix = "moby-dangling"

// sharesContainerd tells whether buildkitd's default worker is a containerd
// worker on the containerd cc talks to, in namespace ns, with the
// snapshotter the container uses.
func sharesContainerd(ctx context.Context, cc *containerd.Client, bk *bkclient.Client, ns, snapshotter string) (bool, error) {
	ws, err := bk.ListWorkers(ctx)
	if err != nil {
		return false, errors.Wrap(err, "listing buildkitd's workers")
	}
	if len(ws) == 0 {
		return false, errors.New("buildkitd has no workers")
	}
	l := ws[0].Labels
	if l[label.Executor] != "containerd" || l[label.ContainerdNamespace] != ns || l[label.Snapshotter] != snapshotter {
		return false, nil
	}
	srv, err := cc.Server(ctx)
	if err != nil {
		return false, errors.Wrap(err, "asking containerd for its UUID")
	}
	return srv.UUID != "" && l[label.ContainerdUUID] == srv.UUID, nil
}

// resolve reads the container record (or the overrides) and its image.
func resolve(ctx context.Context, opt Options) (*target, error) {
	cc := opt.Containerd
	tg := &target{snapshotter: opt.Snapshotter, snapshot: opt.Snapshot}
	imageRef := opt.Base
	c, err := cc.LoadContainer(ctx, opt.Container)
	switch {
	case err == nil:
		info, err := c.Info(ctx)
		if err != nil {
			return nil, errors.Wrapf(err, "container %s", opt.Container)
		}
		if tg.snapshotter == "" {
			tg.snapshotter = info.Snapshotter
		}
		if tg.snapshot == "" {
			tg.snapshot = info.SnapshotKey
		}
		if imageRef == "" {
			imageRef = info.Image
		}
		if spec, err := c.Spec(ctx); err == nil && spec.Process != nil {
			tg.createdBy = strings.Join(spec.Process.Args, " ")
		}
		if t, err := c.Task(ctx, nil); err == nil {
			tg.task = t
		} else if !errdefs.IsNotFound(err) {
			return nil, errors.Wrapf(err, "container %s: task", opt.Container)
		}
	case errdefs.IsNotFound(err):
		if opt.Snapshot == "" || opt.Base == "" {
			return nil, errors.Errorf("no such container: %s (namespace %s); for a container without a containerd record give --snapshot and --base", opt.Container, opt.Namespace)
		}
	default:
		return nil, errors.Wrapf(err, "loading container %s", opt.Container)
	}
	if tg.snapshotter == "" {
		tg.snapshotter = "overlayfs"
	}
	if tg.snapshot == "" {
		return nil, errors.Errorf("container %s has no snapshot", opt.Container)
	}
	if imageRef == "" {
		return nil, errors.Errorf("container %s has no image: give the base image with --base", opt.Container)
	}
	img, err := cc.ImageService().Get(ctx, imageRef)
	if err != nil {
		return nil, errors.Wrapf(err, "image %s of container %s", imageRef, opt.Container)
	}
	tg.image = img
	m, p, err := platformManifest(ctx, cc, img.Target)
	if err != nil {
		return nil, errors.Wrapf(err, "image %s", imageRef)
	}
	tg.manifest, tg.platform = m, p
	if _, err := cc.SnapshotService(tg.snapshotter).Stat(ctx, tg.snapshot); err != nil {
		return nil, errors.Wrapf(err, "snapshot %s in snapshotter %s", tg.snapshot, tg.snapshotter)
	}
	return tg, nil
}

// readChanges pauses the container when asked, and writes its change set
// into dir.
func readChanges(ctx context.Context, j *job, dir string) (_ *changeset.Manifest, retErr error) {
	tg := j.target
	if j.pause && tg.task != nil {
		// Commits of the same container, from any process, take turns
		// pausing it: one must not resume it while another still reads.
		unlock, err := lockContainer(ctx, j.ns, tg.snapshotter, tg.snapshot)
		if err != nil {
			return nil, err
		}
		defer unlock()
		st, err := tg.task.Status(ctx)
		if err != nil {
			return nil, errors.Wrapf(err, "container %s: task status", j.container)
		}
		if st.Status == containerd.Running {
			if err := tg.task.Pause(ctx); err != nil {
				return nil, errors.Wrapf(err, "pausing container %s", j.container)
			}
			defer func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				if err := tg.task.Resume(rctx); err != nil && retErr == nil {
					retErr = errors.Wrapf(err, "resuming container %s", j.container)
				}
			}()
		}
	}
	sn := j.cc.SnapshotService(tg.snapshotter)
	mounts, err := sn.Mounts(ctx, tg.snapshot)
	if err != nil {
		return nil, errors.Wrapf(err, "mounts of snapshot %s", tg.snapshot)
	}
	w, err := changeset.Create(dir)
	if err != nil {
		return nil, err
	}
	if upper, ok := upperdir(mounts); ok {
		_ = changeset.Sync(upper)
		err = changeset.FromUpperdir(ctx, upper, w)
	} else {
		err = walkingDiff(ctx, sn, tg.snapshot, mounts, w)
	}
	if err != nil {
		w.Abort()
		return nil, errors.Wrapf(err, "reading the changes of %s", j.container)
	}
	m, err := w.Close()
	if err != nil || m.Whiteouts == 0 {
		return m, err
	}
	return m, checkPatterns(ctx, dir, mounts, j.container)
}

// checkPatterns refuses a change set whose removals of paths that are not
// UTF-8 would also remove files the container kept (changeset.CheckPatterns),
// looking at the container's filesystem through a read-only mount.
func checkPatterns(ctx context.Context, dir string, mounts []mount.Mount, container string) error {
	dt, err := os.ReadFile(filepath.Join(dir, changeset.WhiteoutFile))
	if err != nil {
		return err
	}
	deleted, opaque, err := changeset.ParseWhiteouts(dt)
	if err != nil {
		return err
	}
	removed := slices.Concat(deleted, opaque)
	if !slices.ContainsFunc(removed, func(p string) bool { return !utf8.ValidString(p) }) {
		return nil
	}
	var bad error
	if err := mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		bad = changeset.CheckPatterns(root, removed)
		return nil
	}); err != nil {
		return errors.Wrapf(err, "mounting container %s to check its removals", container)
	}
	return errors.Wrapf(bad, "container %s", container)
}

// upperdir returns the upper directory of an overlay mount.
func upperdir(mounts []mount.Mount) (string, bool) {
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		return "", false
	}
	for _, o := range mounts[0].Options {
		if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			return v, true
		}
	}
	return "", false
}

// walkingDiff mounts the snapshot and a view of its parent read-only and
// diffs them.
func walkingDiff(ctx context.Context, sn snapshots.Snapshotter, key string, mounts []mount.Mount, w *changeset.Writer) error {
	info, err := sn.Stat(ctx, key)
	if err != nil {
		return err
	}
	var lowerMounts []mount.Mount
	if info.Parent != "" {
		viewKey := "commit-frontend-view-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		lowerMounts, err = sn.View(ctx, viewKey, info.Parent)
		if err != nil {
			return errors.Wrap(err, "viewing the parent snapshot")
		}
		defer func() { _ = sn.Remove(context.WithoutCancel(ctx), viewKey) }()
	}
	return mount.WithReadonlyTempMount(ctx, mounts, func(upper string) error {
		if lowerMounts == nil {
			empty, err := os.MkdirTemp("", "commit-frontend-empty-")
			if err != nil {
				return err
			}
			defer os.Remove(empty)
			return changeset.FromDiff(ctx, empty, upper, w)
		}
		return mount.WithReadonlyTempMount(ctx, lowerMounts, func(lower string) error {
			return changeset.FromDiff(ctx, lower, upper, w)
		})
	})
}

// imageName normalises REPOSITORY[:TAG] as docker and nerdctl store it.
func imageName(ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", errors.Wrapf(err, "invalid reference %q", ref)
	}
	if _, ok := named.(reference.Digested); ok {
		return "", errors.Errorf("invalid reference %q: a commit cannot be named by digest", ref)
	}
	return reference.TagNameOnly(named).String(), nil
}

func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

type contentStore = content.Store

// parseChanges checks the changes before anything is paused or written.
func parseChanges(changes []string) ([]instructions.Command, error) {
	var out []instructions.Command
	for i, c := range changes {
		cmd, err := commitfile.ParseChange(c)
		if err != nil {
			return nil, errors.Wrapf(err, "--change %d (%q)", i+1, c)
		}
		out = append(out, cmd)
	}
	return out, nil
}

// platformManifest picks the manifest of target for this machine's platform.
func platformManifest(ctx context.Context, cc *containerd.Client, target ocispecs.Descriptor) (ocispecs.Descriptor, ocispecs.Platform, error) {
	return exporter.PlatformManifest(ctx, cc.ContentStore(), target, platforms.Default())
}

// lockContainer takes an exclusive lock for one container's snapshot, shared
// by every commit-frontend process on the machine.
func lockContainer(ctx context.Context, ns, snapshotter, snapshot string) (func(), error) {
	dir := filepath.Join(os.TempDir(), "commit-frontend-locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	name := sanitizeID(ns) + "_" + sanitizeID(snapshotter) + "_" + digest.FromString(snapshot).Encoded()[:32] + ".lock"
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, errors.Wrap(err, "container lock")
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, errors.Wrap(err, "container lock")
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return func() {
		_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
