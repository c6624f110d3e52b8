package commit

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/pkg/errors"

	"github.com/commit-frontend/commit-frontend/changeset"
)

// readChanges writes the container's change set into dir. Commits of the
// same container take turns; a running container is paused when asked,
// only while its changes are read, and resumed on every way out.
func readChanges(ctx context.Context, j *job, dir string, records map[string]string) (_ *changeset.Manifest, paused time.Duration, retErr error) {
	tg := j.target
	if tg.pauser != nil {
		g, err := lockContainer(ctx, j.ns, tg.snapshotter, tg.snapshot, j.container, tg.pauser, j.warnf)
		if err != nil {
			return nil, 0, err
		}
		defer g.unlock()
		if j.pause {
			st, err := tg.pauser.state(ctx)
			if err != nil {
				return nil, 0, errors.Wrapf(err, "container %s: task status", j.container)
			}
			// A container the user paused stays paused; one that is
			// stopped has nothing to pause.
			if st == containerd.Running {
				start := time.Now()
				resume, err := g.pause(ctx)
				if err != nil {
					return nil, 0, err
				}
				defer func() {
					paused = time.Since(start)
					if err := resume(); err != nil {
						if retErr != nil {
							err = errors.Wrapf(err, "after: %v", retErr)
						}
						retErr = err
					}
				}()
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, context.Cause(ctx)
	}
	sn := j.cc.SnapshotService(tg.snapshotter)
	mounts, err := sn.Mounts(ctx, tg.snapshot)
	if err != nil {
		return nil, 0, errors.Wrapf(err, "mounts of snapshot %s", tg.snapshot)
	}
	w, err := changeset.Create(dir, records)
	if err != nil {
		return nil, 0, err
	}
	if err := w.Exclude(j.exclude); err != nil {
		w.Abort()
		return nil, 0, err
	}
	if upper, opt, ok := upperdir(mounts); ok {
		err = changeset.FromUpperdir(ctx, upper, opt, w)
	} else {
		err = walkingDiff(ctx, sn, tg.snapshot, mounts, w)
	}
	if err != nil {
		w.Abort()
		return nil, 0, errors.Wrapf(err, "reading the changes of %s", j.container)
	}
	m, err := w.Close()
	if err != nil || m.Whiteouts == 0 {
		return m, 0, err
	}
	return m, 0, checkPatterns(ctx, dir, mounts, j.container)
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

// upperdir returns the upper directory of an overlay mount, and whether
// overlayfs keeps its marks in user xattrs there.
func upperdir(mounts []mount.Mount) (string, changeset.UpperOpt, bool) {
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		return "", changeset.UpperOpt{}, false
	}
	opt := changeset.UpperOpt{UserXattr: slices.Contains(mounts[0].Options, "userxattr")}
	for _, o := range mounts[0].Options {
		if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			return v, opt, true
		}
	}
	return "", opt, false
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
			return changeset.FromDiff(ctx, "", upper, w)
		}
		return mount.WithReadonlyTempMount(ctx, lowerMounts, func(lower string) error {
			return changeset.FromDiff(ctx, lower, upper, w)
		})
	})
}
