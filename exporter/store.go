package exporter

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"sync/atomic"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"google.golang.org/grpc/metadata"
)

// leasedStore is a content store whose every call runs in a namespace and
// under a lease: BuildKit's session calls the store with contexts of its own.
type leasedStore struct {
	content.Store
	ns, lease string
	written   atomic.Int64
	fetched   atomic.Int64
	// source, when set, is buildkitd's own content store, read through its
	// control API: large blobs are fetched from there rather than pushed
	// through the session.
	source source
	// gzip, when set, gzips the uncompressed layers written through the
	// store (gzipOnTheWay).
	gzip *gzipRecord
}

// newLeasedStore wraps s so that every call carries namespace ns and lease,
// and counts what is written through it. With a source (buildkitd's content
// store, read through its control API), a blob of at least DirectMin bytes
// that buildkitd offers to write is read from the source instead:
// BuildKit's session carries blobs inside a gRPC stream tunnelled through
// another, and a direct read of the same bytes is several times faster.
func newLeasedStore(s content.Store, ns, lease string, source source) *leasedStore {
	return &leasedStore{Store: s, ns: ns, lease: lease, source: source}
}

// DirectMin is the smallest blob a landing fetches from buildkitd's content
// store rather than receives through the session.
const DirectMin = 1 << 20

// source is a content store blobs are read from.
type source interface {
	content.Provider
	content.InfoProvider
}

func (s *leasedStore) Written() int64 { return s.written.Load() }

func (s *leasedStore) Fetched() int64 { return s.fetched.Load() }

func (s *leasedStore) ctx(ctx context.Context) context.Context {
	// The session hands over contexts that carry buildkitd's own gRPC
	// metadata (its namespace and lease): drop it, keep only ours.
	ctx = metadata.NewIncomingContext(ctx, metadata.MD{})
	ctx = metadata.NewOutgoingContext(ctx, metadata.MD{})
	ctx = namespaces.WithNamespace(ctx, s.ns)
	if s.lease != "" {
		ctx = leases.WithLease(ctx, s.lease)
	}
	return ctx
}

func (s *leasedStore) Info(ctx context.Context, dgst digest.Digest) (content.Info, error) {
	return s.Store.Info(s.ctx(ctx), dgst)
}

func (s *leasedStore) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	return s.Store.Update(s.ctx(ctx), info, fieldpaths...)
}

func (s *leasedStore) Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error {
	return s.Store.Walk(s.ctx(ctx), fn, filters...)
}

func (s *leasedStore) Delete(ctx context.Context, dgst digest.Digest) error {
	return s.Store.Delete(s.ctx(ctx), dgst)
}

func (s *leasedStore) ReaderAt(ctx context.Context, desc ocispecs.Descriptor) (content.ReaderAt, error) {
	return s.Store.ReaderAt(s.ctx(ctx), desc)
}

func (s *leasedStore) Status(ctx context.Context, ref string) (content.Status, error) {
	return s.Store.Status(s.ctx(ctx), ref)
}

func (s *leasedStore) ListStatuses(ctx context.Context, filters ...string) ([]content.Status, error) {
	return s.Store.ListStatuses(s.ctx(ctx), filters...)
}

func (s *leasedStore) Abort(ctx context.Context, ref string) error {
	return s.Store.Abort(s.ctx(ctx), ref)
}

func (s *leasedStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	ctx = s.ctx(ctx)
	if s.gzip != nil && s.uncompressedLayer(ctx, wo.Desc.Digest) {
		return s.gzipWriter(ctx, wo.Desc)
	}
	w, err := s.Store.Writer(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return s.writeOrFetch(ctx, w, wo.Desc)
}

// writeOrFetch fetches desc into w from the source when it is large enough,
// and else returns w for buildkitd to write through the session.
func (s *leasedStore) writeOrFetch(ctx context.Context, w content.Writer, desc ocispecs.Descriptor) (content.Writer, error) {
	if s.source != nil && desc.Size >= DirectMin && desc.Digest != "" {
		fetched, err := s.fetch(ctx, w, desc)
		if err != nil {
			return nil, err
		}
		if fetched {
			// BuildKit takes this as "the store has it" and sends nothing.
			return nil, errors.Wrapf(errdefs.ErrAlreadyExists, "blob %s", desc.Digest)
		}
	}
	return newBufferedWriter(w, &s.written), nil
}

// sourceCtx is ctx for a call to the source: another daemon, to which none
// of our metadata goes.
func sourceCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	sctx, cancel := context.WithCancel(metadata.NewOutgoingContext(context.WithoutCancel(ctx), metadata.MD{}))
	stop := context.AfterFunc(ctx, cancel)
	return sctx, func() { stop(); cancel() }
}

// fetch copies desc from the source through w, commits it and closes w. It
// reports false, with no error and w untouched and open, when the source
// cannot serve the blob: then the session carries it.
func (s *leasedStore) fetch(ctx context.Context, w content.Writer, desc ocispecs.Descriptor) (bool, error) {
	sctx, cancel := sourceCtx(ctx)
	defer cancel()
	ra, err := s.source.ReaderAt(sctx, desc)
	if err != nil {
		return false, nil
	}
	defer ra.Close()
	bw := newBufferedWriter(w, &s.written)
	defer bw.Close()
	if st, err := w.Status(); err == nil && st.Offset > 0 {
		// A write of the same blob left unfinished: start over.
		if err := w.Truncate(0); err != nil {
			return false, errors.Wrapf(err, "writing blob %s", desc.Digest)
		}
	}
	// Each read is one request to buildkitd, each write one to containerd:
	// large pieces, the next read while the last is written.
	if err := pipedCopy(sctx, bw, ra, desc.Size); err != nil {
		return false, errors.Wrapf(err, "copying blob %s from buildkitd", desc.Digest)
	}
	if err := bw.Commit(ctx, desc.Size, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
		return false, errors.Wrapf(err, "committing blob %s", desc.Digest)
	}
	s.fetched.Add(desc.Size)
	return true, nil
}

// pipedCopy copies size bytes of src to dst in writeBuffer pieces, reading
// the next pieces while one is written: the reads go to buildkitd and the
// writes to containerd, two daemons that can work at once.
func pipedCopy(ctx context.Context, dst io.Writer, src io.ReaderAt, size int64) error {
	const depth = 2
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, writeBuffer)
	}
	type piece struct {
		b   []byte
		n   int
		err error
	}
	full := make(chan piece, depth)
	go func() {
		defer close(full)
		for off := int64(0); off < size; {
			var b []byte
			select {
			case b = <-free:
			case <-ctx.Done():
				return
			}
			n, err := src.ReadAt(b[:min(int64(len(b)), size-off)], off)
			switch {
			case err == io.EOF && off+int64(n) == size:
				err = nil
			case err == nil && n == 0:
				err = io.ErrUnexpectedEOF
			}
			select {
			case full <- piece{b, n, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			off += int64(n)
		}
	}()
	var written int64
	for p := range full {
		if p.err != nil {
			return p.err
		}
		if _, err := dst.Write(p.b[:p.n]); err != nil {
			return err
		}
		written += int64(p.n)
		free <- p.b
	}
	if written != size {
		return errors.Errorf("read %d of %d bytes", written, size)
	}
	return ctx.Err()
}

// writeBuffer is how much a blob write gathers before it goes to containerd:
// containerd's remote writer waits for an answer to every Write, and the
// session hands over small chunks, so unbuffered a 1 GiB layer costs tens of
// thousands of round trips.
const writeBuffer = 4 << 20

// bufferedWriter gathers writes into large ones; every other call flushes first.
type bufferedWriter struct {
	content.Writer
	buf     *bufio.Writer
	written *atomic.Int64
}

func newBufferedWriter(w content.Writer, written *atomic.Int64) *bufferedWriter {
	return &bufferedWriter{Writer: w, buf: bufio.NewWriterSize(w, writeBuffer), written: written}
}

func (w *bufferedWriter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	w.written.Add(int64(n))
	return n, err
}

func (w *bufferedWriter) Digest() digest.Digest {
	_ = w.buf.Flush()
	return w.Writer.Digest()
}

func (w *bufferedWriter) Status() (content.Status, error) {
	if err := w.buf.Flush(); err != nil {
		return content.Status{}, err
	}
	return w.Writer.Status()
}

func (w *bufferedWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if err := w.buf.Flush(); err != nil {
		return err
	}
	return w.Writer.Commit(ctx, size, expected, opts...)
}

func (w *bufferedWriter) Truncate(size int64) error {
	if err := w.buf.Flush(); err != nil {
		return err
	}
	return w.Writer.Truncate(size)
}

func (w *bufferedWriter) Close() error {
	err := w.buf.Flush()
	if cerr := w.Writer.Close(); err == nil {
		err = cerr
	}
	return err
}

// manifestDescriptor returns the descriptor of the manifest an OCI export
// wrote, from the exporter response.
func manifestDescriptor(ctx context.Context, p content.InfoProvider, resp map[string]string) (ocispecs.Descriptor, error) {
	if v, ok := resp[exptypes.ExporterImageDescriptorKey]; ok {
		dt, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return ocispecs.Descriptor{}, errors.Wrap(err, "exporter descriptor")
		}
		var desc ocispecs.Descriptor
		if err := json.Unmarshal(dt, &desc); err != nil {
			return ocispecs.Descriptor{}, errors.Wrap(err, "exporter descriptor")
		}
		return desc, nil
	}
	dgst, err := digest.Parse(resp[exptypes.ExporterImageDigestKey])
	if err != nil {
		return ocispecs.Descriptor{}, errors.Wrap(err, "the exporter returned no image digest")
	}
	info, err := p.Info(ctx, dgst)
	if err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "manifest %s", dgst)
	}
	return ocispecs.Descriptor{MediaType: ocispecs.MediaTypeImageManifest, Digest: dgst, Size: info.Size}, nil
}

// storeOpt describes an image to land in containerd.
type storeOpt struct {
	// Name is the image record's name.
	Name string
	// Manifest is the manifest written into the content store.
	Manifest ocispecs.Descriptor
	// Snapshotter receives the unpacked layers.
	Snapshotter string
	// Store is the content store, under the commit's lease.
	Store content.Store
}

// store labels the image's blobs (a manifest, or an index with its
// attestations) for garbage collection, unpacks the
// image into the snapshotter and then creates or updates the image record:
// the record is written last, so a failure leaves none.
func store(ctx context.Context, cc *containerd.Client, opt storeOpt) error {
	// containerd's own walk labels every parent with its children (an
	// index its manifests, a manifest its config and layers), so the
	// garbage collector keeps what the record references.
	if err := images.Walk(ctx, images.SetChildrenLabels(opt.Store, images.ChildrenHandler(opt.Store)), opt.Manifest); err != nil {
		return errors.Wrap(err, "labelling the exported image for garbage collection")
	}
	img := images.Image{Name: opt.Name, Target: opt.Manifest}
	if err := containerd.NewImage(cc, img).Unpack(ctx, opt.Snapshotter); err != nil {
		return errors.Wrapf(err, "unpacking into %s", opt.Snapshotter)
	}
	return record(ctx, cc.ImageService(), img)
}

// record creates the image record, or points the one of that name at the
// image.
func record(ctx context.Context, is images.Store, img images.Image) error {
	if _, err := is.Create(ctx, img); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return errors.Wrapf(err, "creating image %s", img.Name)
		}
		if _, err := is.Update(ctx, img, "target"); err != nil {
			return errors.Wrapf(err, "updating image %s", img.Name)
		}
	}
	return nil
}
