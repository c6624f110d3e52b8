package changeset

import (
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	cfs "github.com/containerd/continuity/fs"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Overlayfs marks, in the trusted namespace (and the user namespace for
// mounts with userxattr).
var (
	opaqueXattrs   = []string{"trusted.overlay.opaque", "user.overlay.opaque"}
	redirectXattrs = []string{"trusted.overlay.redirect", "user.overlay.redirect", "trusted.overlay.metacopy", "user.overlay.metacopy"}
)

// FromUpperdir writes the change set held in an overlayfs upper directory:
// every entry in it is added or modified, a 0/0 character device is a
// deletion, and a directory marked opaque replaces the one below. The cost
// follows the size of the change, not of the whole filesystem.
func FromUpperdir(ctx context.Context, upper string, w *Writer) error {
	return explainTooLong(filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return errors.Wrap(err, "reading the upper directory")
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == upper {
			return nil
		}
		rel, err := filepath.Rel(upper, p)
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeCharDevice != 0 {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Rdev == 0 {
				w.Delete(rel)
				return nil
			}
		}
		for _, x := range redirectXattrs {
			if _, err := getXattr(p, x); err == nil {
				return errors.Errorf("%s carries overlayfs %s (redirect_dir or metacopy): such upper directories are not supported; mount the snapshotter without redirect_dir and metacopy", rel, x)
			}
		}
		if d.IsDir() {
			for _, x := range opaqueXattrs {
				if v, err := getXattr(p, x); err == nil && v == "y" {
					w.Opaque(rel)
					break
				}
			}
		}
		return w.AddPath(upper, rel)
	}))
}

// explainTooLong says what a "file name too long" from the walk means: the
// container made a path deeper than a path can be named from the host.
func explainTooLong(err error) error {
	var pe *fs.PathError
	if !errors.Is(err, syscall.ENAMETOOLONG) || !errors.As(err, &pe) {
		return err
	}
	p := pe.Path
	if len(p) > 120 {
		p = p[:60] + "..." + p[len(p)-60:]
	}
	return errors.Errorf("the container holds a path longer than the kernel lets a path be named (PATH_MAX, %d bytes), which cannot be committed: %s (%d bytes)", unix.PathMax, p, len(pe.Path))
}

// FromDiff writes the change set between two mounted trees with a walking
// diff, for snapshotters that keep no upper directory. Parent directories of
// every change are added as overlayfs would copy them up, so both readers
// give the same change set for the same container.
func FromDiff(ctx context.Context, lower, upper string, w *Writer) error {
	added := map[string]bool{"": true}
	addParents := func(rel string) error {
		var missing []string
		for dir := path.Dir(rel); dir != "." && dir != "/" && !added[dir]; dir = path.Dir(dir) {
			missing = append(missing, dir)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			if err := w.AddPath(upper, missing[i]); err != nil {
				return err
			}
			added[missing[i]] = true
		}
		return nil
	}
	return explainTooLong(cfs.Changes(ctx, lower, upper, func(kind cfs.ChangeKind, p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, "/")
		if err := addParents(rel); err != nil {
			return err
		}
		if kind == cfs.ChangeKindDelete {
			w.Delete(rel)
			return nil
		}
		if fi.IsDir() {
			// A directory that replaced a non-directory, or one whose
			// lower side is gone, hides everything below it.
			if lfi, err := os.Lstat(filepath.Join(lower, rel)); err == nil && !lfi.IsDir() {
				w.Delete(rel)
			}
			added[rel] = true
		}
		return w.AddPath(upper, rel)
	}))
}

// Sync flushes the filesystem holding p to disk.
func Sync(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}
