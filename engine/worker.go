package engine

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/containerd/containerd/v2/core/images"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/worker/base"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// imageStore is the worker's view of containerd's image store. BuildKit's
// cache manager reads it before a prune with a filter or a policy, and for
// a usage report (its imagerefchecker): it reads the manifest of every
// image in the namespace, to tell which records an image shares. That is
// a read of every image, however many, in every commit.
type imageStore struct {
	images.Store
	// unread, while set, makes List list nothing.
	unread atomic.Bool
}

func (s *imageStore) List(ctx context.Context, filters ...string) ([]images.Image, error) {
	if s.unread.Load() {
		return nil, nil
	}
	return s.Store.List(ctx, filters...)
}

// engineWorker is BuildKit's worker, its platforms asked for once, its
// prunes and usage reports taken one at a time, its usage reports read
// with no image. A prune whose result what images share cannot change
// (prunes of all the records the filters match, with no space to keep)
// reads no image either: its reading of the image store lists nothing.
// Shared records are kept only by prunes without All (the
// garbage-collection policy's), and shared data counts out of the space a
// policy keeps: those read the images, as in buildkitd.
type engineWorker struct {
	*base.Worker
	images *imageStore
	mu     sync.Mutex
}

// Platforms are the worker's platforms as they stand. BuildKit's
// controller asks for them afresh (noCache) on every ListWorkers, and the
// worker then looks for emulators by running a binary for each
// architecture (archutil): a few milliseconds, in every commit, to tell
// platforms a commit never uses. A RUN step for another platform looks
// for its emulator itself.
func (w *engineWorker) Platforms(bool) []ocispecs.Platform {
	return w.Worker.Platforms(false)
}

// DiskUsage is the cache's usage report, read with no image: no record
// is reported shared. What a record shares changes nothing the engine's
// users read of the report (du shows what a prune frees; a commit, its
// records), and the reading of every image, every time, is what a small
// commit would pay for it.
func (w *engineWorker) DiskUsage(ctx context.Context, opt bkclient.DiskUsageInfo) ([]*bkclient.UsageInfo, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.images.unread.Store(true)
	defer w.images.unread.Store(false)
	return w.Worker.DiskUsage(ctx, opt)
}

func (w *engineWorker) Prune(ctx context.Context, ch chan bkclient.UsageInfo, opts ...bkclient.PruneInfo) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if sharingIrrelevant(opts) {
		w.images.unread.Store(true)
		defer w.images.unread.Store(false)
	}
	return w.Worker.Prune(ctx, ch, opts...)
}

// sharingIrrelevant tells whether what images share cannot change what
// prunes by opts remove.
func sharingIrrelevant(opts []bkclient.PruneInfo) bool {
	for _, o := range opts {
		if !o.All || o.MaxUsedSpace != 0 || o.ReservedSpace != 0 || o.MinFreeSpace != 0 {
			return false
		}
	}
	return len(opts) > 0
}
