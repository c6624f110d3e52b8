package changeset

import (
	"archive/tar"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	archive "github.com/moby/go-archive"
	"github.com/moby/patternmatcher"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// Limits of a change set. Each fails the read as soon as it is passed, with
// a message that names the number and what to do instead.
const (
	// MaxHoles is the most all sparse files together may have in holes:
	// layer tars store a hole as zeros, so more is refused rather than
	// blown up.
	MaxHoles = 1 << 30
	// MaxEntries is the most entries a change set may hold.
	MaxEntries = 10_000_000
	// MaxRemovalBytes bounds the deletions and replaced directories: each
	// travels in the LLB definition, and BuildKit takes definitions of at
	// most 16 MiB. A removal costs its path plus RemovalOverhead bytes.
	MaxRemovalBytes = 14 << 20
	// RemovalOverhead is what one removal adds to the LLB definition
	// besides its path (measured in the llb package's tests).
	RemovalOverhead = 40
)

// HeaderName is the name of the PAX global header every change-set tar
// starts with. A fixed first header keeps BuildKit's archive sniffing from
// taking the tar for a compressed stream whatever the container's first
// file is called (a top-level "BZh..." reads as bzip2), and its records
// (see Create) make the tar's checksum, and so BuildKit's cache key,
// depend on how the layer is to be written.
const HeaderName = "commit-frontend.changeset"

// Writer is what the readers (FromUpperdir, FromDiff) write a change set
// into: it decides what goes in — exclude patterns, names a layer cannot
// hold, hard links, the limits — and counts it, and hands every entry and
// the removals to its sink, which makes the change set something the
// session can carry: a staged directory (Create) or a plan streamed later
// (Stream).
type Writer struct {
	sink         sink
	removals     removals
	removalBytes int
	holes        int64
	m            Manifest
	links        map[inode]string
	exclude      *patternmatcher.PatternMatcher
	// patterns are the exclude patterns that leave paths out, each with
	// a matcher of its own, to tell which excluded nothing.
	patterns []*excludePattern
	// whiteoutNames are the paths left out for a name a layer would read
	// as a deletion.
	whiteoutNames []string
	// exactLinkTimes leaves hard-linked files' mtimes as they are
	// (ExactLinkTimes).
	exactLinkTimes bool
	// scan looks for credentials (ScanSecrets); secrets are those found.
	scan    bool
	secrets []Secret
}

// A sink receives what a Writer accepts.
type sink interface {
	// from is told the directory the entries are read from; a sink that
	// reads contents after the walk keeps it and returns true, else the
	// reader closes it when the walk ends.
	from(root *os.File) bool
	// entry takes one entry. A regular file's h.Size bytes of contents
	// come from n, the inode the walk found, or, for an entry not read
	// from a tree (n nil), from r.
	entry(h *tar.Header, n *node, r io.Reader) error
	// close ends the change set: m is its manifest (the sink sets
	// TarSize), rm its removals.
	close(m *Manifest, rm removals) error
	// abort drops what the sink holds or wrote.
	abort()
}

// removals are a change set's deletions and replaced directories, in the
// order written, and their encoding (the whiteouts file).
type removals struct {
	deleted, opaque []string
	encoded         []byte
}

// newWriter starts a change set written into s.
func newWriter(s sink) *Writer {
	return &Writer{sink: s, m: Manifest{Version: Version}, links: map[inode]string{}}
}

// globalHeader is the change set's first header: HeaderName, the format
// version, and records (see Create).
func globalHeader(records map[string]string) *tar.Header {
	pax := map[string]string{"COMMIT_FRONTEND.version": strconv.Itoa(Version)}
	for k, v := range records {
		pax["COMMIT_FRONTEND."+k] = v
	}
	return &tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: HeaderName, PAXRecords: pax, Format: tar.FormatPAX}
}

// excludePattern is one pattern that leaves paths out.
type excludePattern struct {
	text string
	pm   *patternmatcher.PatternMatcher
	used bool
}

// Exclude makes the readers leave out the paths that match patterns
// (.dockerignore syntax on container paths, absolute or not: "/var/cache"
// and "var/cache" are the same path; "**/*.pyc", "!keep"): such a path is
// neither added nor removed, and counted.
func (w *Writer) Exclude(patterns []string) error {
	if len(patterns) == 0 {
		return nil
	}
	norm := make([]string, 0, len(patterns))
	for _, p := range patterns {
		body, neg := strings.CutPrefix(p, "!")
		// Container paths are absolute; the matcher's are relative to
		// the root, as .dockerignore's are once docker strips the "/".
		body = strings.TrimLeft(path.Clean("/"+strings.TrimSpace(body)), "/")
		if body == "" {
			return errors.Errorf("--exclude %q: names the whole filesystem", p)
		}
		if neg {
			body = "!" + body
		} else {
			pm, err := patternmatcher.New([]string{body})
			if err != nil {
				return errors.Wrapf(err, "--exclude %q", p)
			}
			w.patterns = append(w.patterns, &excludePattern{text: p, pm: pm})
		}
		norm = append(norm, body)
	}
	pm, err := patternmatcher.New(norm)
	if err != nil {
		return errors.Wrap(err, "--exclude")
	}
	w.exclude = pm
	return nil
}

// ExactLinkTimes keeps the mtimes of hard-linked files as they are, for a
// layer the walking differ computes: it sees a base file that gained a link
// as unchanged and writes it as a link to the new name, as docker commit
// does. Without it every name of a hard-linked file gets one nanosecond
// more, so that BuildKit's overlay differ, which does not look at links,
// keeps a link to a base file at all.
func (w *Writer) ExactLinkTimes() {
	w.exactLinkTimes = true
}

// UnusedExcludes returns the exclude patterns that left nothing out.
func (w *Writer) UnusedExcludes() []string {
	var out []string
	for _, p := range w.patterns {
		if !p.used {
			out = append(out, p.text)
		}
	}
	return out
}

// WhiteoutNames returns the paths left out because their names start
// with ".wh.": in a layer such a name is a deletion of the name after it
// (".wh.passwd" would delete passwd), so no layer can hold it.
func (w *Writer) WhiteoutNames() []string {
	return w.whiteoutNames
}

// excluded tells whether rel is left out: a name a layer would read as a
// deletion, or a path the exclude patterns match. A directory that
// matches is left out whole unless a pattern with "!" may bring back
// something below it.
func (w *Writer) excluded(rel string, dir bool) (skip, descend bool) {
	if strings.HasPrefix(path.Base(rel), archive.WhiteoutPrefix) {
		w.whiteoutNames = append(w.whiteoutNames, "/"+rel)
		w.m.WhiteoutNames++
		return true, false
	}
	if w.exclude == nil {
		return false, true
	}
	m, _ := w.exclude.MatchesOrParentMatches(rel)
	if !m {
		return false, true
	}
	for _, p := range w.patterns {
		if !p.used {
			if hit, _ := p.pm.MatchesOrParentMatches(rel); hit {
				p.used = true
			}
		}
	}
	w.m.Excluded++
	return true, dir && w.exclude.Exclusions()
}

type inode struct{ dev, ino uint64 }

// WriteEntry adds a tar entry whose contents (for a regular file) are read
// from r. Only a staged change set (Create) takes contents that are not
// read from a tree.
func (w *Writer) WriteEntry(h *tar.Header, r io.Reader) error {
	return w.write(h, nil, r)
}

// write hands one entry to the sink, counted and named as a layer names it.
func (w *Writer) write(h *tar.Header, n *node, r io.Reader) error {
	if w.m.Entries >= MaxEntries {
		return errors.Errorf("the change set holds more than %d entries, more than a commit takes; commit fewer files at a time or archive them in the container", MaxEntries)
	}
	h.Name = cleanName(h.Name, h.Typeflag == tar.TypeDir)
	if h.Typeflag == tar.TypeLink {
		h.Linkname = cleanName(h.Linkname, false)
	}
	if err := w.sink.entry(h, n, r); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeReg {
		w.m.Bytes += h.Size
	}
	w.m.Entries++
	return nil
}

// add writes the entry n with its full metadata: mode, owner, times, link
// target, device numbers, extended attributes (given for directories,
// read here for files), and hard links to an entry written before. The
// contents of a regular file are read from the inode n holds, and it must
// not change size while it is read.
func (w *Writer) add(n *node, xattrs map[string]string) error {
	if len(n.rel) >= unix.PathMax {
		p := n.rel[:60] + "..." + n.rel[len(n.rel)-60:]
		return errors.Errorf("the container holds a path longer than the kernel lets a path be named (PATH_MAX, %d bytes), which cannot be committed: %q (%d bytes)", unix.PathMax, p, len(n.rel))
	}
	st := &n.st
	h := &tar.Header{
		Name:    n.rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
		Format:  tar.FormatUnknown,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		h.Typeflag = tar.TypeDir
	case unix.S_IFREG:
		h.Typeflag = tar.TypeReg
		h.Size = st.Size
	case unix.S_IFLNK:
		h.Typeflag = tar.TypeSymlink
		link, err := n.readlink()
		if err != nil {
			return errors.Wrapf(err, "change set: %q", n.rel)
		}
		h.Linkname = link
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor = int64(unix.Major(st.Rdev))
		h.Devminor = int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		return errors.Errorf("change set: %q has a file type a layer cannot hold (mode %o)", n.rel, st.Mode)
	}
	if h.Typeflag == tar.TypeReg {
		var err error
		if xattrs, err = n.xattrs(); err != nil {
			return errors.Wrapf(err, "change set: %q", n.rel)
		}
		holes := st.Size - st.Blocks*512
		if holes > MaxHoles {
			return errors.Errorf("%q is a sparse file of %d bytes with %d allocated: a layer cannot store holes, it would carry %d bytes of zeros; files with more than %d bytes of holes in all are refused: remove or truncate it in the container first", n.rel, h.Size, st.Blocks*512, holes, int64(MaxHoles))
		}
		if holes > 0 {
			if w.holes += holes; w.holes > MaxHoles {
				return errors.Errorf("the container's sparse files have %d bytes of holes in all (reached at %q): a layer stores holes as zeros, and more than %d bytes of them are refused; remove or truncate the large sparse files in the container first", w.holes, n.rel, int64(MaxHoles))
			}
		}
	}
	for k, v := range xattrs {
		if w.overlayXattr(k) {
			continue
		}
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	if h.Typeflag == tar.TypeReg && w.scan {
		w.scanFile(n, n.rel, h.Size)
	}
	if h.Typeflag == tar.TypeReg && st.Nlink > 1 {
		key := inode{st.Dev, st.Ino}
		// A file linked to a file of the base image may equal it in
		// everything but its link count, and BuildKit's overlay differ
		// would then leave it out of the layer, turning the link into a
		// copy. One nanosecond on the mtime of every name of the file
		// (extracting a link sets the mtime again) makes the differ see
		// it; the layer writer keeps mtimes to the second, so the image
		// does not.
		if !w.exactLinkTimes {
			h.ModTime = h.ModTime.Add(time.Nanosecond)
		}
		h.Format = tar.FormatPAX
		if first, ok := w.links[key]; ok {
			h.Typeflag = tar.TypeLink
			h.Linkname = first
			h.Size = 0
			return w.write(h, nil, nil)
		}
		w.links[key] = n.rel
	}
	return w.write(h, n, nil)
}

// checkSize fails when the file behind f holds more than size bytes now.
func checkSize(f *os.File, n *node, size int64) error {
	var one [1]byte
	k, _ := f.Read(one[:])
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return errors.Wrapf(err, "change set: %q", n.rel)
	}
	if k > 0 || st.Size != size {
		return errors.Errorf("%q changed size while being read (%d bytes, then %d): pause the container (--pause) or commit it when it is not writing", n.rel, size, st.Size)
	}
	return nil
}

// overlayXattr tells whether k is named like one of overlayfs' own
// attributes. Those of the mount describe the upper directory, not the
// container's files; and the others (user.overlay.* on a rootful mount,
// set by the container) would be read as marks by BuildKit's overlay
// differ once extracted into its snapshot. No layer keeps either.
func (w *Writer) overlayXattr(k string) bool {
	return strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.")
}

// Delete records that path was deleted.
func (w *Writer) Delete(p string) error {
	return w.remove(Deleted, p)
}

// Opaque records that the directory p replaces the one below it.
func (w *Writer) Opaque(p string) error {
	return w.remove(Opaque, p)
}

func (w *Writer) remove(kind byte, p string) error {
	p = cleanName(p, false)
	w.removalBytes += len(p) + RemovalOverhead
	if w.removalBytes > MaxRemovalBytes {
		return errors.Errorf("the container removed more than %d paths (reached at %q): each removal travels in BuildKit's LLB definition, which holds at most 16 MiB; remove whole directories rather than the files in them, or commit the removals in smaller steps", w.m.Whiteouts, p)
	}
	w.removals.encoded = AppendWhiteout(w.removals.encoded, kind, p)
	if kind == Opaque {
		w.removals.opaque = append(w.removals.opaque, p)
	} else {
		w.removals.deleted = append(w.removals.deleted, p)
	}
	w.m.Whiteouts++
	return nil
}

// Skip records an entry a layer cannot hold and that is left out, as
// docker and containerd leave it out: a unix socket.
func (w *Writer) Skip() {
	w.m.Sockets++
}

// Close finishes the change set and returns its manifest.
func (w *Writer) Close() (*Manifest, error) {
	if err := w.sink.close(&w.m, w.removals); err != nil {
		return nil, err
	}
	m := w.m
	return &m, nil
}

// Abort drops what the writer wrote or holds.
func (w *Writer) Abort() {
	w.sink.abort()
}

// cleanName makes a path relative to the root, without "..", with a
// trailing slash for directories.
func cleanName(p string, dir bool) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if dir && p != "" {
		p += "/"
	}
	return p
}

// Removals returns the paths the change set removes: deletions and
// replaced directories.
func (w *Writer) Removals() []string {
	return append(slices.Clone(w.removals.deleted), w.removals.opaque...)
}
