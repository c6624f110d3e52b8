// Package flock is the exclusive lock commit-frontend processes share on a
// file of theirs (flock(2)): a waiter is told which process holds it, the
// holder's pid being written in the file.
package flock

import (
	"context"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/errors"
	"golang.org/x/sys/unix"
)

// ErrTimeout is returned when the lock was held by another process for the
// whole wait.
var ErrTimeout = errors.New("the lock stayed held")

// Acquire takes the exclusive lock on f, waiting at most timeout; waiting,
// when set, is called once with the holder (Holder) when Acquire has to
// wait. On success this process's pid is written in f. On timeout the error
// is ErrTimeout, and holder says who held the lock.
func Acquire(ctx context.Context, f *os.File, timeout time.Duration, waiting func(holder string)) (holder string, _ error) {
	deadline := time.Now().Add(timeout)
	told := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return "", errors.Wrapf(err, "locking %s", f.Name())
		}
		holder = Holder(f)
		if !told && waiting != nil {
			waiting(holder)
			told = true
		}
		if time.Now().After(deadline) {
			return holder, ErrTimeout
		}
		select {
		case <-ctx.Done():
			return holder, context.Cause(ctx)
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return "", nil
}

// Release lets the lock on f go; the pid written in it goes too.
func Release(f *os.File) {
	_ = f.Truncate(0)
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
}

// Holder describes the process holding the lock on f, as far as f says.
func Holder(f *os.File) string {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	if pid := strings.TrimSpace(string(buf[:n])); pid != "" {
		return "commit-frontend process " + pid
	}
	return "another commit-frontend process"
}
