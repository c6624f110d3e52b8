package engine

import (
	"context"
	"fmt"
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

// TestLockWaits: a second holder of the state directory is told whom it
// waits for, and past LockTimeout gives up naming the holder and the lock.
func TestLockWaits(t *testing.T) {
	root := t.TempDir()
	unlock, err := lock(context.Background(), root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	old := LockTimeout
	LockTimeout = 100 * time.Millisecond
	defer func() { LockTimeout = old }()
	var told []string
	_, err = lock(context.Background(), root, func(format string, args ...any) { told = append(told, fmt.Sprintf(format, args...)) })
	holder := "commit-frontend process " + strconv.Itoa(os.Getpid())
	if err == nil || !strings.Contains(err.Error(), holder+" has run the engine in "+root) || !strings.Contains(err.Error(), filepath.Join(root, "engine.lock")) {
		t.Errorf("timeout: %v", err)
	}
	if len(told) != 1 || told[0] != "waiting for "+holder+", which runs the engine in "+root {
		t.Errorf("told %q", told)
	}
}
