package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"time"

	ctd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// The differ's blobs are written by this process straight into
// containerd's content directory, then taken into the namespace by
// containerd, which shares a blob its store already holds (its default
// content sharing policy): no byte of the layer crosses containerd's API,
// where each write is a round trip. A blob containerd does not take (another
// sharing policy; a directory that is not its store) is sent through the
// API after all, from the file written.

// contentDir returns the directory where containerd at address keeps its
// blobs (blobs/sha256 under its content plugin's root), or "" when this
// process cannot write there.
func contentDir(ctx context.Context, address string) string {
	c, err := ctd.New(address, ctd.WithTimeout(10*time.Second))
	if err != nil {
		return ""
	}
	defer c.Close()
	resp, err := c.IntrospectionService().Plugins(ctx, "type==io.containerd.content.v1")
	if err != nil {
		return ""
	}
	for _, p := range resp.Plugins {
		root := p.Exports["root"]
		if root == "" || p.InitErr != nil {
			continue
		}
		dir := filepath.Join(root, "blobs", "sha256")
		if unix.Access(dir, unix.W_OK) == nil {
			return dir
		}
	}
	return ""
}

// localContent writes blobs into dir and has the store take them.
type localContent struct {
	content.Store
	dir string
}

func (s localContent) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if wo.Desc.Digest != "" {
		// A blob named in advance (a manifest, a config, a copy) is small
		// or already there: containerd's own writer says which, and
		// leases what exists.
		return s.Store.Writer(ctx, opts...)
	}
	// A file without a name until it is whole: nothing can see or remove
	// a part of it.
	fd, err := unix.Open(s.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return s.Store.Writer(ctx, opts...)
	}
	now := time.Now()
	d := digest.SHA256.Digester()
	return &localWriter{s: s, f: os.NewFile(uintptr(fd), wo.Ref), ref: wo.Ref, total: wo.Desc.Size, d: d, h: d.Hash(), started: now, updated: now}, nil
}

type localWriter struct {
	s       localContent
	f       *os.File
	ref     string
	total   int64
	offset  int64
	d       digest.Digester
	h       hash.Hash
	started time.Time
	updated time.Time
}

func (w *localWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.h.Write(p[:n])
	w.offset += int64(n)
	w.updated = time.Now()
	return n, err
}

func (w *localWriter) Close() error { return w.f.Close() }

func (w *localWriter) Digest() digest.Digest { return w.d.Digest() }

func (w *localWriter) Status() (content.Status, error) {
	return content.Status{Ref: w.ref, Offset: w.offset, Total: w.total, StartedAt: w.started, UpdatedAt: w.updated}, nil
}

func (w *localWriter) Truncate(size int64) error {
	if size != 0 {
		return errors.Errorf("content writer %s: truncate to %d: only 0 is supported", w.ref, size)
	}
	if err := w.f.Truncate(0); err != nil {
		return err
	}
	if _, err := w.f.Seek(0, 0); err != nil {
		return err
	}
	w.d = digest.SHA256.Digester()
	w.h, w.offset = w.d.Hash(), 0
	return nil
}

func (w *localWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	defer w.f.Close()
	if size > 0 && size != w.offset {
		return errors.Wrapf(errdefs.ErrFailedPrecondition, "unexpected commit size %d, expected %d", w.offset, size)
	}
	size = w.offset
	dgst := w.d.Digest()
	if expected != "" && expected != dgst {
		return errors.Wrapf(errdefs.ErrFailedPrecondition, "unexpected commit digest %s, expected %s", dgst, expected)
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	fdPath := "/proc/self/fd/" + strconv.Itoa(int(w.f.Fd()))
	err := unix.Linkat(unix.AT_FDCWD, fdPath, unix.AT_FDCWD, filepath.Join(w.s.dir, dgst.Encoded()), unix.AT_SYMLINK_FOLLOW)
	if err == nil || errors.Is(err, unix.EEXIST) {
		if err = w.s.take(ctx, w.ref, dgst, size, opts); err == nil {
			return nil
		}
	}
	// Not taken: sent through containerd's API from the file.
	return w.s.send(ctx, w.f, w.ref, dgst, size, opts)
}

// take has containerd take a blob its store holds into the namespace, with
// the labels of opts.
func (s localContent) take(ctx context.Context, ref string, dgst digest.Digest, size int64, opts []content.Opt) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	tref := ref + "-take-" + hex.EncodeToString(b[:])
	w, err := s.Store.Writer(ctx, content.WithRef(tref), content.WithDescriptor(ocispecs.Descriptor{Digest: dgst, Size: size}))
	if errdefs.IsAlreadyExists(err) {
		return s.label(ctx, dgst, opts)
	}
	if err != nil {
		return err
	}
	err = w.Commit(ctx, size, dgst, opts...)
	w.Close()
	if errdefs.IsAlreadyExists(err) {
		return s.label(ctx, dgst, opts)
	}
	if err != nil {
		_ = s.Store.Abort(context.WithoutCancel(ctx), tref)
		return err
	}
	info, err := s.Store.Info(ctx, dgst)
	if err != nil {
		return err
	}
	if info.Size != size {
		return errors.Errorf("containerd took %s with %d bytes, not %d", dgst, info.Size, size)
	}
	return nil
}

// label sets the labels of opts on a blob the namespace already has.
func (s localContent) label(ctx context.Context, dgst digest.Digest, opts []content.Opt) error {
	info := content.Info{Digest: dgst}
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	if len(info.Labels) == 0 {
		return nil
	}
	var fields []string
	for k := range info.Labels {
		fields = append(fields, "labels."+k)
	}
	_, err := s.Store.Update(ctx, info, fields...)
	return err
}

// send writes the blob held by f through containerd's API.
func (s localContent) send(ctx context.Context, f *os.File, ref string, dgst digest.Digest, size int64, opts []content.Opt) error {
	if _, err := f.Seek(0, 0); err != nil {
		return err
	}
	desc := ocispecs.Descriptor{Digest: dgst, Size: size}
	w, err := content.OpenWriter(ctx, s.Store, content.WithRef(ref+"-send"), content.WithDescriptor(desc))
	if errdefs.IsAlreadyExists(err) {
		return s.label(ctx, dgst, opts)
	}
	if err != nil {
		return err
	}
	defer w.Close()
	return content.Copy(ctx, w, f, size, dgst, opts...)
}
