package exporter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// confinedStore is the view of a containerd content store that buildkitd
// gets through the session: it reads the blobs it was given and those it
// wrote, labels only what it wrote, and writes under the commit's lease.
// It cannot read, relabel, delete or list anything else of the namespace.
// Its ingests live under a prefix of its own, so it can neither see, nor
// resume, nor abort another client's.
type confinedStore struct {
	s content.Store
	// prefix starts the name of every ingest buildkitd opens.
	prefix string

	mu       sync.Mutex
	readable map[digest.Digest]bool
	// written are the blobs buildkitd committed in this session: it may
	// read and label them.
	written map[digest.Digest]bool
	// sent are the blobs whose every byte buildkitd sent in this session
	// but that were in the store already when it committed: it may read
	// them (it holds those bytes), not label them (others' labels).
	sent map[digest.Digest]bool
}

// Confine returns the view of s to hand to buildkitd: the blobs reachable
// from each of roots (a manifest and its config and layers) are readable,
// and so is what buildkitd writes through it; nothing else is.
func Confine(ctx context.Context, s content.Store, roots ...ocispecs.Descriptor) (content.Store, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	c := &confinedStore{
		s: s, prefix: "commit-frontend-session-" + hex.EncodeToString(id[:]) + "-",
		readable: map[digest.Digest]bool{}, written: map[digest.Digest]bool{}, sent: map[digest.Digest]bool{},
	}
	collect := images.HandlerFunc(func(ctx context.Context, desc ocispecs.Descriptor) ([]ocispecs.Descriptor, error) {
		c.readable[desc.Digest] = true
		return nil, nil
	})
	for _, r := range roots {
		if err := images.Walk(ctx, images.Handlers(collect, images.ChildrenHandler(s)), r); err != nil {
			return nil, errors.Wrapf(err, "walking %s", r.Digest)
		}
	}
	return c, nil
}

func (c *confinedStore) may(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readable[d] || c.written[d] || c.sent[d]
}

// fromRoots tells whether d is a blob of the roots' images.
func (c *confinedStore) fromRoots(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readable[d]
}

func (c *confinedStore) wrote(d digest.Digest) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.written[d]
}

func notFound(d digest.Digest) error {
	return errors.Wrapf(errdefs.ErrNotFound, "content %s", d)
}

func denied(what string) error {
	return errors.Wrapf(errdefs.ErrPermissionDenied, "%s: not allowed through the commit's session", what)
}

func (c *confinedStore) Info(ctx context.Context, d digest.Digest) (content.Info, error) {
	if !c.may(d) {
		return content.Info{}, notFound(d)
	}
	return c.s.Info(ctx, d)
}

func (c *confinedStore) ReaderAt(ctx context.Context, desc ocispecs.Descriptor) (content.ReaderAt, error) {
	if !c.may(desc.Digest) {
		return nil, notFound(desc.Digest)
	}
	return c.s.ReaderAt(ctx, desc)
}

func (c *confinedStore) Update(ctx context.Context, info content.Info, fieldpaths ...string) (content.Info, error) {
	if !c.wrote(info.Digest) {
		return content.Info{}, denied("updating " + info.Digest.String())
	}
	return c.s.Update(ctx, info, fieldpaths...)
}

func (c *confinedStore) Walk(ctx context.Context, fn content.WalkFunc, filters ...string) error {
	return c.s.Walk(ctx, func(info content.Info) error {
		if !c.may(info.Digest) {
			return nil
		}
		return fn(info)
	}, filters...)
}

func (c *confinedStore) Delete(ctx context.Context, d digest.Digest) error {
	return denied("deleting " + d.String())
}

func (c *confinedStore) Status(ctx context.Context, ref string) (content.Status, error) {
	st, err := c.s.Status(ctx, c.prefix+ref)
	st.Ref = strings.TrimPrefix(st.Ref, c.prefix)
	return st, err
}

func (c *confinedStore) ListStatuses(ctx context.Context, filters ...string) ([]content.Status, error) {
	all, err := c.s.ListStatuses(ctx, filters...)
	if err != nil {
		return nil, err
	}
	var out []content.Status
	for _, st := range all {
		if ref, ok := strings.CutPrefix(st.Ref, c.prefix); ok {
			st.Ref = ref
			out = append(out, st)
		}
	}
	return out, nil
}

func (c *confinedStore) Abort(ctx context.Context, ref string) error {
	return c.s.Abort(ctx, c.prefix+ref)
}

func (c *confinedStore) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	var wo content.WriterOpts
	for _, o := range opts {
		if err := o(&wo); err != nil {
			return nil, err
		}
	}
	if wo.Ref == "" {
		return nil, errors.Wrap(errdefs.ErrInvalidArgument, "an ingest needs a ref")
	}
	// A blob that is there already answers AlreadyExists and becomes
	// neither readable nor labelable: the answer tells only that it
	// exists.
	w, err := c.s.Writer(ctx, append(opts, content.WithRef(c.prefix+wo.Ref))...)
	if err != nil {
		return nil, err
	}
	return &confinedWriter{Writer: w, c: c}, nil
}

// confinedWriter records what it commits.
type confinedWriter struct {
	content.Writer
	c *confinedStore
}

func (w *confinedWriter) Status() (content.Status, error) {
	st, err := w.Writer.Status()
	st.Ref = strings.TrimPrefix(st.Ref, w.c.prefix)
	return st, err
}

func (w *confinedWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	err := w.Writer.Commit(ctx, size, expected, opts...)
	if err == nil || errdefs.IsAlreadyExists(err) {
		d := expected
		if d == "" {
			d = w.Writer.Digest()
		}
		w.c.mu.Lock()
		if err == nil {
			w.c.written[d] = true
		} else {
			w.c.sent[d] = true
		}
		w.c.mu.Unlock()
	}
	return err
}
