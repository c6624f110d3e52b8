package changeset

import (
	"bytes"
	"context"
	"io"
	"os"
	"path"
	"strings"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// UpperOpt describes the overlay mount an upper directory belongs to.
type UpperOpt struct {
	// UserXattr is set for a mount with the userxattr option (rootless):
	// overlayfs then keeps its marks in user.overlay.*. Otherwise they are
	// in trusted.overlay.*, and user.overlay.* is an ordinary attribute
	// that any process in the container may set, which means nothing.
	UserXattr bool
	// Lowers are the mount's lower directories (the image's layers). A
	// directory marked opaque hides what is below it only where a lower
	// holds a directory at its path: overlayfs also marks a directory it
	// created or moved under a merged parent, and such a directory
	// replaces nothing. Without Lowers every opaque mark counts.
	Lowers []string
}

func (o UpperOpt) xattr(name string) string {
	if o.UserXattr {
		return "user.overlay." + name
	}
	return "trusted.overlay." + name
}

// FromUpperdir writes the change set held in an overlayfs upper directory:
// every entry in it is added or modified, a 0/0 character device is a
// deletion, and a directory marked opaque replaces the one below. Unix
// sockets are left out and counted. The cost follows the size of the
// change, not of the whole filesystem.
func FromUpperdir(ctx context.Context, upper string, opt UpperOpt, w *Writer) error {
	root, rn, err := rootNode(upper)
	if err != nil {
		return errors.Wrap(err, "reading the upper directory")
	}
	// A sink that reads the contents after the walk keeps the directory.
	if !w.sink.from(root) {
		defer root.Close()
	}
	r := &upperReader{opt: opt, w: w}
	for _, l := range opt.Lowers {
		f, err := openRoot(l)
		if err != nil {
			r.close()
			return errors.Wrap(err, "reading a lower directory")
		}
		r.lowers = append(r.lowers, f)
	}
	defer r.close()
	return r.dir(ctx, rn)
}

// upperReader walks an upper directory, with its mount's lower directories
// open to tell which opaque marks hide anything.
type upperReader struct {
	opt    UpperOpt
	w      *Writer
	lowers []*os.File
}

func (r *upperReader) close() {
	for _, f := range r.lowers {
		f.Close()
	}
}

// hides tells whether an opaque directory at rel hides a directory of the
// layers below. Each lower is looked up beneath its root, no symlink
// followed; what cannot be told is taken to be hidden, so that the mark
// keeps its meaning.
func (r *upperReader) hides(rel string) bool {
	if r.opt.Lowers == nil {
		return true
	}
	for _, l := range r.lowers {
		fd, err := openBeneath(int(l.Fd()), rel, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		switch {
		case err == nil:
			unix.Close(fd)
			return true
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
			continue
		default:
			return true
		}
	}
	return false
}

func (r *upperReader) dir(ctx context.Context, dir *node) error {
	names, err := dir.names()
	if err != nil {
		return errors.Wrapf(describe(err), "reading %q", "/"+dir.rel)
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := openNode(dir.fd, name, joinRel(dir.rel, name))
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed since the directory was listed
			}
			return errors.Wrapf(describe(err), "reading %q", "/"+joinRel(dir.rel, name))
		}
		err = r.entry(ctx, n)
		n.close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (r *upperReader) entry(ctx context.Context, n *node) error {
	opt, w := r.opt, r.w
	if skip, descend := w.excluded(n.rel, n.isDir()); skip {
		if descend {
			return r.dir(ctx, n)
		}
		return nil
	}
	switch {
	case n.isWhiteout():
		return w.Delete(n.rel)
	case n.isSocket():
		w.Skip()
		return nil
	}
	var xattrs map[string]string
	if n.isReg() || n.isDir() {
		var err error
		if xattrs, err = n.xattrs(); err != nil {
			return errors.Wrapf(describe(err), "reading %q", "/"+n.rel)
		}
		for _, x := range []string{opt.xattr("redirect"), opt.xattr("metacopy")} {
			if _, ok := xattrs[x]; ok {
				return errors.Errorf("%q carries overlayfs %s (redirect_dir or metacopy): such upper directories are not supported; mount the snapshotter without redirect_dir and metacopy", "/"+n.rel, x)
			}
		}
	}
	if !n.isDir() {
		return w.add(n, nil)
	}
	if xattrs[opt.xattr("opaque")] == "y" && r.hides(n.rel) {
		if err := w.Opaque(n.rel); err != nil {
			return err
		}
	}
	if err := w.add(n, xattrs); err != nil {
		return err
	}
	return r.dir(ctx, n)
}

// describe turns the errors of an entry the container swapped during the
// read into a message that says so.
func describe(err error) error {
	if errors.Is(err, errChanged) {
		return errors.New("changed while being read (rewritten, moved, removed, or turned into a symlink, a mount or another kind of file): pause the container (--pause) or commit it when it is not writing")
	}
	return err
}

// FromDiff writes the change set between two trees with a walking diff,
// for snapshotters that keep no upper directory; lower is "" for a tree
// without a parent. Both trees are walked by directory descriptors, as
// FromUpperdir walks its one. Parent directories of every change are
// added as overlayfs would copy them up, and a removed directory is one
// deletion, so both readers give the same change set for the same
// container.
func FromDiff(ctx context.Context, lower, upper string, w *Writer) error {
	ur, un, err := rootNode(upper)
	if err != nil {
		return err
	}
	defer ur.Close()
	var ln *node
	if lower != "" {
		lr, n, err := rootNode(lower)
		if err != nil {
			return err
		}
		defer lr.Close()
		ln = n
	}
	d := &differ{w: w}
	return d.dir(ctx, ln, un, nil)
}

type differ struct {
	w *Writer
}

// pending is a directory written only once something below it changes.
type pending struct {
	n       *node
	written bool
}

func (d *differ) writeParents(parents []*pending) error {
	for _, p := range parents {
		if p.written {
			continue
		}
		if err := d.w.add(p.n, nil); err != nil {
			return err
		}
		p.written = true
	}
	return nil
}

// dir compares the directory upper (and lower, nil when there is none)
// entry by entry.
func (d *differ) dir(ctx context.Context, lower, upper *node, parents []*pending) error {
	unames, err := upper.names()
	if err != nil {
		return errors.Wrapf(describe(err), "reading %q", "/"+upper.rel)
	}
	var lnames []string
	if lower != nil {
		if lnames, err = lower.names(); err != nil {
			return errors.Wrapf(err, "reading the parent's %q", "/"+lower.rel)
		}
	}
	for i, j := 0, 0; i < len(unames) || j < len(lnames); {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case j == len(lnames) || (i < len(unames) && unames[i] < lnames[j]):
			err = d.added(ctx, upper, unames[i], parents)
			i++
		case i == len(unames) || lnames[j] < unames[i]:
			if skip, _ := d.w.excluded(joinRel(upper.rel, lnames[j]), false); !skip {
				if err = d.writeParents(parents); err == nil {
					err = d.w.Delete(joinRel(upper.rel, lnames[j]))
				}
			}
			j++
		default:
			err = d.both(ctx, lower, upper, unames[i], parents)
			i++
			j++
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// added writes the entry name of upper and everything below it.
func (d *differ) added(ctx context.Context, upper *node, name string, parents []*pending) error {
	n, err := openNode(upper.fd, name, joinRel(upper.rel, name))
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return errors.Wrapf(describe(err), "reading %q", "/"+joinRel(upper.rel, name))
	}
	defer n.close()
	if skip, descend := d.w.excluded(n.rel, n.isDir()); skip {
		if descend {
			return d.dir(ctx, nil, n, append(parents[:len(parents):len(parents)], &pending{n: n, written: true}))
		}
		return nil
	}
	if n.isSocket() {
		d.w.Skip()
		return nil
	}
	if err := d.writeParents(parents); err != nil {
		return err
	}
	if err := d.w.add(n, nil); err != nil {
		return err
	}
	if !n.isDir() {
		return nil
	}
	return d.dir(ctx, nil, n, nil)
}

// both compares an entry present in both trees.
func (d *differ) both(ctx context.Context, lower, upper *node, name string, parents []*pending) error {
	rel := joinRel(upper.rel, name)
	un, err := openNode(upper.fd, name, rel)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			if err := d.writeParents(parents); err != nil {
				return err
			}
			return d.w.Delete(rel)
		}
		return errors.Wrapf(describe(err), "reading %q", "/"+rel)
	}
	defer un.close()
	if skip, descend := d.w.excluded(rel, un.isDir()); skip && !descend {
		return nil
	}
	ln, err := openNode(lower.fd, name, rel)
	if err != nil {
		return errors.Wrapf(err, "reading the parent's %q", "/"+rel)
	}
	defer ln.close()
	if un.isSocket() {
		d.w.Skip()
		if ln.isSocket() {
			return nil
		}
		if err := d.writeParents(parents); err != nil {
			return err
		}
		return d.w.Delete(rel)
	}
	if un.isDir() && !ln.isDir() {
		// A directory that replaced a non-directory hides it.
		if err := d.writeParents(parents); err != nil {
			return err
		}
		if err := d.w.Delete(rel); err != nil {
			return err
		}
		return d.added(ctx, upper, name, nil)
	}
	same, err := sameEntry(ln, un)
	if err != nil {
		return errors.Wrapf(describe(err), "comparing %q", "/"+rel)
	}
	if !un.isDir() {
		if same {
			return nil
		}
		if err := d.writeParents(parents); err != nil {
			return err
		}
		return d.w.add(un, nil)
	}
	p := &pending{n: un}
	if !same {
		if err := d.writeParents(parents); err != nil {
			return err
		}
		if err := d.w.add(un, nil); err != nil {
			return err
		}
		p.written = true
	}
	return d.dir(ctx, ln, un, append(parents[:len(parents):len(parents)], p))
}

// sameEntry tells whether an entry is unchanged, as containerd's walking
// differ tells it: type, mode, owner, device, size, mtime, link target,
// capabilities, and the contents when both mtimes are whole seconds (as
// after an unpack, which keeps no more).
func sameEntry(l, u *node) (bool, error) {
	ls, us := &l.st, &u.st
	if ls.Mode != us.Mode || ls.Uid != us.Uid || ls.Gid != us.Gid || ls.Rdev != us.Rdev {
		return false, nil
	}
	lx, err := l.xattrs()
	if err != nil {
		return false, err
	}
	ux, err := u.xattrs()
	if err != nil {
		return false, err
	}
	if lx["security.capability"] != ux["security.capability"] {
		return false, nil
	}
	if u.isDir() {
		return true, nil
	}
	if ls.Size != us.Size || ls.Mtim.Sec != us.Mtim.Sec {
		return false, nil
	}
	if ls.Mtim.Nsec != us.Mtim.Nsec {
		return false, nil
	}
	if ls.Mtim.Nsec != 0 {
		return true, nil
	}
	switch {
	case u.isSymlink():
		lt, err := l.readlink()
		if err != nil {
			return false, err
		}
		ut, err := u.readlink()
		return lt == ut, err
	case u.isReg() && us.Size > 0:
		return sameContent(l, u)
	}
	return true, nil
}

func sameContent(l, u *node) (bool, error) {
	lf, err := l.reopen(0)
	if err != nil {
		return false, err
	}
	defer lf.Close()
	uf, err := u.reopen(0)
	if err != nil {
		return false, err
	}
	defer uf.Close()
	lb, ub := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		ln, lerr := io.ReadFull(lf, lb)
		un, uerr := io.ReadFull(uf, ub)
		if ln != un || !bytes.Equal(lb[:ln], ub[:un]) {
			return false, nil
		}
		if lerr == io.EOF || lerr == io.ErrUnexpectedEOF {
			return uerr == io.EOF || uerr == io.ErrUnexpectedEOF, nil
		}
		if lerr != nil {
			return false, lerr
		}
		if uerr != nil {
			return false, uerr
		}
	}
}

// CheckPatterns checks, for every removed path (a deletion or a replaced
// directory) that is not UTF-8, that its pattern matches nothing but itself
// in root, the container's filesystem as it is now: a pattern that also
// matched a file the container kept would remove that file from the image.
// It names the first such path and what its pattern would also remove. The
// tree is searched by directory descriptors, following no symlink; a
// symlink that a wildcard matches counts as a match, since BuildKit might
// follow it.
func CheckPatterns(root string, removed []string) error {
	var rn *node
	for _, p := range removed {
		pat, ok := PathPattern(p)
		if !ok {
			continue
		}
		if rn == nil {
			f, n, err := rootNode(root)
			if err != nil {
				return err
			}
			defer f.Close()
			rn = n
		}
		p = strings.Trim(p, "/")
		pat = strings.Trim(pat, "/")
		other, err := matchOther(rn, strings.Split(pat, "/"), strings.Split(p, "/"))
		if err != nil {
			return errors.Wrapf(describe(err), "checking the removal of %q", "/"+p)
		}
		if other != "" {
			return errors.Errorf("cannot commit the removal of %q: its name is not UTF-8, and the pattern BuildKit would remove it by (%s) also matches %q, which the container kept",
				"/"+p, "/"+pat, "/"+other)
		}
	}
	return nil
}

// matchOther returns a path below dir that matches the pattern components
// pat and is not the path real (nil: any match counts), or "".
func matchOther(dir *node, pat, real []string) (string, error) {
	names, err := dir.names()
	if err != nil {
		return "", err
	}
	for _, name := range names {
		if ok, _ := path.Match(pat[0], name); !ok {
			continue
		}
		own := len(real) > 0 && name == real[0]
		rel := joinRel(dir.rel, name)
		if len(pat) == 1 {
			if !own {
				return rel, nil
			}
			continue
		}
		n, err := openNode(dir.fd, name, rel)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return "", err
		}
		if n.isSymlink() && !own {
			n.close()
			return rel, nil
		}
		if !n.isDir() {
			n.close()
			continue
		}
		var rest []string
		if own {
			rest = real[1:]
		}
		other, err := matchOther(n, pat[1:], rest)
		n.close()
		if other != "" || err != nil {
			return other, err
		}
	}
	return "", nil
}

// FromTree adds the whole tree at root — a volume's data — to the change
// set at the container path at, its mount point: the directory itself,
// with root's owner, mode and times, replacing what the image holds there
// (the container sees only the mount), and everything below it, walked by
// directory descriptors as the other readers walk. A file (a file's bind
// mount) is added alone. Only a staged change set (Create) takes it: a
// streamed one reads its contents from one tree.
func FromTree(ctx context.Context, root, at string, w *Writer) error {
	if _, ok := w.sink.(*stage); !ok {
		return errors.Errorf("%s: a tree of its own is added only to a staged change set", at)
	}
	rel := strings.Trim(path.Clean("/"+at), "/")
	if rel == "" {
		return errors.Errorf("%q: a tree cannot be added at the root", at)
	}
	var n *node
	f, err := openRoot(root)
	if errors.Is(err, unix.ENOTDIR) {
		// A file: open it by its parent.
		dir, err := openRoot(path.Dir(root))
		if err != nil {
			return err
		}
		defer dir.Close()
		if n, err = openNode(int(dir.Fd()), path.Base(root), rel); err != nil {
			return errors.Wrapf(describe(err), "reading %s", root)
		}
		defer n.close()
		if skip, _ := w.excluded(rel, false); skip {
			return nil
		}
		return w.add(n, nil)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	n = &node{fd: int(f.Fd()), rel: rel}
	if err := unix.Fstat(n.fd, &n.st); err != nil {
		return err
	}
	d := &differ{w: w}
	skip, descend := w.excluded(rel, true)
	switch {
	case skip && !descend:
		return nil
	case skip:
		return d.dir(ctx, nil, n, []*pending{{n: n, written: true}})
	}
	xattrs, err := n.xattrs()
	if err != nil {
		return errors.Wrapf(err, "reading %s", root)
	}
	if err := w.Opaque(rel); err != nil {
		return err
	}
	if err := w.add(n, xattrs); err != nil {
		return err
	}
	return d.dir(ctx, nil, n, nil)
}
