package container

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/commit-frontend/commit-frontend/internal/flock"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/containerd/nerdctl/v2/pkg/rootlessutil"
	digest "github.com/opencontainers/go-digest"
	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// StateDirEnv names a directory to keep locks and pause records in instead
// of the default (/run/commit-frontend for root, else, and in rootless
// containerd's namespaces, $XDG_RUNTIME_DIR/commit-frontend). It must belong to the user running the
// commit and be writable by nobody else.
const StateDirEnv = "COMMIT_FRONTEND_STATE_DIR"

// LockTimeout is how long a commit waits for another commit of the same
// container to finish reading it.
var LockTimeout = 5 * time.Minute

// resumeFor is how long a resume is retried (containerd may be restarting).
const resumeFor = time.Minute

// stateDir opens the directory holding locks and pause records: created
// if missing, never through a symlink, owned by this user and writable by
// nobody else, and the same whatever TMPDIR says.
func stateDir() (*os.File, error) {
	dir := os.Getenv(StateDirEnv)
	if dir == "" {
		// In rootless containerd's namespaces the process is root, but
		// /run is RootlessKit's copy: the user's runtime directory is
		// the one every rootless commit shares.
		if os.Geteuid() == 0 && !rootlessutil.IsRootlessChild() {
			dir = "/run/commit-frontend"
		} else if rt, err := rootlessutil.XDGRuntimeDir(); err == nil {
			dir = filepath.Join(rt, "commit-frontend")
		} else {
			return nil, errors.Errorf("no place for commit-frontend's locks: run as root, or set XDG_RUNTIME_DIR or %s", StateDirEnv)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !os.IsExist(err) {
		return nil, errors.Wrap(err, "creating the state directory")
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Wrapf(err, "state directory %s (it must be a directory, not a symlink)", dir)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		unix.Close(fd)
		return nil, errors.Errorf("state directory %s belongs to uid %d with mode %o: it must belong to uid %d and be writable by nobody else; remove it and commit again", dir, st.Uid, st.Mode&0o7777, os.Geteuid())
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// openState opens (creating it) a file in the state directory, never
// through a symlink, and checks it is a plain file of this user's.
func openState(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, errors.Wrapf(err, "opening %s/%s", dir.Name(), name)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() || st.Nlink != 1 {
		unix.Close(fd)
		return nil, errors.Errorf("%s/%s is not a plain file of uid %d: remove it and commit again", dir.Name(), name, os.Geteuid())
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir.Name(), name)), nil
}

// Pauser pauses and resumes a container: through its containerd task, or
// through docker for a docker container.
type Pauser interface {
	State(ctx context.Context) (containerd.ProcessStatus, error)
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	// Pids are the host PIDs of every process of the container (its
	// cgroup's: exec'd processes too).
	Pids(ctx context.Context) ([]int, error)
}

// taskPauser pauses a containerd task.
type taskPauser struct{ t containerd.Task }

func (p taskPauser) State(ctx context.Context) (containerd.ProcessStatus, error) {
	s, err := p.t.Status(ctx)
	if errdefs.IsNotFound(err) {
		return containerd.Stopped, nil
	}
	return s.Status, err
}

func (p taskPauser) Pause(ctx context.Context) error         { return p.t.Pause(ctx) }
func (p taskPauser) Resume(ctx context.Context) error        { return p.t.Resume(ctx) }
func (p taskPauser) Pids(ctx context.Context) ([]int, error) { return taskPids(ctx, p.t) }

func taskPids(ctx context.Context, t containerd.Task) ([]int, error) {
	ps, err := t.Pids(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(ps))
	for _, p := range ps {
		out = append(out, int(p.Pid))
	}
	return out, nil
}

// Guard is what a commit holds while it may pause a container: the
// container's lock, and a record that says it paused it.
type Guard struct {
	dir    *os.File
	lock   *os.File
	record string
	task   Pauser
	id     string
	warnf  func(string, ...any)
}

// Lock takes the exclusive lock of the snapshot of tg (a container of
// namespace ns, named id in messages), shared by every commit-frontend
// process on the machine, waiting at most LockTimeout. A container that an
// earlier commit paused and never resumed (it was killed) is resumed first.
func Lock(ctx context.Context, ns string, tg *Target, id string, warnf func(string, ...any)) (*Guard, error) {
	snapshotter, snapshot, task := tg.Snapshotter, tg.Snapshot, tg.Pauser
	dir, err := stateDir()
	if err != nil {
		return nil, err
	}
	key := Sanitize(ns) + "_" + Sanitize(snapshotter) + "_" + digest.FromString(snapshot).Encoded()[:32]
	f, err := openState(dir, key+".lock")
	if err != nil {
		dir.Close()
		return nil, err
	}
	g := &Guard{dir: dir, lock: f, record: key + ".paused", task: task, id: id, warnf: warnf}
	holder, err := flock.Acquire(ctx, f, LockTimeout, func(holder string) {
		if warnf != nil {
			warnf("waiting for %s, which is committing container %s", holder, id)
		}
	})
	if err != nil {
		g.close()
		if errors.Is(err, flock.ErrTimeout) {
			return nil, errors.Errorf("container %s: %s has been committing it for more than %s (lock %s)", id, holder, LockTimeout, f.Name())
		}
		return nil, errors.Wrap(err, "container lock")
	}
	if err := g.repair(ctx); err != nil {
		g.Unlock()
		return nil, err
	}
	return g, nil
}

// repair resumes a container that a killed commit left paused.
func (g *Guard) repair(ctx context.Context) error {
	var st unix.Stat_t
	if err := unix.Fstatat(int(g.dir.Fd()), g.record, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil
	}
	s, err := g.task.State(ctx)
	if err != nil {
		return errors.Wrapf(err, "container %s: task status", g.id)
	}
	if s == containerd.Paused {
		if err := g.resume(ctx); err != nil {
			return err
		}
		if g.warnf != nil {
			g.warnf("container %s was left paused by an earlier commit that did not finish; resumed it", g.id)
		}
		return nil
	}
	return g.clearRecord()
}

// Pause pauses the container and returns the function that resumes it,
// to run on every way out. The record is written first: a commit killed
// from here on leaves it for the next commit of the container to see.
func (g *Guard) Pause(ctx context.Context) (resume func() error, err error) {
	f, err := openState(g.dir, g.record)
	if err != nil {
		return nil, err
	}
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	f.Close()
	// Not cancelled by Ctrl-C: a Pause abandoned half-way may still
	// take effect, and the container must then be resumed.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	perr := g.task.Pause(pctx)
	resume = func() error { return g.resume(ctx) }
	if perr == nil {
		return resume, nil
	}
	if !pauseMayHaveTakenEffect(perr) {
		// Refused outright, it froze nothing. A container that is
		// paused now was paused by someone else — the user, between the
		// commit's look at it and its Pause — and is left paused: the
		// commit reads it as it is and resumes nothing.
		if err := g.clearRecord(); err != nil {
			return nil, err
		}
		if st, err := g.task.State(ctx); err == nil && st == containerd.Paused {
			return func() error { return nil }, nil
		}
		if rootlessutil.IsRootlessChild() {
			return nil, errors.Wrapf(perr, "pausing container %s (rootless containerd pauses only a container whose freezer cgroup the user may write: cgroup v2 with delegation, as systemd gives it; --pause=false reads it while it runs)", g.id)
		}
		return nil, errors.Wrapf(perr, "pausing container %s", g.id)
	}
	if err := resume(); err != nil {
		return nil, errors.Wrapf(err, "pausing container %s failed (%v), and resuming it too", g.id, perr)
	}
	return nil, errors.Wrapf(perr, "pausing container %s", g.id)
}

// pauseMayHaveTakenEffect tells whether a Pause that failed may still have
// frozen the container: one cut short (a timeout, a cancel, a daemon gone
// away) may have; one the runtime refused (runc's "cannot pause a paused
// container", docker's conflict) has not.
func pauseMayHaveTakenEffect(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errdefs.IsDeadlineExceeded(err) || errdefs.IsCanceled(err) || errdefs.IsUnavailable(err)
}

// resume resumes the container, retrying while containerd does not answer;
// a task that is not paused (any more) is left as it is.
func (g *Guard) resume(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resumeFor)
	defer cancel()
	for {
		err := g.task.Resume(rctx)
		if err == nil {
			return g.clearRecord()
		}
		if s, serr := g.task.State(rctx); serr == nil && s != containerd.Paused {
			return g.clearRecord()
		}
		select {
		case <-rctx.Done():
			return errors.Wrapf(err, "resuming container %s: it is still paused; the next commit of it resumes it, or run: ctr tasks resume %s", g.id, g.id)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (g *Guard) clearRecord() error {
	if err := unix.Unlinkat(int(g.dir.Fd()), g.record, 0); err != nil && err != unix.ENOENT {
		return errors.Wrap(err, "removing the pause record")
	}
	return nil
}

// Unlock releases the lock.
func (g *Guard) Unlock() {
	flock.Release(g.lock)
	g.close()
}

func (g *Guard) close() {
	g.lock.Close()
	g.dir.Close()
}
