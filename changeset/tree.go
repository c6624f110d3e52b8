package changeset

import (
	"archive/tar"
	"context"
	"io"
	gofs "io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil"
	"github.com/tonistiigi/fsutil/types"
)

// A streamed change set can also cross the session as the tree it
// describes (TreeFS): every entry as itself, with its owner, mode, times,
// links and device numbers, and every deletion as a whiteout, the 0/0
// character device overlayfs writes. buildkitd then receives the files
// where a snapshot needs them, and no tar is extracted: one pass less
// over the changed bytes. What such a transfer cannot carry (TreeOK says
// what), the tar carries.

// capabilityXattr is the one extended attribute layers keep; the session's
// file transfer sets it before the owner, and a chown drops it.
const capabilityXattr = "security.capability"

// TreeOK reports why the change set cannot cross the session as a tree,
// or nil when it can: it must have at least one
// change, no replaced directory (a transferred directory cannot say it
// hides the one below), no name that is not UTF-8 (the session's messages
// are protocol buffers), no file capabilities (the session's transfer sets
// them before the owner, and a chown drops them), and every entry's parent
// directory in the change set.
func (p *Plan) TreeOK() error { return p.check(false, false) }

// UpperOK reports why the change set cannot be written as the upper
// directory of an overlay snapshot on its base (WriteUpper), or nil when it
// can: what TreeOK asks, but for replaced directories, which the upper
// directory marks opaque as overlayfs marks them, and for names and file
// capabilities, which a write by this process keeps (it sets extended
// attributes after the owner) and the snapshot's layer takes as they are.
func (p *Plan) UpperOK() error { return p.check(true, true) }

// check is TreeOK, with replaced directories where replaced, and with any
// names and file capabilities where local.
func (p *Plan) check(replaced, local bool) error {
	if len(p.rm.opaque) > 0 && !replaced {
		return errors.Errorf("%q replaces a directory", p.rm.opaque[0])
	}
	if len(p.entries) == 0 && len(p.rm.deleted) == 0 {
		return errors.New("nothing changed")
	}
	dirs := map[string]bool{"": true}
	for _, e := range p.entries {
		name := strings.TrimSuffix(e.h.Name, "/")
		if !local && (!utf8.ValidString(name) || !utf8.ValidString(e.h.Linkname)) {
			return errors.Errorf("%q is not UTF-8", name)
		}
		if _, ok := e.h.PAXRecords["SCHILY.xattr."+capabilityXattr]; ok && !local {
			return errors.Errorf("%q has file capabilities", name)
		}
		if e.h.Typeflag == tar.TypeDir {
			dirs[name] = true
		}
	}
	for _, e := range p.entries {
		name := strings.TrimSuffix(e.h.Name, "/")
		if !dirs[parentDir(name)] {
			return errors.Errorf("%q comes without its directory", name)
		}
	}
	for _, d := range p.rm.deleted {
		d = strings.TrimSuffix(d, "/")
		if !local && !utf8.ValidString(d) {
			return errors.Errorf("removed %q is not UTF-8", d)
		}
		if !dirs[parentDir(d)] {
			return errors.Errorf("removed %q comes without its directory", d)
		}
	}
	for _, d := range p.rm.opaque {
		if !dirs[strings.TrimSuffix(d, "/")] {
			return errors.Errorf("replaced directory %q is not in the change set", d)
		}
	}
	return nil
}

func parentDir(p string) string {
	d := path.Dir(p)
	if d == "." {
		return ""
	}
	return d
}

// treeEntry is one entry of the tree: its stat, and for a regular file
// with contents the planned entry its contents come from.
type treeEntry struct {
	st *types.Stat
	e  *planned
	// link marks a hard link to another entry (st.Linkname).
	link bool
	// opaque marks a directory that replaces the base's (WriteUpper).
	opaque bool
	// r, when set, holds a regular file's contents (a staged change set's
	// tar, WriteStagedUpper).
	r io.Reader
}

// TreeFS is the streamed change set as the session's view of the tree it
// describes; TreeOK must accept the change set. done is called once, when
// every regular file has been read to its end or a read failed (the
// reader then sees the file end short, and the caller must fail the solve
// with done's error).
func (p *Plan) TreeFS(ctx context.Context, done func(error)) (fsutil.FS, error) {
	t, err := p.tree(p.TreeOK)
	if err != nil {
		return nil, err
	}
	t.ctx, t.reporter = ctx, reporter{done: done}
	if t.pending == 0 {
		t.finish(nil)
	}
	return t, nil
}

// tree lists the entries of the tree the change set describes, in the
// transfer's walk order, each hard link after the name that carries its
// file, once ok (TreeOK or UpperOK) accepts it.
func (p *Plan) tree(ok func() error) (*treeFS, error) {
	if err := ok(); err != nil {
		return nil, err
	}
	t := &treeFS{p: p, byPath: map[string]*treeEntry{}}
	for i := range p.entries {
		e := &p.entries[i]
		st, err := treeStat(e.h)
		if err != nil {
			return nil, err
		}
		te := &treeEntry{st: st, link: e.h.Typeflag == tar.TypeLink}
		if e.h.Typeflag == tar.TypeReg && e.h.Size > 0 {
			te.e = e
			t.pending++
		}
		t.add(te)
	}
	for _, d := range p.rm.deleted {
		d = strings.TrimSuffix(d, "/")
		if _, ok := t.byPath[d]; ok {
			return nil, errors.Errorf("change set: %q is both changed and removed", d)
		}
		t.add(&treeEntry{st: &types.Stat{Path: d, Mode: uint32(os.ModeDevice | os.ModeCharDevice)}})
	}
	for _, d := range p.rm.opaque {
		t.byPath[strings.TrimSuffix(d, "/")].opaque = true
	}
	// The transfer wants a depth-first walk, siblings in name order.
	slices.SortFunc(t.entries, func(a, b *treeEntry) int { return fsutil.ComparePath(a.st.Path, b.st.Path) })
	t.relink()
	return t, nil
}

// relink makes the first name of every hard-linked file, in walk order,
// the one that carries it, and the others links to it: the transfer
// wants a link's target before the link.
func (t *treeFS) relink() {
	first := map[string]*treeEntry{} // the tar's first name → the walk's
	for _, e := range t.entries {
		if !e.link {
			continue
		}
		if p, ok := first[e.st.Linkname]; ok {
			e.st.Linkname = p.st.Path
			continue
		}
		target := t.byPath[e.st.Linkname]
		if target == nil {
			continue // TreeOK saw to it; the transfer will refuse it
		}
		if fsutil.ComparePath(target.st.Path, e.st.Path) < 0 {
			first[e.st.Linkname] = target
			continue
		}
		// The link comes first: it takes the file, the file becomes a link.
		old := target.st.Path
		fileStat, linkStat := target.st.Clone(), e.st.Clone()
		fileStat.Path, linkStat.Path, linkStat.Linkname = e.st.Path, old, e.st.Path
		e.st, target.st = fileStat, linkStat
		e.e, target.e = target.e, nil
		e.link, target.link = false, true
		t.byPath[e.st.Path], t.byPath[old] = e, target
		first[old] = e
	}
}

// treeStat is the transfer's stat of a tar entry.
func treeStat(h *tar.Header) (*types.Stat, error) {
	name := strings.TrimSuffix(h.Name, "/")
	mode := h.FileInfo().Mode()
	st := &types.Stat{
		Path:    name,
		Mode:    uint32(mode),
		Uid:     uint32(h.Uid),
		Gid:     uint32(h.Gid),
		ModTime: h.ModTime.UnixNano(),
	}
	switch h.Typeflag {
	case tar.TypeReg:
		st.Size = h.Size
	case tar.TypeLink:
		st.Linkname = strings.TrimSuffix(h.Linkname, "/")
		st.Mode = uint32(mode &^ gofs.ModeType)
	case tar.TypeSymlink:
		st.Linkname = h.Linkname
	case tar.TypeChar, tar.TypeBlock:
		st.Devmajor, st.Devminor = h.Devmajor, h.Devminor
	case tar.TypeDir, tar.TypeFifo:
	default:
		return nil, errors.Errorf("change set: %q: entry type %q cannot cross as a tree", name, h.Typeflag)
	}
	for k, v := range h.PAXRecords {
		if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if st.Xattrs == nil {
				st.Xattrs = map[string][]byte{}
			}
			st.Xattrs[x] = []byte(v)
		}
	}
	return st, nil
}

type treeFS struct {
	reporter
	p       *Plan
	ctx     context.Context
	entries []*treeEntry
	byPath  map[string]*treeEntry

	mu      sync.Mutex
	pending int
	read    map[string]bool
	failed  bool
}

func (t *treeFS) add(e *treeEntry) {
	t.entries = append(t.entries, e)
	t.byPath[e.st.Path] = e
}

func (t *treeFS) Walk(ctx context.Context, target string, fn gofs.WalkDirFunc) error {
	target = strings.Trim(target, "/")
	for _, e := range t.entries {
		if target != "" && e.st.Path != target && !strings.HasPrefix(e.st.Path, target+"/") {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e.st.Path, &fsutil.DirEntryInfo{Stat: e.st}, nil); err != nil {
			return err
		}
	}
	return nil
}

func (t *treeFS) Open(p string) (io.ReadCloser, error) {
	e, ok := t.byPath[strings.Trim(p, "/")]
	if !ok || e.e == nil {
		if ok && e.st.Size == 0 && os.FileMode(e.st.Mode).IsRegular() {
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
	}
	t.mu.Lock()
	if t.read == nil {
		t.read = map[string]bool{}
	}
	again := t.read[e.st.Path]
	t.read[e.st.Path] = true
	t.mu.Unlock()
	if again {
		// The contents were read once, from a container that may have
		// gone on since: a second copy could differ, so there is none.
		err := errors.Errorf("change set: %q was asked for a second time", e.st.Path)
		t.fail(err)
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		err := t.p.copyFile(pw, *e.e, make([]byte, 1<<20))
		if err == nil {
			err = t.ctx.Err()
		}
		if err != nil {
			t.fail(err)
		} else {
			t.mu.Lock()
			t.pending--
			last := t.pending == 0 && !t.failed
			t.mu.Unlock()
			if last {
				t.finish(nil)
			}
		}
		// As for the tar: the error goes to done, and the file ends short,
		// which fails the transfer on buildkitd's side.
		pw.Close()
	}()
	return pr, nil
}

func (t *treeFS) fail(err error) {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
	t.finish(err)
}
