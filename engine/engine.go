// Package engine runs BuildKit's own engine inside the CLI, so that a
// containerd user needs no buildkitd: BuildKit's controller with a
// containerd worker on the container's containerd, namespace and
// snapshotter, served to BuildKit's client on a private socket. Everything
// above the client — the solve, the frontend, the landing — is the same as
// with any buildkitd. One process at a time runs the engine of a state
// directory; the others wait, and say for whom.
package engine

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/internal/flock"
	ctd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/nerdctl/v2/pkg/rootlessutil"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/cmd/buildkitd/config"
	"github.com/moby/buildkit/control"
	"github.com/moby/buildkit/frontend"
	dockerfile "github.com/moby/buildkit/frontend/dockerfile/builder"
	"github.com/moby/buildkit/frontend/gateway"
	"github.com/moby/buildkit/frontend/gateway/forwarder"
	"github.com/moby/buildkit/session"
	containerdsnapshot "github.com/moby/buildkit/snapshot/containerd"
	"github.com/moby/buildkit/solver"
	"github.com/moby/buildkit/solver/bboltcachestorage"
	"github.com/moby/buildkit/util/db/boltutil"
	"github.com/moby/buildkit/util/disk"
	"github.com/moby/buildkit/util/grpcerrors"
	"github.com/moby/buildkit/util/network/netproviders"
	"github.com/moby/buildkit/util/resolver"
	"github.com/moby/buildkit/version"
	"github.com/moby/buildkit/worker"
	"github.com/moby/buildkit/worker/base"
	"github.com/moby/buildkit/worker/containerd"
	"github.com/moby/sys/userns"
	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// RootEnv names the engine's state directory instead of the default
// (/var/lib/commit-frontend for root, $XDG_DATA_HOME/commit-frontend for
// other users and in rootless containerd's namespaces).
const RootEnv = "COMMIT_FRONTEND_ENGINE_ROOT"

// LockTimeout is how long a process waits for another one running the
// engine of the same state directory.
var LockTimeout = 10 * time.Minute

// DefaultRoot is the engine's state directory.
func DefaultRoot() (string, error) {
	if r := os.Getenv(RootEnv); r != "" {
		return r, nil
	}
	// In rootless containerd's namespaces the process is root, but
	// /var/lib is RootlessKit's copy, in memory: the state goes where the
	// user's data does, as rootless containerd's own.
	if os.Geteuid() == 0 && !rootlessutil.IsRootlessChild() {
		return "/var/lib/commit-frontend", nil
	}
	d, err := rootlessutil.XDGDataHome()
	if err != nil {
		return "", errors.Wrapf(err, "no place for the engine's state: set XDG_DATA_HOME or %s", RootEnv)
	}
	return filepath.Join(d, "commit-frontend"), nil
}

// Options say where the engine works.
type Options struct {
	// Root is the state directory (DefaultRoot).
	Root string
	// Address, Namespace and Snapshotter are the containerd the engine's
	// worker works in: its content store, snapshots and image store.
	Address, Namespace, Snapshotter string
	// Warnf, when set, is told when the engine waits for another process.
	Warnf func(format string, args ...any)
}

// Engine is a running in-process BuildKit.
type Engine struct {
	client  *bkclient.Client
	closers []func() error
	trees   trees
	// ready is closed once the engine serves, or failed to start (err).
	ready chan struct{}
	err   error
}

// Client is a BuildKit client of the engine. Its calls wait until the
// engine serves (Ready).
func (e *Engine) Client() *bkclient.Client { return e.client }

// Ready waits until the engine serves, and tells why it could not start.
func (e *Engine) Ready() error {
	<-e.ready
	return e.err
}

// Close stops the engine and lets the next process run it.
func (e *Engine) Close() error {
	if e.ready != nil {
		<-e.ready
	}
	var first error
	for i := len(e.closers) - 1; i >= 0; i-- {
		if err := e.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	e.closers = nil
	return first
}

// Start starts the engine and waits until it serves. The caller must Close
// it.
func Start(ctx context.Context, opt Options) (*Engine, error) {
	e, err := StartBackground(ctx, opt)
	if err != nil {
		return nil, err
	}
	if err := e.Ready(); err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// StartBackground takes the state directory's lock (waiting for the
// process that holds it, and naming it) and starts the engine while the
// caller goes on: most of the start is BuildKit's worker's (its network
// provider makes an RSA key, about 50 ms of CPU), which a commit overlaps
// with finding the container and preparing its export. Ready tells when it serves; the client's calls
// wait until then. The caller must Close it.
func StartBackground(ctx context.Context, opt Options) (_ *Engine, retErr error) {
	if opt.Snapshotter == "" {
		opt.Snapshotter = "overlayfs"
	}
	// BuildKit logs through logrus what buildkitd writes in its log (the
	// network mode chosen, GC runs): not for the terminal of a commit.
	if logrus.GetLevel() > logrus.ErrorLevel {
		logrus.SetLevel(logrus.ErrorLevel)
	}
	e := &Engine{}
	defer func() {
		if retErr != nil {
			_ = e.Close()
		}
	}()
	if err := os.MkdirAll(opt.Root, 0o700); err != nil {
		return nil, errors.Wrap(err, "the engine's state directory")
	}
	unlock, err := lock(ctx, opt.Root, opt.Warnf)
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, unlock)
	// The socket listens at once: a client's connection waits in its
	// backlog until the server serves.
	sock := filepath.Join(opt.Root, "engine.sock")
	_ = os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, errors.Wrap(err, "the engine's socket")
	}
	e.closers = append(e.closers, func() error {
		_ = l.Close()
		_ = os.Remove(sock)
		return nil
	})
	c, err := bkclient.New(context.WithoutCancel(ctx), "unix://"+sock)
	if err != nil {
		return nil, err
	}
	e.client = c
	e.closers = append(e.closers, c.Close)
	e.trees = trees{offers: map[string]offer{}}
	e.ready = make(chan struct{})
	go func() {
		defer close(e.ready)
		if e.err = e.start(context.WithoutCancel(ctx), opt, l); e.err != nil {
			// The client's calls fail rather than wait.
			_ = l.Close()
		}
	}()
	return e, nil
}

// start starts BuildKit's worker and controller and serves them on l.
func (e *Engine) start(ctx context.Context, opt Options, l net.Listener) error {
	sm, err := session.NewManager()
	if err != nil {
		return err
	}
	wopt, err := containerd.NewWorkerOpt(containerd.WorkerOptions{
		Root:            opt.Root,
		Address:         opt.Address,
		SnapshotterName: opt.Snapshotter,
		Namespace:       opt.Namespace,
		// In a user namespace (rootless containerd's), RUN steps run as
		// buildkitd runs them there.
		Rootless: userns.RunningInUserNS(),
		// RUN steps get the host's network where no CNI is set up, as
		// buildkitd gives them.
		NetworkOpt: netproviders.Opt{Mode: "auto"},
	}, ctd.WithTimeout(60*time.Second))
	if err != nil {
		return errors.Wrapf(err, "BuildKit's containerd worker on %s", opt.Address)
	}
	wopt.BuildkitVersion = bkclient.BuildkitVersion{Package: version.Package, Version: version.Version, Revision: version.Revision}
	wopt.RegistryHosts = resolver.NewRegistryConfig(nil)
	wopt.GCPolicy = gcPolicy(opt.Root)
	// The differ's blobs go to containerd's content directory straight
	// from this process where it can write there, else through containerd's
	// API in large writes.
	var store content.Store = bigWrites{wopt.ContentStore.Store}
	if dir := contentDir(ctx, opt.Address); dir != "" {
		store = localContent{Store: store, dir: dir}
	}
	wopt.ContentStore = containerdsnapshot.NewContentStore(store, wopt.ContentStore.Namespace())
	is := &imageStore{Store: wopt.ImageStore}
	wopt.ImageStore = is
	bw, err := base.NewWorker(ctx, wopt)
	if err != nil {
		return errors.Wrap(err, "starting BuildKit's worker")
	}
	e.closers = append(e.closers, bw.Close)
	w := &engineWorker{Worker: bw, images: is}
	e.trees.w = bw
	bw.SourceManager.Register(&e.trees)
	wc := &worker.Controller{}
	if err := wc.Add(w); err != nil {
		return err
	}
	gw, err := gateway.NewGatewayFrontend(wc.Infos(), nil)
	if err != nil {
		return err
	}
	frontends := map[string]frontend.Frontend{
		"dockerfile.v0": forwarder.NewGatewayForwarder(wc.Infos(), dockerfile.Build),
		"gateway.v0":    gw,
	}
	cacheStorage, err := bboltcachestorage.NewStore(filepath.Join(opt.Root, "cache.db"))
	if err != nil {
		return errors.Wrap(err, "the engine's cache database")
	}
	e.closers = append(e.closers, cacheStorage.Close)
	historyDB, err := boltutil.SafeOpen(filepath.Join(opt.Root, "history.db"), 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, NoFreelistSync: true})
	if err != nil {
		return errors.Wrap(err, "the engine's history database")
	}
	e.closers = append(e.closers, historyDB.Close)
	noHistory := int64(0)
	ctrl, err := control.NewController(control.Opt{
		SessionManager:   sm,
		WorkerController: wc,
		Frontends:        frontends,
		CacheManager:     solver.NewCacheManager(ctx, "local", cacheStorage, worker.NewCacheResultStorage(wc)),
		HistoryDB:        historyDB,
		CacheStore:       cacheStorage,
		LeaseManager:     w.LeaseManager(),
		ContentStore:     w.ContentStore(),
		HistoryConfig:    &config.HistoryConfig{MaxEntries: &noHistory},
		GarbageCollect:   w.GarbageCollect,
	})
	if err != nil {
		return errors.Wrap(err, "starting BuildKit's controller")
	}
	e.closers = append(e.closers, ctrl.Close)

	server := grpc.NewServer(grpc.UnaryInterceptor(grpcerrors.UnaryServerInterceptor), grpc.StreamInterceptor(grpcerrors.StreamServerInterceptor))
	ctrl.Register(server)
	go func() { _ = server.Serve(l) }()
	e.closers = append(e.closers, func() error {
		server.Stop()
		return nil
	})
	// BuildKit collects garbage a second after a solve, when a CLI has
	// usually exited: the engine applies the policy itself as it stops,
	// first thing, when it has not for CollectEvery (a pass costs about
	// 0.1 s, a third of a small commit; each commit removes its own
	// records itself).
	e.closers = append(e.closers, func() error { return collectDue(opt.Root, w) })
	return nil
}

// gcPolicy is buildkitd's default garbage-collection policy for a state
// directory on root's filesystem: what its cache may keep.
func gcPolicy(root string) []bkclient.PruneInfo {
	dstat, _ := disk.GetDiskStat(root)
	var out []bkclient.PruneInfo
	for _, r := range config.DefaultGCPolicy(config.GCConfig{}, dstat) {
		out = append(out, bkclient.PruneInfo{
			Filter: r.Filters, All: r.All, KeepDuration: r.KeepDuration.Duration,
			ReservedSpace: r.ReservedSpace.AsBytes(dstat), MaxUsedSpace: r.MaxUsedSpace.AsBytes(dstat), MinFreeSpace: r.MinFreeSpace.AsBytes(dstat),
		})
	}
	return out
}

// CollectEvery is how often the engine applies its garbage-collection
// policy, at most: as it stops, when the last pass (recorded in the state
// directory) is older.
var CollectEvery = 5 * time.Minute

// collectDue collects the engine's garbage if the last pass is older than
// CollectEvery, and records the pass.
func collectDue(root string, w *engineWorker) error {
	stamp := filepath.Join(root, "gc-stamp")
	if fi, err := os.Stat(stamp); err == nil && time.Since(fi.ModTime()) < CollectEvery {
		return nil
	}
	if err := collect(root, w); err != nil {
		return err
	}
	if err := os.WriteFile(stamp, nil, 0o600); err != nil {
		return err
	}
	now := time.Now()
	return os.Chtimes(stamp, now, now)
}

// collect prunes the worker's cache by its policy, as BuildKit's controller
// does after a solve, unless a usage report read with no image tells that
// the pass would remove nothing (collectable): the pass reads the manifest
// of every image in the namespace for each rule of the policy (which
// records an image shares), about a second with 300 images.
func collect(root string, w *engineWorker) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	policy := w.GCPolicy()
	du, err := w.DiskUsage(ctx, bkclient.DiskUsageInfo{})
	if err != nil {
		return errors.Wrap(err, "the engine's cache usage")
	}
	if dstat, err := disk.GetDiskStat(root); err == nil && !collectable(policy, du, dstat.Free, time.Now()) {
		return nil
	}
	ch := make(chan bkclient.UsageInfo)
	go func() {
		for range ch {
		}
	}()
	err = w.Prune(ctx, ch, policy...)
	close(ch)
	return errors.Wrap(err, "collecting the engine's garbage")
}

// collectable tells whether a pass of policy might remove a record of a
// cache whose records are du, on a disk with free bytes free. A rule
// removes records only when the cache is over the space it keeps (a rule
// keeping no space: always), and only records its filters match that were
// not used for its keep duration, or never (a rule keeping none: of any
// age), leaving internal records to rules with All. It errs towards yes:
// every record counts towards the space (shared ones too, which the rules
// count out), a cache over any bound of a rule is over it, and a record
// may be shared or not for a filter.
func collectable(policy []bkclient.PruneInfo, du []*bkclient.UsageInfo, free int64, now time.Time) bool {
	var total int64
	for _, u := range du {
		total += u.Size
	}
	for _, r := range policy {
		over := true
		if r.MinFreeSpace != 0 || r.MaxUsedSpace != 0 || r.ReservedSpace != 0 {
			over = (r.MinFreeSpace != 0 && free < r.MinFreeSpace) ||
				(r.MaxUsedSpace != 0 && total > r.MaxUsedSpace) ||
				(r.ReservedSpace != 0 && total > r.ReservedSpace)
		}
		if !over {
			continue
		}
		match, err := filters.ParseAll(r.Filter...)
		if err != nil {
			return true
		}
		for _, u := range du {
			if !r.All && (u.RecordType == bkclient.UsageRecordTypeInternal || u.RecordType == bkclient.UsageRecordTypeFrontend) {
				continue
			}
			if r.KeepDuration != 0 && u.LastUsedAt != nil && !u.LastUsedAt.Before(now.Add(-r.KeepDuration)) {
				continue
			}
			if match.Match(usageFields(u)) {
				return true
			}
		}
	}
	return false
}

// usageFields are the fields of u that a prune's filters name, as
// BuildKit's cache reads them; shared and private both hold, the sharing
// being unknown.
func usageFields(u *bkclient.UsageInfo) filters.Adaptor {
	return filters.AdapterFunc(func(fieldpath []string) (string, bool) {
		if len(fieldpath) == 0 {
			return "", false
		}
		switch fieldpath[0] {
		case "id":
			return u.ID, u.ID != ""
		case "parents":
			return strings.Join(u.Parents, ";"), len(u.Parents) > 0
		case "description":
			return u.Description, u.Description != ""
		case "type":
			return string(u.RecordType), u.RecordType != ""
		case "inuse":
			return "", u.InUse
		case "mutable":
			return "", u.Mutable
		case "immutable":
			return "", !u.Mutable
		case "shared", "private":
			return "", true
		}
		return "", false
	})
}

// lock takes the state directory's lock, waiting at most LockTimeout for
// the process that holds it and naming it.
func lock(ctx context.Context, root string, warnf func(string, ...any)) (func() error, error) {
	p := filepath.Join(root, "engine.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, errors.Wrap(err, "the engine's lock")
	}
	holder, err := flock.Acquire(ctx, f, LockTimeout, func(holder string) {
		if warnf != nil {
			warnf("waiting for %s, which runs the engine in %s", holder, root)
		}
	})
	if err != nil {
		f.Close()
		if errors.Is(err, flock.ErrTimeout) {
			return nil, errors.Errorf("%s has run the engine in %s for more than %s (lock %s)", holder, root, LockTimeout, p)
		}
		return nil, err
	}
	return func() error {
		flock.Release(f)
		return f.Close()
	}, nil
}
