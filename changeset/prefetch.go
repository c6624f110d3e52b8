package changeset

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// A Prefetch is the contents of a change set's regular files copied aside
// while the container runs, each with the inode, size and ctime it was
// copied from: what a brief pause need not read again (UsePrefetched).
type Prefetch struct {
	dir   string
	files map[inode]prefetched
	// Bytes is what was copied.
	Bytes int64
}

type prefetched struct {
	path  string
	size  int64
	ctime unix.Timespec
}

// PrefetchMargin is how long before a file's copy its last change must
// be for the copy to be trusted: a kernel stamps ctimes from a clock that
// moves by ticks, and a write in the tick of the copy could leave the
// ctime as it was.
const PrefetchMargin = 100 * time.Millisecond

// Prefetch copies the contents of the plan's regular files into dir while
// the container runs. A file that changed within PrefetchMargin before
// its copy, or changes while it is copied, is left out: the pause reads
// it. The plan itself is read no further.
func (p *Plan) Prefetch(ctx context.Context, dir string) (*Prefetch, error) {
	pf := &Prefetch{dir: dir, files: map[inode]prefetched{}}
	buf := make([]byte, 1<<20)
	for _, e := range p.entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if e.h.Typeflag != tar.TypeReg || e.h.Size == 0 {
			continue
		}
		start := time.Now()
		if time.Unix(e.ctime.Unix()).After(start.Add(-PrefetchMargin)) {
			continue
		}
		dst := filepath.Join(dir, strconv.FormatUint(e.dev, 16)+"-"+strconv.FormatUint(e.ino, 10))
		if err := p.copyTo(dst, e, buf); err != nil {
			os.Remove(dst)
			if errors.Is(err, errCopy) {
				return nil, err
			}
			// Changed, or gone, as the container runs: the pause reads it.
			continue
		}
		pf.files[inode{e.dev, e.ino}] = prefetched{path: dst, size: e.h.Size, ctime: e.ctime}
		pf.Bytes += e.h.Size
	}
	return pf, nil
}

// errCopy marks a failure to write a copy (no space), not to read the
// container.
var errCopy = errors.New("writing a copy of the changes")

// copyTo copies the contents of e into a new file dst — file to file, so
// that the kernel copies (copy_file_range: a reflink where the filesystem
// shares blocks) — and fails with errChanged when the file's ctime moved
// meanwhile; a failure to make or fill dst is errCopy.
func (p *Plan) copyTo(dst string, e planned, buf []byte) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return errors.Wrapf(errCopy, "%v", err)
	}
	err = p.copyFile(f, e, buf)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EIO) {
		err = errors.Wrapf(errCopy, "%v", err)
	}
	if err != nil {
		return err
	}
	// The contents read are the ones of that ctime only if it did not
	// move while they were read.
	fd, err := openBeneath(int(p.root.Fd()), e.h.Name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return errChanged
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Ino != e.ino || st.Dev != e.dev || st.Ctim != e.ctime || st.Size != e.h.Size {
		return errChanged
	}
	return nil
}

// UsePrefetched makes the plan read each regular file's contents from pf
// where pf copied that inode with the same size and ctime and the file is
// not among dirty (container paths, /etc/passwd: the files the container
// maps writable, whose writes need not move a ctime); every other file is
// copied into pf's directory now. After it the plan reads nothing more of
// the container, which may go on. It returns the bytes taken from pf and
// the bytes copied now.
func (p *Plan) UsePrefetched(ctx context.Context, pf *Prefetch, dirty map[string]bool) (reused, copied int64, err error) {
	buf := make([]byte, 1<<20)
	for i := range p.entries {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		e := &p.entries[i]
		if e.h.Typeflag != tar.TypeReg || e.h.Size == 0 {
			continue
		}
		got, ok := pf.files[inode{e.dev, e.ino}]
		if ok && got.size == e.h.Size && got.ctime == e.ctime && !dirty["/"+e.h.Name] {
			e.copy = got.path
			reused += e.h.Size
			continue
		}
		dst := filepath.Join(pf.dir, "now-"+strconv.Itoa(i))
		if err := p.copyTo(dst, *e, buf); err != nil {
			return 0, 0, err
		}
		e.copy = dst
		copied += e.h.Size
	}
	return reused, copied, nil
}

// copyCopy writes e's contents from its private copy.
func copyCopy(out io.Writer, e planned, buf []byte) error {
	f, err := os.Open(e.copy)
	if err != nil {
		return errors.Wrapf(err, "change set: %q", e.h.Name)
	}
	defer f.Close()
	k, err := io.CopyBuffer(out, io.LimitReader(f, e.h.Size), buf)
	if err != nil {
		return errors.Wrapf(err, "change set: %q", e.h.Name)
	}
	if k != e.h.Size {
		return errors.Errorf("change set: %q: its copy holds %d of %d bytes", e.h.Name, k, e.h.Size)
	}
	return nil
}
