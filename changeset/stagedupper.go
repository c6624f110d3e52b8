package changeset

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil/types"
)

// WriteStagedUpper writes a staged change set (the directory Create wrote,
// the commit's own copy of a container that went on running) into dir, the
// upper directory of an overlay snapshot on the base the change set was read
// against, as WriteUpper writes a streamed one: every entry of its tar with
// its owner, mode, times and extended attributes, every removal as a
// whiteout, every replaced directory marked opaque with opaqueXattr. staged
// is the commit's own private directory (Create's), not the container's:
// its two files are opened by path; dir is written through descriptors
// that cannot leave it, as WriteTree writes.
func WriteStagedUpper(ctx context.Context, staged, dir, opaqueXattr string) (TreeStats, error) {
	var stats TreeStats
	if opaqueXattr == "" {
		return stats, errors.New("no extended attribute to mark replaced directories with")
	}
	dt, err := os.ReadFile(filepath.Join(staged, WhiteoutFile))
	if err != nil && !os.IsNotExist(err) {
		return stats, err
	}
	deleted, opaque, err := ParseWhiteouts(dt)
	if err != nil {
		return stats, err
	}
	replaced := map[string]bool{}
	for _, d := range opaque {
		replaced[strings.TrimSuffix(d, "/")] = true
	}
	f, err := os.Open(filepath.Join(staged, TarFile))
	if err != nil {
		return stats, err
	}
	defer f.Close()
	root, err := openRoot(dir)
	if err != nil {
		return stats, err
	}
	defer root.Close()
	w := &treeWriter{root: int(root.Fd()), pfd: -1, buf: make([]byte, 1<<20), opaqueXattr: opaqueXattr}
	defer w.closeParent()
	var dirs []*treeEntry
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return stats, errors.Wrap(err, "reading the staged change set")
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		st, err := treeStat(h)
		if err != nil {
			return stats, err
		}
		e := &treeEntry{st: st, link: h.Typeflag == tar.TypeLink, opaque: replaced[st.Path]}
		if h.Typeflag == tar.TypeReg {
			e.r = tr
		}
		if err := w.write(e, &stats); err != nil {
			return stats, errors.Wrapf(err, "change set: %q", st.Path)
		}
		if os.FileMode(st.Mode).IsDir() {
			dirs = append(dirs, e)
			delete(replaced, st.Path)
		}
	}
	for _, d := range deleted {
		d = strings.TrimSuffix(d, "/")
		e := &treeEntry{st: &types.Stat{Path: d, Mode: uint32(os.ModeDevice | os.ModeCharDevice)}}
		if err := w.write(e, &stats); err != nil {
			return stats, errors.Wrapf(err, "change set: removed %q", d)
		}
	}
	for d := range replaced {
		return stats, errors.Errorf("change set: replaced directory %q is not in the change set", d)
	}
	// A directory's attributes go last, as WriteTree gives them.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := w.finishDir(dirs[i]); err != nil {
			return stats, errors.Wrapf(err, "change set: %q", dirs[i].st.Path)
		}
	}
	return stats, nil
}
