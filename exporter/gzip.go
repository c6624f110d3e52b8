package exporter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"maps"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/converter"
	"github.com/containerd/containerd/v2/pkg/labels"
	"github.com/containerd/errdefs"
	"github.com/klauspost/pgzip"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// gzipRecord is what a store that gzips layers keeps: the level, and each
// uncompressed blob buildkitd offered with the gzip blob written for it.
type gzipRecord struct {
	level int
	// evenOverUncompressed gzips a layer containerd already holds
	// uncompressed: the engine's worker wrote it there itself.
	evenOverUncompressed bool
	// base tells the blobs of the images the commit is made on: they stay
	// as they are, uncompressed ones too.
	base  func(digest.Digest) bool
	mu    sync.Mutex
	blobs map[digest.Digest]ocispecs.Descriptor
}

// gzipOnTheWay makes the store write every uncompressed layer blob that
// buildkitd offers, and containerd lacks, as a gzip blob at level (-1 for
// gzip's default): buildkitd's differ makes the layer uncompressed, and its
// bytes are compressed on their way into containerd rather than in a pass
// of their own in buildkitd, by a compressor several times faster than the
// standard library's, on every core. gzipBlobs tells which blobs were replaced;
// RewriteManifest puts the gzip blobs in the manifest buildkitd wrote.
func (s *leasedStore) gzipOnTheWay(level int, evenOverUncompressed bool, base func(digest.Digest) bool) {
	s.gzip = &gzipRecord{level: level, evenOverUncompressed: evenOverUncompressed, base: base, blobs: map[digest.Digest]ocispecs.Descriptor{}}
}

// gzipBlobs maps each uncompressed blob buildkitd offered to the gzip blob
// written instead.
func (s *leasedStore) gzipBlobs() map[digest.Digest]ocispecs.Descriptor {
	if s.gzip == nil {
		return nil
	}
	s.gzip.mu.Lock()
	defer s.gzip.mu.Unlock()
	return maps.Clone(s.gzip.blobs)
}

// uncompressedLayer reports whether the source holds dgst as an
// uncompressed layer: BuildKit labels every layer blob it makes with the
// digest of its uncompressed form, which for an uncompressed one is its
// own. (What crosses the session names a blob by digest and size only.)
func (s *leasedStore) uncompressedLayer(ctx context.Context, dgst digest.Digest) bool {
	if s.source == nil || dgst == "" {
		return false
	}
	sctx, cancel := sourceCtx(ctx)
	defer cancel()
	info, err := s.source.Info(sctx, dgst)
	if err != nil {
		return false
	}
	// A blob made by the worker's walking differ (containerd's diff
	// service) carries BuildKit's record of its uncompressed digest only.
	return info.Labels[labels.LabelUncompressed] == dgst.String() || info.Labels[buildkitUncompressedLabel] == dgst.String()
}

// gzipWriter returns the writer of desc, an uncompressed layer, as a gzip
// blob, or fetches it from the source that way.
func (s *leasedStore) gzipWriter(ctx context.Context, desc ocispecs.Descriptor) (content.Writer, error) {
	if _, err := s.Store.Info(ctx, desc.Digest); err == nil && (!s.gzip.evenOverUncompressed || s.gzip.base != nil && s.gzip.base(desc.Digest)) {
		// containerd has it uncompressed: the image keeps that blob (a
		// layer of the base always, as docker commit keeps the base's
		// layers; a new one unless the engine's worker wrote it there).
		return nil, errors.Wrapf(errdefs.ErrAlreadyExists, "blob %s", desc.Digest)
	}
	if gz, ok := s.existingGzip(ctx, desc); ok {
		// Made by an earlier commit or build of the same layer: a build
		// whose layers come from BuildKit's cache gets the blobs it got
		// before, not a second compression of each.
		s.gzip.mu.Lock()
		s.gzip.blobs[desc.Digest] = gz
		s.gzip.mu.Unlock()
		return nil, errors.Wrapf(errdefs.ErrAlreadyExists, "blob %s", desc.Digest)
	}
	// An ingest of its own: what is written is not the blob BuildKit names,
	// and two commits of the same layer must not share one.
	ref := "commit-frontend-gzip-" + desc.Digest.Encoded() + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	w, err := s.Store.Writer(ctx, content.WithRef(ref))
	if err != nil {
		return nil, err
	}
	gw, err := newGzipWriter(w, desc, s.gzip)
	if err != nil {
		w.Close()
		return nil, err
	}
	return s.writeOrFetch(ctx, gw, desc)
}

// buildkitUncompressedLabel is the label BuildKit's cache puts on a blob it
// recorded, with the digest of the blob's uncompressed form (BuildKit keeps
// the name unexported).
const buildkitUncompressedLabel = "buildkit.io/blob/annotation." + labels.LabelUncompressed

// gzipLevelLabel records on each gzip blob the store writes the level it
// was asked for (-1 for the compressor's default), so that a blob is
// reused only for a layer asked at the same level.
const gzipLevelLabel = "commit-frontend.gzip-level"

// existingGzip finds a gzip blob in containerd that an earlier commit or
// build wrote for the uncompressed blob desc at the same level, adds it to
// the commit's lease before anything reads it or the manifest names it,
// and checks that it is what it says — it decompresses to desc's digest
// and size; a label is only a claim.
func (s *leasedStore) existingGzip(ctx context.Context, desc ocispecs.Descriptor) (ocispecs.Descriptor, bool) {
	var candidates []ocispecs.Descriptor
	_ = s.Store.Walk(ctx, func(info content.Info) error {
		candidates = append(candidates, ocispecs.Descriptor{Digest: info.Digest, Size: info.Size})
		return nil
	}, `labels."`+labels.LabelUncompressed+`"==`+desc.Digest.String()+`,labels."`+gzipLevelLabel+`"==`+strconv.Itoa(s.gzip.level))
	for _, gz := range candidates {
		// A writer for a blob that exists puts it in the context's lease
		// and answers AlreadyExists; one that opens was for a blob gone
		// meanwhile, and its ingest is dropped.
		ref := "commit-frontend-lease-" + gz.Digest.Encoded()
		w, err := s.Store.Writer(ctx, content.WithRef(ref), content.WithDescriptor(gz))
		if err == nil {
			w.Close()
			_ = s.Store.Abort(ctx, ref)
			continue
		}
		if errdefs.IsAlreadyExists(err) && s.gunzipsTo(ctx, gz, desc) {
			return gz, true
		}
	}
	return ocispecs.Descriptor{}, false
}

// gunzipsTo reports whether the blob gz decompresses to the blob want.
func (s *leasedStore) gunzipsTo(ctx context.Context, gz, want ocispecs.Descriptor) bool {
	ra, err := s.Store.ReaderAt(ctx, gz)
	if err != nil {
		return false
	}
	defer ra.Close()
	// Each read of containerd's reader is a request of its own: large
	// pieces (gzip reads a few KiB at a time; 5 MB took 0.4 s).
	zr, err := pgzip.NewReader(bufio.NewReaderSize(content.NewReader(ra), writeBuffer))
	if err != nil {
		return false
	}
	defer zr.Close()
	d := want.Digest.Algorithm().Digester()
	n, err := io.Copy(d.Hash(), io.LimitReader(zr, want.Size+1))
	return err == nil && n == want.Size && d.Digest() == want.Digest
}

// gzipMediaType is the gzip media type of an uncompressed layer's, "" for
// any other blob.
func gzipMediaType(mt string) string {
	switch mt {
	case ocispecs.MediaTypeImageLayer:
		return ocispecs.MediaTypeImageLayerGzip
	case images.MediaTypeDockerSchema2Layer:
		return images.MediaTypeDockerSchema2LayerGzip
	case ocispecs.MediaTypeImageLayerNonDistributable: //nolint:staticcheck // still written by some
		return ocispecs.MediaTypeImageLayerNonDistributableGzip //nolint:staticcheck
	}
	return ""
}

// gzipWriter takes an uncompressed blob and writes it, gzipped, through
// dst: the caller sees the uncompressed blob (its digest, offset and
// commit), containerd gets the gzip blob labelled with the uncompressed
// digest, as its unpacker and garbage collector expect.
type gzipWriter struct {
	dst   content.Writer
	out   *asyncWriter
	gz    *pgzip.Writer
	n     int64
	desc  ocispecs.Descriptor
	layer *gzipRecord
}

func newGzipWriter(dst content.Writer, desc ocispecs.Descriptor, layers *gzipRecord) (*gzipWriter, error) {
	out := newAsyncWriter(dst)
	// Blocks of 1 MiB compressed on every core at once (the stream is
	// ordinary gzip: each block a deflate run primed with the one before).
	gz, err := pgzip.NewWriterLevel(out, layers.level)
	if err == nil {
		err = gz.SetConcurrency(1<<20, runtime.GOMAXPROCS(0))
	}
	if err != nil {
		out.Close()
		return nil, errors.Wrapf(err, "gzip level %d", layers.level)
	}
	return &gzipWriter{dst: dst, out: out, gz: gz, desc: desc, layer: layers}, nil
}

func (w *gzipWriter) Write(p []byte) (int, error) {
	n, err := w.gz.Write(p)
	w.n += int64(n)
	return n, err
}

// Digest is the uncompressed blob's, as buildkitd offered it: the bytes
// are not hashed again here, containerd's unpacker checks them against it.
func (w *gzipWriter) Digest() digest.Digest { return w.desc.Digest }

func (w *gzipWriter) Status() (content.Status, error) {
	return content.Status{Offset: w.n, Total: w.desc.Size}, nil
}

func (w *gzipWriter) Truncate(size int64) error {
	if size == w.n {
		return nil
	}
	if size != 0 {
		return errors.Errorf("blob %s: a gzip write can only start over", w.desc.Digest)
	}
	if err := w.out.Wait(); err != nil {
		return err
	}
	if err := w.dst.Truncate(0); err != nil {
		return err
	}
	w.gz.Reset(w.out)
	w.n = 0
	return nil
}

func (w *gzipWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if err := w.gz.Close(); err != nil {
		return err
	}
	if err := w.out.Wait(); err != nil {
		return errors.Wrapf(err, "writing the gzip blob of %s", w.desc.Digest)
	}
	if size > 0 && size != w.n {
		return errors.Errorf("blob %s: got %d bytes, want %d", w.desc.Digest, w.n, size)
	}
	if expected != "" && expected != w.desc.Digest {
		return errors.Errorf("blob %s committed as %s", w.desc.Digest, expected)
	}
	var info content.Info
	for _, o := range opts {
		if err := o(&info); err != nil {
			return err
		}
	}
	lbls := maps.Clone(info.Labels)
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[labels.LabelUncompressed] = w.desc.Digest.String()
	lbls[gzipLevelLabel] = strconv.Itoa(w.layer.level)
	// containerd's answer to a status request carries the digest of what
	// it holds: no second hash of the gzip blob here.
	st, err := w.dst.Status()
	if err != nil {
		return err
	}
	gz := ocispecs.Descriptor{Digest: w.dst.Digest(), Size: st.Offset}
	if err := gz.Digest.Validate(); err != nil {
		return errors.Wrapf(err, "containerd's digest of the gzip blob of %s", w.desc.Digest)
	}
	if err := w.dst.Commit(ctx, gz.Size, gz.Digest, content.WithLabels(lbls)); err != nil && !errdefs.IsAlreadyExists(err) {
		return errors.Wrapf(err, "committing the gzip blob of %s", w.desc.Digest)
	}
	w.layer.mu.Lock()
	w.layer.blobs[w.desc.Digest] = gz
	w.layer.mu.Unlock()
	return nil
}

func (w *gzipWriter) Close() error {
	w.out.Close()
	return w.dst.Close()
}

// asyncWriter hands what is written to w in writeBuffer pieces to a
// goroutine that writes them on, so that compressing the next piece and
// writing the last one to containerd overlap. Close may come at any time,
// also while pgzip's goroutines still write (a commit that fails half-way):
// from then on writes fail, Wait returns, and nothing panics.
type asyncWriter struct {
	w       io.Writer
	cur     []byte
	free    chan []byte
	full    chan []byte
	closing chan struct{}
	done    chan struct{}
	once    sync.Once

	mu   sync.Mutex
	cond *sync.Cond
	// pending counts pieces handed over and not yet written.
	pending int
	closed  bool
	err     error
}

var errWriterClosed = errors.New("writer closed")

func newAsyncWriter(w io.Writer) *asyncWriter {
	const depth = 2
	a := &asyncWriter{
		w: w, free: make(chan []byte, depth), full: make(chan []byte, depth),
		closing: make(chan struct{}), done: make(chan struct{}),
	}
	a.cond = sync.NewCond(&a.mu)
	for range depth {
		a.free <- make([]byte, 0, writeBuffer)
	}
	a.cur = <-a.free
	go a.run()
	return a
}

func (a *asyncWriter) run() {
	defer close(a.done)
	for {
		select {
		case b := <-a.full:
			if a.error() == nil {
				if _, err := a.w.Write(b); err != nil {
					a.setError(err)
				}
			}
			a.free <- b[:0]
			a.written()
		case <-a.closing:
			return
		}
	}
}

// written counts one piece as done.
func (a *asyncWriter) written() {
	a.mu.Lock()
	a.pending--
	a.cond.Broadcast()
	a.mu.Unlock()
}

func (a *asyncWriter) error() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *asyncWriter) setError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil {
		a.err = err
	}
}

func (a *asyncWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := a.error(); err != nil {
			return n, err
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur = a.cur[:len(a.cur)+k]
		n += k
		p = p[k:]
		if len(a.cur) == cap(a.cur) {
			a.flush()
		}
	}
	return n, nil
}

// flush hands the current piece over; after Close it drops it.
func (a *asyncWriter) flush() {
	if len(a.cur) == 0 {
		return
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.cur = a.cur[:0]
		return
	}
	a.pending++
	a.mu.Unlock()
	select {
	case a.full <- a.cur:
	case <-a.closing:
		a.written()
		a.cur = a.cur[:0]
		return
	}
	select {
	case a.cur = <-a.free:
	case <-a.closing:
		// No piece to fill: Write fails on the error Close set.
		a.cur = nil
	}
}

// Wait writes what is buffered and waits until every piece is written, or
// the writer is closed.
func (a *asyncWriter) Wait() error {
	a.flush()
	a.mu.Lock()
	for a.pending > 0 && !a.closed {
		a.cond.Wait()
	}
	err := a.err
	a.mu.Unlock()
	return err
}

// Close stops the writing goroutine; pieces not yet written are dropped.
func (a *asyncWriter) Close() {
	a.once.Do(func() {
		a.mu.Lock()
		a.closed = true
		if a.err == nil {
			a.err = errWriterClosed
		}
		a.cond.Broadcast()
		a.mu.Unlock()
		close(a.closing)
		<-a.done
	})
}

// rewriteManifest writes, through cs, the manifest desc with each layer
// that blobs maps (an uncompressed blob's digest) replaced by its gzip
// blob, keeping the manifest's labels and pointing its layer gc labels at
// the new blobs, and returns the new manifest's descriptor. With nothing
// to replace it returns desc.
func rewriteManifest(ctx context.Context, cs content.Store, desc ocispecs.Descriptor, blobs map[digest.Digest]ocispecs.Descriptor) (ocispecs.Descriptor, error) {
	if len(blobs) == 0 {
		return desc, nil
	}
	// containerd's remote writer ends its stream only with its context.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !images.IsManifestType(desc.MediaType) {
		return ocispecs.Descriptor{}, errors.Errorf("layers were gzipped for an export of %s %s, not of one image manifest", desc.MediaType, desc.Digest)
	}
	var m ocispecs.Manifest
	lbls, err := converter.ReadJSON(ctx, cs, &m, desc)
	if err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "reading manifest %s", desc.Digest)
	}
	if lbls == nil {
		lbls = map[string]string{}
	}
	changed := false
	for i, l := range m.Layers {
		gz, ok := blobs[l.Digest]
		if !ok {
			continue
		}
		if gz.MediaType = gzipMediaType(l.MediaType); gz.MediaType == "" {
			return ocispecs.Descriptor{}, errors.Errorf("layer %s of manifest %s: a %s layer was gzipped", l.Digest, desc.Digest, l.MediaType)
		}
		gz.Annotations = l.Annotations
		converter.ClearGCLabels(lbls, l.Digest)
		// containerd's own name for a layer's gc label.
		lbls[images.ChildGCLabels(gz)[0]+strconv.Itoa(i)] = gz.Digest.String()
		m.Layers[i] = gz
		changed = true
	}
	if !changed {
		return desc, nil
	}
	// Indented, as BuildKit writes manifests.
	dt, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return ocispecs.Descriptor{}, err
	}
	nd := desc
	nd.Digest, nd.Size = digest.FromBytes(dt), int64(len(dt))
	if err := content.WriteBlob(ctx, cs, "manifest-"+nd.Digest.String(), bytes.NewReader(dt), nd, content.WithLabels(lbls)); err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "writing the manifest with gzip layers")
	}
	return nd, nil
}
