package engine

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestDefaultRoot(t *testing.T) {
	t.Setenv(RootEnv, "/somewhere")
	if r, err := DefaultRoot(); err != nil || r != "/somewhere" {
		t.Errorf("%s: %q %v", RootEnv, r, err)
	}
	t.Setenv(RootEnv, "")
	r, err := DefaultRoot()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 && r != "/var/lib/commit-frontend" {
		t.Errorf("root's state directory: %q", r)
	}
}

// TestLockWaits: a second holder of the state directory waits, says for
// whom, and gets the lock when the first lets go; past LockTimeout it gives
// up naming the holder.
func TestLockWaits(t *testing.T) {
	root := t.TempDir()
	unlock, err := lock(context.Background(), root, nil)
	if err != nil {
		t.Fatal(err)
	}
	var told []string
	warnf := func(format string, args ...any) { told = append(told, format) }
	done := make(chan error, 1)
	go func() {
		u, err := lock(context.Background(), root, warnf)
		if err == nil {
			err = u()
		}
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("took a held lock: %v", err)
	default:
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(told) != 1 || !strings.Contains(told[0], "which runs the engine in") {
		t.Errorf("told %q", told)
	}

	unlock, err = lock(context.Background(), root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	old := LockTimeout
	LockTimeout = 100 * time.Millisecond
	defer func() { LockTimeout = old }()
	_, err = lock(context.Background(), root, nil)
	if err == nil || !strings.Contains(err.Error(), "commit-frontend process "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), filepath.Join(root, "engine.lock")) {
		t.Errorf("timeout: %v", err)
	}
}
