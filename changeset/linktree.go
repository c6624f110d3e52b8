package changeset

import (
	"context"
	"io"
	"os"
	"path"
	"strings"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// A streamed change set can also be written as its tree straight into a
// directory on the container's own filesystem, where no session stands
// between the two (WriteTree): BuildKit running in this process makes a
// snapshot of it. The changed files are not copied there but linked: the
// new name is a hard link to the inode the walk saw, so no changed byte is
// written. The container must then write none of them until the layer has
// been read from the snapshot (it stays paused; or the links go to the
// private copies of --pause=brief).

// TreeStats says how WriteTree wrote the tree.
type TreeStats struct {
	// Linked counts the files linked to the container's own inodes, and
	// LinkedBytes their size: the container must not write them until the
	// tree has been read.
	Linked      int
	LinkedBytes int64
	// Reused counts the bytes of private copies (--pause=brief) linked.
	Reused int64
	// Copied counts the bytes written: files that could not be linked
	// (several names, another filesystem).
	Copied int64
}

// WriteTree writes the tree the change set describes (TreeOK must accept
// it) into dir, a new empty directory the caller owns: every entry with
// its owner, mode, times and extended attributes, every removal as a
// whiteout (the 0/0 character device overlayfs writes), and each regular
// file linked to the inode the walk saw when that inode is still the one
// the walk saw and the link gives the same entry as a copy would: one
// name only (a file of several names is copied, with the nanosecond the
// walk added to its time), on the same filesystem. The container's inodes
// are never changed. A file that changed since the walk fails the write,
// as it fails the other transports.
func (p *Plan) WriteTree(ctx context.Context, dir string) (TreeStats, error) {
	return p.writeTree(ctx, dir, "")
}

// WriteUpper is WriteTree into dir, the upper directory of an overlay
// snapshot on the base the change set was read against (UpperOK must
// accept it): a directory that replaces the base's is marked opaque with
// opaqueXattr (trusted.overlay.opaque, or user.overlay.opaque where the
// snapshot is mounted with userxattr), as overlayfs marks it.
func (p *Plan) WriteUpper(ctx context.Context, dir, opaqueXattr string) (TreeStats, error) {
	if opaqueXattr == "" {
		return TreeStats{}, errors.New("no extended attribute to mark replaced directories with")
	}
	return p.writeTree(ctx, dir, opaqueXattr)
}

func (p *Plan) writeTree(ctx context.Context, dir, opaqueXattr string) (TreeStats, error) {
	var stats TreeStats
	ok := p.TreeOK
	if opaqueXattr != "" {
		ok = p.UpperOK
	}
	t, err := p.tree(ok)
	if err != nil {
		return stats, err
	}
	root, err := openRoot(dir)
	if err != nil {
		return stats, err
	}
	defer root.Close()
	w := &treeWriter{p: p, root: int(root.Fd()), pfd: -1, buf: make([]byte, 1<<20), opaqueXattr: opaqueXattr}
	defer w.closeParent()
	var dirs []*treeEntry
	for _, e := range t.entries {
		if err := ctx.Err(); err != nil {
			return stats, err
		}
		if err := w.write(e, &stats); err != nil {
			return stats, errors.Wrapf(describe(err), "change set: %q", e.st.Path)
		}
		if os.FileMode(e.st.Mode).IsDir() {
			dirs = append(dirs, e)
		}
	}
	// A directory's attributes go last: its entries would move its times,
	// and a mode without write permission would refuse them.
	for i := len(dirs) - 1; i >= 0; i-- {
		e := dirs[i]
		if err := w.finishDir(e); err != nil {
			return stats, errors.Wrapf(err, "change set: %q", e.st.Path)
		}
	}
	return stats, nil
}

type treeWriter struct {
	p    *Plan
	root int
	// pfd is the directory pdir, the parent of the last entry written.
	pfd  int
	pdir string
	buf  []byte
	// opaqueXattr marks the replaced directories (WriteUpper).
	opaqueXattr string
}

func (w *treeWriter) closeParent() {
	if w.pfd >= 0 {
		unix.Close(w.pfd)
		w.pfd = -1
	}
}

// parent is parentOf, keeping the last directory open for its siblings.
func (w *treeWriter) parent(p string) (int, string, error) {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return w.root, base, nil
	}
	if w.pfd >= 0 && w.pdir == dir {
		return w.pfd, base, nil
	}
	w.closeParent()
	fd, base, err := w.parentOf(p)
	if err != nil {
		return -1, "", err
	}
	w.pfd, w.pdir = fd, dir
	return fd, base, nil
}

// unixMode is the permission bits of a transfer mode.
func unixMode(m os.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&os.ModeSetuid != 0 {
		out |= unix.S_ISUID
	}
	if m&os.ModeSetgid != 0 {
		out |= unix.S_ISGID
	}
	if m&os.ModeSticky != 0 {
		out |= unix.S_ISVTX
	}
	return out
}

func (w *treeWriter) write(e *treeEntry, stats *TreeStats) error {
	st := e.st
	pfd, base, err := w.parent(st.Path)
	if err != nil {
		return err
	}
	mode := os.FileMode(st.Mode)
	switch {
	case e.link:
		lfd, lbase, err := w.parentOf(st.Linkname)
		if err != nil {
			return err
		}
		defer unix.Close(lfd)
		return unix.Linkat(lfd, lbase, pfd, base, 0)
	case mode.IsDir():
		return unix.Mkdirat(pfd, base, 0o700)
	case mode&os.ModeSymlink != 0:
		if err := unix.Symlinkat(st.Linkname, pfd, base); err != nil {
			return err
		}
		if err := w.owner(pfd, base, e); err != nil {
			return err
		}
		return w.times(pfd, base, e)
	case mode&os.ModeDevice != 0 || mode&os.ModeNamedPipe != 0:
		typ := uint32(unix.S_IFIFO)
		switch {
		case mode&os.ModeCharDevice != 0:
			typ = unix.S_IFCHR
		case mode&os.ModeDevice != 0:
			typ = unix.S_IFBLK
		}
		if err := unix.Mknodat(pfd, base, typ|0o600, int(unix.Mkdev(uint32(st.Devmajor), uint32(st.Devminor)))); err != nil {
			return err
		}
		if err := w.owner(pfd, base, e); err != nil {
			return err
		}
		if err := unix.Fchmodat(pfd, base, unixMode(mode), 0); err != nil {
			return err
		}
		return w.times(pfd, base, e)
	case !mode.IsRegular():
		return errors.Errorf("entry of mode %s", mode)
	}
	if e.e != nil && e.e.copy == "" && !e.e.multi {
		ok, err := w.linkInode(pfd, base, *e.e)
		if err != nil {
			return err
		}
		if ok {
			stats.Linked++
			stats.LinkedBytes += st.Size
			return nil
		}
	}
	var fd int
	if e.e != nil && e.e.copy != "" && unix.Linkat(unix.AT_FDCWD, e.e.copy, pfd, base, 0) == nil {
		// A private copy (--pause=brief) is this commit's own: linked,
		// then given the entry's attributes.
		if fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		stats.Reused += st.Size
		e = &treeEntry{st: st, link: e.link} // nothing more to copy
	} else if fd, err = unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600); err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), st.Path)
	defer f.Close()
	switch {
	case e.e != nil:
		if err := w.p.copyFile(f, *e.e, w.buf); err != nil {
			return err
		}
		stats.Copied += st.Size
	case e.r != nil:
		n, err := io.CopyBuffer(f, io.LimitReader(e.r, st.Size), w.buf)
		if err != nil {
			return err
		}
		if n != st.Size {
			return errors.Errorf("%d bytes of %d", n, st.Size)
		}
		stats.Copied += n
	}
	if err := w.owner(pfd, base, e); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, unixMode(mode)); err != nil {
		return err
	}
	for k, v := range st.Xattrs {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil {
			return errors.Wrapf(err, "setting xattr %q", k)
		}
	}
	return w.times(pfd, base, e)
}

// parentOf opens the directory of the tree that holds p, never following
// a symlink, for the caller to close, and returns it with p's last name.
func (w *treeWriter) parentOf(p string) (int, string, error) {
	dir, base := path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := unix.Openat2(w.root, dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags})
	return fd, base, err
}

// linkInode links the container's inode of e as base in pfd, when it is
// still the inode the walk saw, unchanged; false where no link can be
// made (another filesystem, no permission): the caller copies.
func (w *treeWriter) linkInode(pfd int, base string, e planned) (bool, error) {
	if w.p.root == nil {
		return false, errors.New("the tree is no longer open")
	}
	fd, err := openBeneath(int(w.p.root.Fd()), e.h.Name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return false, errChanged
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	if st.Dev != e.dev || st.Ino != e.ino || st.Ctim != e.ctime || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != e.h.Size {
		return false, errChanged
	}
	// The walk saw one name; one made since would be a name the tree
	// does not hold, but the link is still the file the walk saw.
	switch err := unix.Linkat(fd, "", pfd, base, unix.AT_EMPTY_PATH); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EXDEV), errors.Is(err, unix.EPERM), errors.Is(err, unix.EMLINK), errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, err
	}
}

// owner gives the entry its owner (never following a symlink).
func (w *treeWriter) owner(pfd int, base string, e *treeEntry) error {
	return unix.Fchownat(pfd, base, int(e.st.Uid), int(e.st.Gid), unix.AT_SYMLINK_NOFOLLOW)
}

// times gives the entry its modification time (and the same access time).
func (w *treeWriter) times(pfd int, base string, e *treeEntry) error {
	ts := unix.NsecToTimespec(e.st.ModTime)
	return unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}

// finishDir gives a directory its owner, mode, xattrs and times.
func (w *treeWriter) finishDir(e *treeEntry) error {
	pfd, base, err := w.parentOf(e.st.Path)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	if err := w.owner(pfd, base, e); err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, unixMode(os.FileMode(e.st.Mode))); err != nil {
		return err
	}
	for k, v := range e.st.Xattrs {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil {
			return errors.Wrapf(err, "setting xattr %q", k)
		}
	}
	if e.opaque {
		if err := unix.Fsetxattr(fd, w.opaqueXattr, []byte("y"), 0); err != nil {
			return errors.Wrapf(err, "marking the replaced directory opaque (%s)", w.opaqueXattr)
		}
	}
	return w.times(pfd, base, e)
}
