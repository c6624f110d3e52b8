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
	// copy, when set, is a private copy of the contents, taken while the
	// container was paused or proven unchanged since (UsePrefetched).
	copy string
	// multi marks a file the walk saw with more than one name.
	multi bool
}

// A Plan is a streamed change set: the walk (through the Writer Stream
// returns) keeps every header and the inode each file's contents are to
// be read from, and the contents are read only when a transport asks for
// them — TarFS, the change-set tar, or TreeFS, the tree it describes.
type Plan struct {
	records map[string]string
	entries []planned
	size    int64
	m       Manifest
	rm      removals
	// root is the upper directory the contents are read from again.
	root *os.File
	// shared marks a part of a plan (Split): root is the plan's, and
	// only the plan releases it. dirs are the directories a part holds.
	shared bool
	dirs   map[string]bool
}

// Stream starts a streamed change set: the Writer the readers write into,
// and the Plan the transports read from once it is closed. records are
// as for Create.
func Stream(records map[string]string) (*Writer, *Plan) {
	p := &Plan{records: records}
	p.size = headerSize(globalHeader(records))
	return newWriter(p), p
}

func (p *Plan) from(root *os.File) bool {
	p.root = root
	return true
}

func (p *Plan) entry(h *tar.Header, n *node, _ io.Reader) error {
	e := planned{h: h}
	if h.Typeflag == tar.TypeReg && h.Size > 0 {
		if n == nil {
			return errors.Errorf("change set: %q: a streamed change set reads contents only from the tree it walked", h.Name)
		}
		e.dev, e.ino, e.ctime, e.multi = n.st.Dev, n.st.Ino, n.st.Ctim, n.st.Nlink > 1
	}
	p.size += headerSize(h)
	if h.Typeflag == tar.TypeReg {
		p.size += (h.Size + 511) &^ 511
	}
	p.entries = append(p.entries, e)
	return nil
}

func (p *Plan) close(m *Manifest, rm removals) error {
	// A tar ends with two zero blocks.
	m.TarSize = p.size + 1024
	p.m, p.rm = *m, rm
	return nil
}

func (p *Plan) abort() { p.Release() }

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

// Release closes what the plan holds of the tree. The transports read
// nothing after it.
func (p *Plan) Release() {
	if p.root != nil && !p.shared {
		p.root.Close()
		p.root = nil
	}
}

// writeTar writes the streamed tar to out, reading each file again.
func (p *Plan) writeTar(ctx context.Context, out io.Writer) error {
	tw := tar.NewWriter(out)
	if err := tw.WriteHeader(globalHeader(p.records)); err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, e := range p.entries {
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
		if err := p.copyFile(tw, e, buf); err != nil {
			return err
		}
	}
	return tw.Close()
}

// copyFile writes the contents of a planned regular file: the same inode
// the walk saw, with the size it saw.
func (p *Plan) copyFile(out io.Writer, e planned, buf []byte) error {
	if e.copy != "" {
		return copyCopy(out, e, buf)
	}
	name := e.h.Name
	if p.root == nil {
		return errors.Errorf("change set: %q: the tree is no longer open", name)
	}
	fd, err := openBeneath(int(p.root.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC)
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

// TarFS is the streamed change set as the session's view of a change-set
// directory: the manifest, the removals, and a tar written while it is
// read. done is called once, when the tar has been read to its end or its
// writing failed; on failure the reader only sees the tar end short, and
// the caller must fail the solve with done's error. Call it after the
// Writer's Close.
func (p *Plan) TarFS(ctx context.Context, done func(error)) fsutil.FS {
	dt, _ := json.Marshal(p.m)
	return &streamFS{p: p, ctx: ctx, manifest: dt, reporter: reporter{done: done}, mtime: time.Now().UnixNano()}
}

type streamFS struct {
	reporter
	p        *Plan
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
		st(TarFile, s.p.m.TarSize),
		st(WhiteoutFile, int64(len(s.p.rm.encoded))),
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
		return io.NopCloser(bytes.NewReader(s.p.rm.encoded)), nil
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
		err := s.p.writeTar(s.ctx, io.MultiWriter(pw, cw))
		if err == nil && cw.n != s.p.m.TarSize {
			err = errors.Errorf("change set: the tar came to %d bytes, not the %d the walk counted", cw.n, s.p.m.TarSize)
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
