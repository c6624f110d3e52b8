package changeset

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	gofs "io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil"
	"github.com/tonistiigi/fsutil/types"
	"golang.org/x/sys/unix"
)

// A streamed change set is read twice: a first walk writes every tar
// header, the removals and the manifest, and no contents; the tar is then
// written while it crosses the session, each file's contents read from
// the inode the walk saw (it must be the same inode, with the same size).
// So no temp space follows the size of the change.

// planned is one entry of a streamed tar.
type planned struct {
	h *tar.Header
	// dev, ino and ctime are the regular file whose contents follow the
	// header, as the walk saw it: a file changed since has a new ctime.
	dev, ino uint64
	ctime    unix.Timespec
}

// plan is what a streaming Writer keeps of the walk.
type plan struct {
	records map[string]string
	entries []planned
	size    int64
	// root is the upper directory the contents are read from again.
	root *os.File
	// cur is the regular file add is writing, for WriteEntry.
	cur *node
}

// Stream starts a change set whose tar is written only when it is read
// (see Writer.FS). records are as for Create.
func Stream(records map[string]string) *Writer {
	w := &Writer{
		m:     Manifest{Version: Version},
		links: map[inode]string{},
		plan:  &plan{records: records},
	}
	w.plan.size = headerSize(globalHeader(records))
	return w
}

func globalHeader(records map[string]string) *tar.Header {
	pax := map[string]string{"COMMIT_FRONTEND.version": "1"}
	for k, v := range records {
		pax["COMMIT_FRONTEND."+k] = v
	}
	return &tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: HeaderName, PAXRecords: pax, Format: tar.FormatPAX}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// headerSize is how many bytes a tar writer writes for h, before contents
// (for an entry without contents, with its padding).
func headerSize(h *tar.Header) int64 {
	var c countWriter
	hc := *h
	tw := tar.NewWriter(&c)
	_ = tw.WriteHeader(&hc)
	if hc.Typeflag != tar.TypeReg || hc.Size == 0 {
		_ = tw.Flush()
	}
	return c.n
}

// planEntry records an entry of a streamed tar.
func (w *Writer) planEntry(h *tar.Header) {
	e := planned{h: h}
	if n := w.plan.cur; n != nil && h.Typeflag == tar.TypeReg {
		e.dev, e.ino, e.ctime = n.st.Dev, n.st.Ino, n.st.Ctim
	}
	w.plan.size += headerSize(h)
	if h.Typeflag == tar.TypeReg {
		w.plan.size += (h.Size + 511) &^ 511
		w.m.Bytes += h.Size
	}
	w.plan.entries = append(w.plan.entries, e)
	w.m.Entries++
}

// Release closes what a streamed change set holds of the tree.
func (w *Writer) Release() {
	if w.plan != nil && w.plan.root != nil {
		w.plan.root.Close()
		w.plan.root = nil
	}
}

// writeTar writes the streamed tar to out, reading each file again.
func (w *Writer) writeTar(ctx context.Context, out io.Writer) error {
	tw := tar.NewWriter(out)
	if err := tw.WriteHeader(globalHeader(w.plan.records)); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range w.plan.entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		h := *e.h
		if err := tw.WriteHeader(&h); err != nil {
			return errors.Wrapf(err, "change set: %q", h.Name)
		}
		if h.Typeflag != tar.TypeReg || h.Size == 0 {
			continue
		}
		if err := w.copyFile(tw, e, buf); err != nil {
			return err
		}
	}
	return tw.Close()
}

// copyFile writes the contents of a planned regular file: the same inode
// the walk saw, with the size it saw.
func (w *Writer) copyFile(out io.Writer, e planned, buf []byte) error {
	name := e.h.Name
	if w.plan.root == nil {
		return errors.Errorf("change set: %q: the tree is no longer open", name)
	}
	fd, err := openBeneath(int(w.plan.root.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		err = errChanged // moved or removed since the walk
	}
	if err != nil {
		return errors.Wrapf(describe(err), "%q", name)
	}
	n := &node{rel: name, fd: fd}
	defer n.close()
	if err := unix.Fstat(fd, &n.st); err != nil {
		return err
	}
	if n.st.Dev != e.dev || n.st.Ino != e.ino || n.st.Ctim != e.ctime || !n.isReg() {
		return errors.Wrapf(describe(errChanged), "%q", name)
	}
	f, err := n.reopen(0)
	if err != nil {
		return errors.Wrapf(describe(err), "%q", name)
	}
	defer f.Close()
	k, err := io.CopyBuffer(out, io.LimitReader(f, e.h.Size), buf)
	if err != nil {
		return errors.Wrapf(err, "change set: %q", name)
	}
	if k != e.h.Size {
		return errors.Errorf("%q shrank while being read (%d of %d bytes): pause the container (--pause) or commit it when it is not writing", name, k, e.h.Size)
	}
	return checkSize(f, n, e.h.Size)
}

// FS is the streamed change set as the session's view of a directory: the
// manifest, the removals, and a tar written while it is read. done is
// called once, when the tar has been read to its end or its writing
// failed; on failure the reader only sees the tar end short, and the
// caller must fail the solve with done's error. Call it after Close.
func (w *Writer) FS(ctx context.Context, done func(error)) fsutil.FS {
	dt, _ := json.Marshal(w.m)
	return &streamFS{w: w, ctx: ctx, manifest: dt, reporter: reporter{done: done}, mtime: time.Now().UnixNano()}
}

type streamFS struct {
	reporter
	w        *Writer
	ctx      context.Context
	manifest []byte
	opened   atomic.Bool
	// mtime is when this change set was read: it tells buildkitd that its
	// files are new, so that none is taken from an earlier transfer.
	mtime int64
}

// reporter tells done how a streamed transfer ended: a success once,
// every failure.
type reporter struct {
	done func(error)
	once sync.Once
}

func (r *reporter) finish(err error) {
	if r.done == nil {
		return
	}
	if err != nil {
		r.done(err)
		return
	}
	r.once.Do(func() { r.done(nil) })
}

func (s *streamFS) files() []*types.Stat {
	st := func(name string, size int64) *types.Stat {
		return &types.Stat{Path: name, Mode: 0o600, Size: size, ModTime: s.mtime}
	}
	return []*types.Stat{
		st(ManifestFile, int64(len(s.manifest))),
		st(TarFile, s.w.m.TarSize),
		st(WhiteoutFile, int64(len(s.w.wh))),
	}
}

func (s *streamFS) Walk(ctx context.Context, target string, fn gofs.WalkDirFunc) error {
	for _, st := range s.files() {
		if target != "" && target != "/" && target != st.Path {
			continue
		}
		if err := fn(st.Path, &fsutil.DirEntryInfo{Stat: st}, nil); err != nil {
			return err
		}
	}
	return nil
}

func (s *streamFS) Open(p string) (io.ReadCloser, error) {
	switch p {
	case ManifestFile:
		return io.NopCloser(bytes.NewReader(s.manifest)), nil
	case WhiteoutFile:
		return io.NopCloser(bytes.NewReader(s.w.wh)), nil
	case TarFile:
	default:
		return nil, &os.PathError{Op: "open", Path: p, Err: os.ErrNotExist}
	}
	if s.opened.Swap(true) {
		// The contents were read once, from a container that may have
		// gone on since: a second copy could differ, so there is none.
		err := errors.New("change set: the tar was asked for a second time")
		s.finish(err)
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		cw := &countWriter{}
		err := s.w.writeTar(s.ctx, io.MultiWriter(pw, cw))
		if err == nil && cw.n != s.w.m.TarSize {
			err = errors.Errorf("change set: the tar came to %d bytes, not the %d the walk counted", cw.n, s.w.m.TarSize)
		}
		s.finish(err)
		// The error goes to done, not to the reader: BuildKit's file
		// sender cannot end a transfer on a read error (it waits for the
		// receiver for ever), while a short file makes the extraction
		// fail and the solve end.
		pw.Close()
	}()
	return pr, nil
}
