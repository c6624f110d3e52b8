package flock

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pkg/errors"
)

func open(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestAcquire: a second holder (another open file, as another process has)
// waits, is told whom for, gets the lock once the first lets go, and past
// its timeout gives up naming the holder.
func TestAcquire(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	first, second := open(t, p), open(t, p)
	if _, err := Acquire(context.Background(), first, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	var told []string
	done := make(chan error, 1)
	go func() {
		_, err := Acquire(context.Background(), second, 10*time.Second, func(h string) { told = append(told, h) })
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("took a held lock: %v", err)
	default:
	}
	Release(first)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := "commit-frontend process " + strconv.Itoa(os.Getpid())
	if len(told) != 1 || told[0] != want {
		t.Errorf("told %q, want once %q", told, want)
	}
	holder, err := Acquire(context.Background(), first, 100*time.Millisecond, nil)
	if !errors.Is(err, ErrTimeout) || holder != want {
		t.Errorf("timeout: %q %v", holder, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Acquire(ctx, first, time.Minute, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}
