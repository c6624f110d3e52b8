package exporter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// failingReaderAt fails every read at or past off.
type failingReaderAt struct {
	io.ReaderAt
	off int64
}

func (r failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.off {
		return 0, errors.New("buildkitd went away")
	}
	return r.ReaderAt.ReadAt(p, off)
}

// failingWriter fails once it has taken n bytes.
type failingWriter struct {
	bytes.Buffer
	n int
}

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.Len()+len(p) > w.n {
		return 0, errors.New("containerd went away")
	}
	return w.Buffer.Write(p)
}

func TestPipedCopy(t *testing.T) {
	src := make([]byte, 3*writeBuffer+12345)
	rng := rand.NewChaCha8([32]byte{1})
	_, _ = rng.Read(src)
	for _, size := range []int64{0, 1, writeBuffer, writeBuffer + 1, int64(len(src))} {
		var dst bytes.Buffer
		if err := pipedCopy(context.Background(), &dst, bytes.NewReader(src[:size]), size); err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if !bytes.Equal(dst.Bytes(), src[:size]) {
			t.Errorf("%d bytes: copied %d bytes, not the same", size, dst.Len())
		}
	}
	// A short source, a failing source and a failing destination end the
	// copy with an error, and no goroutine is left writing.
	if err := pipedCopy(context.Background(), io.Discard, bytes.NewReader(src[:100]), 200); err == nil {
		t.Error("a short source: no error")
	}
	if err := pipedCopy(context.Background(), io.Discard, failingReaderAt{bytes.NewReader(src), 2 * writeBuffer}, int64(len(src))); err == nil || err.Error() != "buildkitd went away" {
		t.Errorf("a failing source: %v", err)
	}
	w := &failingWriter{n: writeBuffer}
	if err := pipedCopy(context.Background(), w, bytes.NewReader(src), int64(len(src))); err == nil || err.Error() != "containerd went away" {
		t.Errorf("a failing destination: %v", err)
	}
}
