package changeset

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// MaxHoles is the most a sparse file may have in holes: layer tars store a
// hole as zeros, so a larger one is refused rather than blown up.
const MaxHoles = 1 << 30

// Writer writes a change-set context directory.
type Writer struct {
	dir   string
	f     *os.File
	tw    *tar.Writer
	wh    []byte
	m     Manifest
	links map[inode]string
	buf   []byte
}

type inode struct{ dev, ino uint64 }

// Create starts a change set in dir, which must exist and be empty.
func Create(dir string) (*Writer, error) {
	f, err := os.OpenFile(filepath.Join(dir, TarFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, errors.Wrap(err, "creating the change set")
	}
	return &Writer{
		dir:   dir,
		f:     f,
		tw:    tar.NewWriter(f),
		m:     Manifest{Version: Version},
		links: map[inode]string{},
		buf:   make([]byte, 1<<20),
	}, nil
}

// WriteEntry adds a tar entry whose content (for regular files) is read from r.
func (w *Writer) WriteEntry(h *tar.Header, r io.Reader) error {
	h.Name = cleanName(h.Name, h.Typeflag == tar.TypeDir)
	if h.Typeflag == tar.TypeLink {
		h.Linkname = cleanName(h.Linkname, false)
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
			return errors.Errorf("change set: %q changed size while being read (%d of %d bytes)", h.Name, n, h.Size)
		}
		w.m.Bytes += n
	}
	w.m.Entries++
	return nil
}

// AddPath adds the file at root/rel with its full metadata: mode, owner,
// times, link target, device numbers, extended attributes, and hard links
// to a path added before. Symlinks are never followed.
func (w *Writer) AddPath(root, rel string) error {
	full := filepath.Join(root, rel)
	fi, err := os.Lstat(full)
	if err != nil {
		return errors.Wrap(err, "change set")
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return errors.Errorf("change set: no stat for %s", full)
	}
	var link string
	if fi.Mode()&os.ModeSymlink != 0 {
		if link, err = os.Readlink(full); err != nil {
			return errors.Wrap(err, "change set")
		}
	}
	h, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return errors.Wrapf(err, "change set: %s", full)
	}
	h.Name = rel
	h.Uid, h.Gid = int(st.Uid), int(st.Gid)
	h.Uname, h.Gname = "", ""
	// Layer tars keep mtimes to the second (containerd's archive writer
	// truncates them), so the change set does too: a header that needs no
	// PAX records costs 512 bytes, not 1.5 KiB.
	h.ModTime = fi.ModTime().Truncate(time.Second)
	h.AccessTime, h.ChangeTime = time.Time{}, time.Time{}
	h.Format = tar.FormatUnknown
	if fi.Mode()&(os.ModeDevice|os.ModeCharDevice) != 0 {
		h.Devmajor = int64(unix.Major(uint64(st.Rdev)))
		h.Devminor = int64(unix.Minor(uint64(st.Rdev)))
	}
	if xattrs, err := readXattrs(full); err != nil {
		return err
	} else if len(xattrs) > 0 {
		h.PAXRecords = map[string]string{}
		for k, v := range xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
	}
	if h.Typeflag == tar.TypeReg {
		if holes := h.Size - st.Blocks*512; holes > MaxHoles {
			return errors.Errorf("%s is a sparse file of %d bytes with %d allocated: a layer cannot store holes, it would carry %d bytes of zeros; files with more than %d bytes of holes are refused", rel, h.Size, st.Blocks*512, holes, int64(MaxHoles))
		}
	}
	if h.Typeflag == tar.TypeReg && st.Nlink > 1 {
		key := inode{uint64(st.Dev), st.Ino}
		if first, ok := w.links[key]; ok {
			h.Typeflag = tar.TypeLink
			h.Linkname = first
			h.Size = 0
			return w.WriteEntry(h, nil)
		}
		w.links[key] = rel
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return w.WriteEntry(h, nil)
	}
	f, err := os.Open(full)
	if err != nil {
		return errors.Wrap(err, "change set")
	}
	defer f.Close()
	return w.WriteEntry(h, f)
}

// Delete records that path was deleted.
func (w *Writer) Delete(p string) {
	w.wh = AppendWhiteout(w.wh, Deleted, cleanName(p, false))
	w.m.Whiteouts++
}

// Opaque records that the directory p replaces the one below it.
func (w *Writer) Opaque(p string) {
	w.wh = AppendWhiteout(w.wh, Opaque, cleanName(p, false))
	w.m.Whiteouts++
}

// Close finishes the change set and returns its manifest.
func (w *Writer) Close() (*Manifest, error) {
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

// readXattrs returns the extended attributes of p (not following symlinks),
// except overlayfs' own trusted.overlay.* ones.
func readXattrs(p string) (map[string]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, errors.Wrapf(err, "listing xattrs of %s", p)
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, errors.Wrapf(err, "listing xattrs of %s", p)
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") {
			continue
		}
		v, err := getXattr(p, name)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func getXattr(p, name string) (string, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return "", errors.Wrapf(err, "reading xattr %s of %s", name, p)
	}
	buf := make([]byte, sz)
	if sz, err = unix.Lgetxattr(p, name, buf); err != nil {
		return "", errors.Wrapf(err, "reading xattr %s of %s", name, p)
	}
	return string(buf[:sz]), nil
}
