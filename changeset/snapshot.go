package changeset

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/pkg/errors"
)

// CheckMountedPatterns refuses a change set whose removals of paths that
// are not UTF-8 would also remove files the container kept (CheckPatterns),
// looking at the container's filesystem (mounts) through a read-only mount.
func CheckMountedPatterns(ctx context.Context, removed []string, mounts []mount.Mount, container string) error {
	if !slices.ContainsFunc(removed, func(p string) bool { return !utf8.ValidString(p) }) {
		return nil
	}
	var bad error
	if err := mount.WithReadonlyTempMount(ctx, mounts, func(root string) error {
		bad = CheckPatterns(root, removed)
		return nil
	}); err != nil {
		return errors.Wrapf(err, "mounting container %s to check its removals", container)
	}
	return errors.Wrapf(bad, "container %s", container)
}

// upperdir returns the upper directory of an overlay mount, and whether
// overlayfs keeps its marks in user xattrs there.
func upperdir(mounts []mount.Mount) (string, UpperOpt, bool) {
	if len(mounts) != 1 || mounts[0].Type != "overlay" {
		return "", UpperOpt{}, false
	}
	opt := UpperOpt{UserXattr: slices.Contains(mounts[0].Options, "userxattr"), Lowers: []string{}}
	upper := ""
	for _, o := range mounts[0].Options {
		if v, ok := strings.CutPrefix(o, "upperdir="); ok {
			upper = v
		}
		if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
			opt.Lowers = strings.Split(v, ":")
		}
	}
	return upper, opt, upper != ""
}

// Overlay tells whether the snapshot mounted by mounts is an overlay whose
// upper directory holds its changes: they are then read from there,
// without a walk of the base, and stay where they are until read.
func Overlay(mounts []mount.Mount) bool {
	_, _, ok := upperdir(mounts)
	return ok
}

// FromSnapshot reads the changes of snapshot key of sn (mounted by mounts)
// into w: from the upper directory of an overlay, else by a walk of the
// snapshot against its parent.
func FromSnapshot(ctx context.Context, sn snapshots.Snapshotter, key string, mounts []mount.Mount, w *Writer) error {
	if upper, opt, ok := upperdir(mounts); ok {
		return FromUpperdir(ctx, upper, opt, w)
	}
	return walkingDiff(ctx, sn, key, mounts, w)
}

// walkingDiff mounts the snapshot and a view of its parent read-only and
// diffs them.
func walkingDiff(ctx context.Context, sn snapshots.Snapshotter, key string, mounts []mount.Mount, w *Writer) error {
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
			return FromDiff(ctx, "", upper, w)
		}
		return mount.WithReadonlyTempMount(ctx, lowerMounts, func(lower string) error {
			return FromDiff(ctx, lower, upper, w)
		})
	})
}
