package engine

import (
	"bufio"
	"context"

	"github.com/containerd/containerd/v2/core/content"
	digest "github.com/opencontainers/go-digest"
)

// writeSize is the least a content writer of the engine sends to
// containerd at a time. containerd's content proxy makes one gRPC round
// trip per write, and BuildKit's differ writes its blob 128 KiB at a time.
const writeSize = 1 << 20

// bigWrites is a content store whose writers send writeSize bytes at a
// time.
type bigWrites struct{ content.Store }

func (s bigWrites) Writer(ctx context.Context, opts ...content.WriterOpt) (content.Writer, error) {
	w, err := s.Store.Writer(ctx, opts...)
	if err != nil {
		return nil, err
	}
	bw := &bufferedWriter{Writer: w}
	bw.b = bufio.NewWriterSize(w, writeSize)
	return bw, nil
}

// bufferedWriter holds writes until writeSize bytes are there, and sends
// what it holds before anything that looks at what was written.
type bufferedWriter struct {
	content.Writer
	b *bufio.Writer
	// err is a failed flush that Digest and Status could not return.
	err error
}

func (w *bufferedWriter) Write(p []byte) (int, error) { return w.b.Write(p) }

func (w *bufferedWriter) flush() error {
	if err := w.b.Flush(); err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}

func (w *bufferedWriter) Digest() digest.Digest {
	_ = w.flush()
	return w.Writer.Digest()
}

func (w *bufferedWriter) Status() (content.Status, error) {
	if err := w.flush(); err != nil {
		return content.Status{}, err
	}
	return w.Writer.Status()
}

func (w *bufferedWriter) Commit(ctx context.Context, size int64, expected digest.Digest, opts ...content.Opt) error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.Writer.Commit(ctx, size, expected, opts...)
}

func (w *bufferedWriter) Truncate(size int64) error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.Writer.Truncate(size)
}
