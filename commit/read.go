package commit

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/frontend"
)

// changes is a container's change set, ready to cross the session.
type changes struct {
	m  *changeset.Manifest
	fs fsutil.FS
	// release resumes the container (when the commit paused it) and lets
	// other commits of it go; it is safe to call more than once and
	// returns the first call's error.
	release func() error
	// remove removes the staged copy, if any, once the solve is over.
	remove func()
	// paused is how long the container was paused, known once released.
	paused time.Duration
	// tree tells that fs is the tree the change set describes
	// (changeset.Plan.TreeFS), not the change-set directory.
	tree bool
	// secrets are the credentials the scan found.
	secrets []changeset.Secret
	// parts are the rest of the change set when it is split into
	// several layers (--max-layer-size): each crosses as fs does.
	parts []fsutil.FS
	// sources, when set, are the LLB sources of the change set's parts,
	// written in place by the engine in this process (Client.Trees)
	// instead of fs and parts crossing the session. linked tells that
	// the files are the container's own inodes: the container goes on
	// only once the solve has read them.
	sources []string
	linked  bool
	// onBase tells that the change set is one source written on the base
	// image's layers (engine.Engine.OfferTree with a base).
	onBase bool
}

// readChanges reads the container's change set. Commits of the same
// container take turns; a running container is paused when asked, only
// while its changes are read, and resumed on every way out. On an overlay
// snapshot the change set streams: the walk writes only the tar's headers,
// the contents are read as the tar crosses the session, and the container
// is resumed when it has (a container running with --pause=false is read
// at once and staged); failed is told when the stream fails (a file
// changed since the walk), and the solve must then fail. Otherwise the
// change set is staged in a temporary directory. layerRecord goes into
// the change set's header (exporter.Record): BuildKit's cache key for the
// layer then depends on how it is written.
func (j *job) readChanges(ctx context.Context, layerRecord string, failed func(error)) (_ *changes, retErr error) {
	tg := j.target
	records := map[string]string{layerRecordName: layerRecord}
	c := &changes{}
	var unlock, resume func() error
	var once sync.Once
	var releaseErr error
	dir := ""
	c.release = func() error {
		once.Do(func() {
			if resume != nil {
				releaseErr = resume()
			}
			if unlock != nil {
				_ = unlock()
			}
		})
		return releaseErr
	}
	// A staged change set goes with the commit.
	c.remove = func() {
		if dir != "" {
			os.RemoveAll(dir)
		}
	}
	defer func() {
		if retErr != nil {
			c.remove()
			if err := c.release(); err != nil {
				retErr = errors.Wrapf(err, "after: %v", retErr)
			}
		}
	}()
	// Nothing changes under the read when the container is paused or not
	// running: then the contents can be read later, as the tar streams.
	// A running container's change set is read at once and staged.
	still := true
	// With --pause=brief, the files copied aside before the pause, and the
	// files the container mapped writable then.
	var pf *changeset.Prefetch
	var mapped map[string]bool
	if tg.Pauser != nil {
		g, err := container.Lock(ctx, j.Namespace, tg, j.container, j.Warnf)
		if err != nil {
			return nil, err
		}
		unlock = func() error { g.Unlock(); return nil }
		if j.pause {
			st, err := tg.Pauser.State(ctx)
			if err != nil {
				return nil, errors.Wrapf(err, "container %s: task status", j.container)
			}
			// A container the user paused stays paused; one that is
			// stopped has nothing to pause.
			if st == containerd.Running {
				if j.brief {
					var pdir string
					if pf, mapped, pdir, err = j.prefetch(ctx, records); err != nil {
						return nil, err
					}
					if pdir != "" {
						remove := c.remove
						c.remove = func() { remove(); os.RemoveAll(pdir) }
					}
				}
				start := time.Now()
				r, err := g.Pause(ctx)
				if err != nil {
					return nil, err
				}
				resume = func() error {
					c.paused = time.Since(start)
					return r()
				}
			}
		} else if st, err := tg.Pauser.State(ctx); err != nil || st == containerd.Running {
			still = false
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	sn := j.Containerd.SnapshotService(tg.Snapshotter)
	mounts, err := sn.Mounts(ctx, tg.Snapshot)
	if err != nil {
		return nil, errors.Wrapf(err, "mounts of snapshot %s", tg.Snapshot)
	}
	var w *changeset.Writer
	var plan *changeset.Plan
	// Volumes are trees of their own: the change set is staged.
	if changeset.Overlay(mounts) && still && len(j.volumes) == 0 {
		w, plan = changeset.Stream(records)
	} else {
		if dir, err = os.MkdirTemp("", "commit-frontend-changes-"); err != nil {
			return nil, err
		}
		if j.maxLayerSize > 0 {
			w, err = changeset.CreateSplit(dir, records, j.maxLayerSize)
		} else {
			w, err = changeset.Create(dir, records)
		}
		if err != nil {
			return nil, err
		}
	}
	if j.opts.LayerDiffer == frontend.DifferWalking {
		// The walking differ sees a base file that only gained a link
		// as unchanged, as docker commit's does: times stay exact.
		w.ExactLinkTimes()
	}
	if err := w.Exclude(j.exclude); err != nil {
		w.Abort()
		return nil, err
	}
	if j.secretScan != "" && j.secretScan != SecretScanOff {
		w.ScanSecrets()
	}
	if err := changeset.FromSnapshot(ctx, sn, tg.Snapshot, mounts, w); err != nil {
		w.Abort()
		return nil, errors.Wrapf(err, "reading the changes of %s", j.container)
	}
	for _, m := range j.volumes {
		if err := changeset.FromTree(ctx, m.Source, m.Destination, w); err != nil {
			w.Abort()
			return nil, errors.Wrapf(err, "reading the data mounted at %s of %s", m.Destination, j.container)
		}
	}
	if c.m, err = w.Close(); err != nil {
		w.Abort()
		return nil, err
	}
	names := w.WhiteoutNames()
	for i, p := range names {
		if i == maxNamedWarnings {
			j.warnf("left out %d more paths whose names start with .wh.", len(names)-i)
			break
		}
		j.warnf("left out %q: a name that starts with .wh. is a deletion in a layer, so no image can hold it", p)
	}
	for _, p := range w.UnusedExcludes() {
		j.warnf("--exclude %q excluded nothing", p)
	}
	if c.secrets = w.Secrets(); len(c.secrets) > 0 {
		if err := j.reportSecrets(c.secrets); err != nil {
			w.Abort()
			return nil, err
		}
	}
	if c.m.Whiteouts > 0 {
		if err := changeset.CheckMountedPatterns(ctx, w.Removals(), mounts, j.container); err != nil {
			w.Abort()
			return nil, err
		}
	}
	if plan == nil {
		// Staged: the container may go on at once.
		if err := c.release(); err != nil {
			return nil, err
		}
		parts, oversized := w.StagedParts()
		j.warnOversized(oversized)
		if len(parts) == 0 {
			parts = []string{dir}
		}
		if base := j.baseInPlace(); j.Trees != nil && j.opts.Provenance == "" && os.Getenv(transferEnv) == "" &&
			base.Digest != "" && len(parts) == 1 && len(j.volumes) == 0 && changeset.Overlay(mounts) {
			j.offerStaged(c, parts[0], base, failed)
			return c, nil
		}
		for _, p := range parts {
			fs, err := fsutil.NewFS(p)
			if err != nil {
				return nil, err
			}
			c.parts = append(c.parts, fs)
		}
		c.fs, c.parts = c.parts[0], c.parts[1:]
		return c, nil
	}
	if pf != nil {
		// Only what changed since the copies, or may have, is read now;
		// then the plan reads nothing more of the container.
		pids, err := tg.Pauser.Pids(ctx)
		if err != nil {
			return nil, errors.Wrapf(err, "container %s", j.container)
		}
		now, err := container.WritableMappings(pids)
		if err != nil {
			return nil, errors.Wrapf(err, "container %s", j.container)
		}
		for p := range now {
			mapped[p] = true
		}
		if _, _, err := plan.UsePrefetched(ctx, pf, mapped); err != nil {
			return nil, errors.Wrapf(err, "reading the changes of %s", j.container)
		}
		if err := c.release(); err != nil {
			return nil, err
		}
	}
	release := c.release
	c.release = func() error {
		err := release()
		plan.Release()
		return err
	}
	parts := []*changeset.Plan{plan}
	if j.maxLayerSize > 0 {
		var oversized []string
		parts, oversized = plan.Split(j.maxLayerSize)
		j.warnOversized(oversized)
	}
	if j.Trees != nil && j.opts.Provenance == "" && inPlace(parts, j.baseInPlace().Digest != "") {
		j.offerTrees(c, parts, failed)
		return c, nil
	}
	// The container goes on once every part has crossed, or one failed.
	var mu sync.Mutex
	pending := len(parts)
	done := func(err error) {
		if err != nil {
			failed(errors.Wrapf(err, "reading the changes of %s", j.container))
			_ = c.release()
			return
		}
		mu.Lock()
		pending--
		last := pending == 0
		mu.Unlock()
		if last {
			_ = c.release()
		}
	}
	if len(parts) > 1 {
		tree := useTree(plan, c.m)
		for _, p := range parts {
			tree = tree && p.TreeOK() == nil
		}
		for _, p := range parts {
			var fs fsutil.FS = p.TarFS(ctx, done)
			if tree {
				if fs, err = p.TreeFS(ctx, done); err != nil {
					return nil, err
				}
			}
			c.parts = append(c.parts, fs)
		}
		c.fs, c.parts, c.tree = c.parts[0], c.parts[1:], tree
		return c, nil
	}
	// As a tree when the session's transfer can carry it (no tar to
	// extract on buildkitd's side) and the files are large enough for that
	// to pay, else as the tar.
	if useTree(plan, c.m) {
		if c.fs, err = plan.TreeFS(ctx, done); err != nil {
			return nil, err
		}
		c.tree = true
		return c, nil
	}
	c.fs = plan.TarFS(ctx, done)
	return c, nil
}

// inPlace tells whether the parts of a streamed change set can be written
// in place by this process: the first as the upper directory of a snapshot
// on the base when onBase (replaced directories marked opaque, file
// capabilities and any names kept), the others as trees; and no transfer
// was asked for by transferEnv.
func inPlace(parts []*changeset.Plan, onBase bool) bool {
	if os.Getenv(transferEnv) != "" {
		return false
	}
	for i, p := range parts {
		ok := p.TreeOK
		if i == 0 && onBase {
			ok = p.UpperOK
		}
		if ok() != nil {
			return false
		}
	}
	return true
}

// baseInPlace is the base image a change set written in place stands on:
// the container's image when the engine has its layers in containerd's
// content store, else none.
func (j *job) baseInPlace() ocispecs.Descriptor {
	if tg := j.target; tg.Remote == "" && tg.Manifest.Digest != "" {
		return tg.Manifest
	}
	return ocispecs.Descriptor{}
}

// offerTrees offers each part to the engine as a tree it writes in place,
// its files linked to the container's inodes (or to --pause=brief's
// copies): no changed byte is copied. A part that fails (a file changed
// since the walk) fails the solve through failed.
func (j *job) offerTrees(c *changes, parts []*changeset.Plan, failed func(error)) {
	var withdraw []func()
	// The first part is written on the base image's layers, the one the
	// frontend's COMMIT applies it to, when the engine has them in
	// containerd's content store.
	base := j.baseInPlace()
	for i, p := range parts {
		on := base
		if i > 0 {
			on = ocispecs.Descriptor{}
		}
		ident, w := j.Trees.OfferTree(func(ctx context.Context, dir, opaqueXattr string) error {
			write := p.WriteTree
			if opaqueXattr != "" {
				write = func(ctx context.Context, dir string) (changeset.TreeStats, error) {
					return p.WriteUpper(ctx, dir, opaqueXattr)
				}
			}
			if _, err := write(ctx, dir); err != nil {
				err = errors.Wrapf(err, "reading the changes of %s", j.container)
				failed(err)
				return err
			}
			return nil
		}, on)
		c.sources = append(c.sources, ident)
		withdraw = append(withdraw, w)
	}
	// Until the solve has read the links, the container waits.
	c.linked = true
	c.onBase = len(parts) == 1 && base.Digest != ""
	remove := c.remove
	c.remove = func() {
		for _, w := range withdraw {
			w()
		}
		remove()
	}
}

// offerStaged offers a staged change set (the commit's own copy of a
// container that went on running) to the engine, written into the upper
// directory of a snapshot on the base: nothing crosses a session.
func (j *job) offerStaged(c *changes, staged string, base ocispecs.Descriptor, failed func(error)) {
	ident, withdraw := j.Trees.OfferTree(func(ctx context.Context, dir, opaqueXattr string) error {
		if _, err := changeset.WriteStagedUpper(ctx, staged, dir, opaqueXattr); err != nil {
			err = errors.Wrapf(err, "writing the changes of %s", j.container)
			failed(err)
			return err
		}
		return nil
	}, base)
	c.sources = []string{ident}
	c.onBase = true
	remove := c.remove
	c.remove = func() {
		withdraw()
		remove()
	}
}

// maxNamedWarnings is how many left-out paths are named one by one.
const maxNamedWarnings = 20

// treeMinAverage is the average size of a changed entry below which the
// tar crosses faster than the tree: the tree's transfer costs a request
// per file, the tar's extraction a pass over the bytes (measured with
// hack/bench.sh on 2 cores: 10,000 files of 512 bytes took 2.6–4.6 s as a
// tar and 5.1–6.6 s as a tree; 1 GiB in 8 files 14.6 s as a tar and about
// 10 s as a tree).
const treeMinAverage = 64 << 10

// useTree tells whether a streamed change set crosses as its tree: when
// the transfer can carry it and its files are large enough for that to
// pay. transferEnv set to "tar" or "tree" decides instead (a tree only
// where the transfer can carry it), for comparing the two.
func useTree(p *changeset.Plan, m *changeset.Manifest) bool {
	if p.TreeOK() != nil {
		return false
	}
	switch os.Getenv(transferEnv) {
	case "tar":
		return false
	case "tree":
		return true
	}
	return m.Entries > 0 && m.Bytes/int64(m.Entries) >= treeMinAverage
}

// transferEnv chooses how change sets cross the session: "tar" or "tree".
const transferEnv = "COMMIT_FRONTEND_TRANSFER"

// layerRecordName is the change set's header record that says how the
// layer is written.
const layerRecordName = "layer"

// reportSecrets names the credentials found on stderr, or refuses the
// commit with them (SecretScanFail).
func (j *job) reportSecrets(found []changeset.Secret) error {
	var named []string
	for i, s := range found {
		if i == maxNamedWarnings {
			named = append(named, fmt.Sprintf("and %d more", len(found)-i))
			break
		}
		named = append(named, fmt.Sprintf("%q (%s)", s.Path, s.Kind))
	}
	if j.secretScan == SecretScanFail {
		return errors.Errorf("--secret-scan=fail: the changes of %s hold %d credential file(s), which the image would give to everyone who pulls it: %s; leave them out with --exclude PATH, or commit with --secret-scan=warn",
			j.container, len(found), strings.Join(named, ", "))
	}
	for i, s := range found {
		if i == maxNamedWarnings {
			j.warnf("%d more credential files go into the image", len(found)-i)
			break
		}
		j.warnf("%q goes into the image and looks like %s: leave it out with --exclude %s", s.Path, s.Kind, s.Path)
	}
	return nil
}

// warnOversized names the files larger than --max-layer-size.
func (j *job) warnOversized(paths []string) {
	for _, p := range paths {
		j.warnf("%q is larger than --max-layer-size: it is a layer of its own", p)
	}
}

// prefetch reads the change set of the running container and copies its
// files aside, before a brief pause (--pause=brief), with the files the
// container maps writable as it starts; no prefetch (nil) where the change
// set is not streamed (no overlay, volumes) or the read fails as the
// container writes: the pause then reads everything. dir holds the
// copies.
func (j *job) prefetch(ctx context.Context, records map[string]string) (pf *changeset.Prefetch, mapped map[string]bool, dir string, err error) {
	tg := j.target
	if len(j.volumes) > 0 {
		return nil, nil, "", nil
	}
	sn := j.Containerd.SnapshotService(tg.Snapshotter)
	mounts, err := sn.Mounts(ctx, tg.Snapshot)
	if err != nil || !changeset.Overlay(mounts) {
		return nil, nil, "", nil
	}
	pids, err := tg.Pauser.Pids(ctx)
	if err != nil {
		return nil, nil, "", errors.Wrapf(err, "container %s", j.container)
	}
	if mapped, err = container.WritableMappings(pids); err != nil {
		return nil, nil, "", errors.Wrapf(err, "container %s", j.container)
	}
	w, plan := changeset.Stream(records)
	defer plan.Release()
	if err := w.Exclude(j.exclude); err != nil {
		w.Abort()
		return nil, nil, "", err
	}
	if err := changeset.FromSnapshot(ctx, sn, tg.Snapshot, mounts, w); err != nil {
		w.Abort()
		return nil, nil, "", nil
	}
	if _, err := w.Close(); err != nil {
		return nil, nil, "", nil
	}
	if dir, err = os.MkdirTemp("", "commit-frontend-prefetch-"); err != nil {
		return nil, nil, "", err
	}
	if pf, err = plan.Prefetch(ctx, dir); err != nil {
		os.RemoveAll(dir)
		return nil, nil, "", err
	}
	return pf, mapped, dir, nil
}
