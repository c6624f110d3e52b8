package changeset

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
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

// Writer writes a change-set context directory.
type Writer struct {
	dir          string
	f            *os.File
	tw           *tar.Writer
	wh           []byte
	removalBytes int
	holes        int64
	m            Manifest
	links        map[inode]string
	buf          []byte
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
	// plan, for a streamed change set (Stream), keeps the headers instead
	// of writing the tar.
	plan *plan
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

// Create starts a change set in dir, which must exist and be empty.
// records are written into the tar's first header; they change nothing
// that is extracted, only the tar's bytes.
func Create(dir string, records map[string]string) (*Writer, error) {
	f, err := os.OpenFile(filepath.Join(dir, TarFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, errors.Wrap(err, "creating the change set")
	}
	w := &Writer{
		dir:   dir,
		f:     f,
		tw:    tar.NewWriter(f),
		m:     Manifest{Version: Version},
		links: map[inode]string{},
		buf:   make([]byte, 1<<20),
	}
	pax := map[string]string{"COMMIT_FRONTEND.version": strconv.Itoa(Version)}
	for k, v := range records {
		pax["COMMIT_FRONTEND."+k] = v
	}
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: HeaderName, PAXRecords: pax, Format: tar.FormatPAX}); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, errors.Wrap(err, "creating the change set")
	}
	return w, nil
}

// WriteEntry adds a tar entry whose content (for regular files) is read from r.
func (w *Writer) WriteEntry(h *tar.Header, r io.Reader) error {
	if w.m.Entries >= MaxEntries {
		return errors.Errorf("the change set holds more than %d entries, more than a commit takes; commit fewer files at a time or archive them in the container", MaxEntries)
	}
	h.Name = cleanName(h.Name, h.Typeflag == tar.TypeDir)
	if h.Typeflag == tar.TypeLink {
		h.Linkname = cleanName(h.Linkname, false)
	}
	if w.plan != nil {
		w.planEntry(h)
		return nil
	}
	if err := w.tw.WriteHeader(h); err != nil {
		return errors.Wrapf(err, "change set: %q", h.Name)
	}
	if h.Typeflag == tar.TypeReg && h.Size > 0 {
		n, err := io.CopyBuffer(w.tw, io.LimitReader(r, h.Size), w.buf)
		if err != nil {
			return errors.Wrapf(err, "change set: %q", h.Name)
		}
		if n != h.Size {
			return errors.Errorf("%q shrank while being read (%d of %d bytes): pause the container (--pause) or commit it when it is not writing", h.Name, n, h.Size)
		}
		w.m.Bytes += n
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
	var data *os.File
	if h.Typeflag == tar.TypeReg {
		if w.plan == nil {
			f, err := n.reopen(0)
			if err != nil {
				return errors.Wrapf(err, "change set: %q", n.rel)
			}
			defer f.Close()
			data = f
		} else {
			// Streamed: the contents are read while the tar crosses the
			// session, from this same inode.
			w.plan.cur = n
			defer func() { w.plan.cur = nil }()
		}
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
			return w.WriteEntry(h, nil)
		}
		w.links[key] = n.rel
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 || data == nil {
		if data != nil {
			if err := checkSize(data, n, 0); err != nil {
				return err
			}
		}
		return w.WriteEntry(h, nil)
	}
	if err := w.WriteEntry(h, data); err != nil {
		return err
	}
	return checkSize(data, n, h.Size)
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
	w.wh = AppendWhiteout(w.wh, kind, p)
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
	if w.plan != nil {
		// A tar ends with two zero blocks.
		w.m.TarSize = w.plan.size + 1024
		m := w.m
		return &m, nil
	}
	if err := w.tw.Close(); err != nil {
		w.f.Close()
		return nil, err
	}
	if st, err := w.f.Stat(); err == nil {
		w.m.TarSize = st.Size()
	}
	if err := w.f.Close(); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(w.dir, WhiteoutFile), w.wh, 0o600); err != nil {
		return nil, err
	}
	dt, err := json.Marshal(w.m)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(w.dir, ManifestFile), dt, 0o600); err != nil {
		return nil, err
	}
	m := w.m
	return &m, nil
}

// Abort removes what the writer wrote.
func (w *Writer) Abort() {
	if w.plan != nil {
		w.Release()
		return
	}
	w.f.Close()
	for _, n := range []string{TarFile, WhiteoutFile, ManifestFile} {
		_ = os.Remove(filepath.Join(w.dir, n))
	}
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
	del, opq, _ := ParseWhiteouts(w.wh)
	return append(del, opq...)
}
