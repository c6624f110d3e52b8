package changeset

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func streamUpper(t *testing.T, upper string) (*Plan, *Manifest) {
	t.Helper()
	w, p := Stream(map[string]string{"layer": "gzip::"})
	must(t, FromUpperdir(context.Background(), upper, UpperOpt{}, w))
	m, err := w.Close()
	must(t, err)
	return p, m
}

// stageUpper stages the change set of upper in a new directory, as a
// running container's is staged, and returns it with its manifest.
func stageUpper(t *testing.T, upper string) (string, *Manifest) {
	t.Helper()
	staged := t.TempDir()
	sw, err := Create(staged, map[string]string{"layer": "gzip::"})
	must(t, err)
	must(t, FromUpperdir(context.Background(), upper, UpperOpt{}, sw))
	m, err := sw.Close()
	must(t, err)
	return staged, m
}

func readAll(t *testing.T, p *Plan, name string) ([]byte, error) {
	t.Helper()
	var doneErr error
	fs := p.TarFS(context.Background(), func(err error) { doneErr = err })
	rc, err := fs.Open(name)
	must(t, err)
	defer rc.Close()
	dt, err := io.ReadAll(rc)
	must(t, err)
	return dt, doneErr
}

// TestStreamEqualsStaged: the streamed change set is byte for byte the
// staged one, and its size is known before it is written.
func TestStreamEqualsStaged(t *testing.T) {
	upper := t.TempDir()
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	must(t, os.MkdirAll(filepath.Join(upper, "a/b"), 0o750))
	must(t, os.WriteFile(filepath.Join(upper, "a/b/file"), bytes.Repeat([]byte("x"), 100000), 0o644))
	must(t, os.Chtimes(filepath.Join(upper, "a/b/file"), at, at))
	must(t, os.Link(filepath.Join(upper, "a/b/file"), filepath.Join(upper, "a/link")))
	must(t, os.WriteFile(filepath.Join(upper, "empty"), nil, 0o600))
	must(t, os.Symlink("/etc/shadow", filepath.Join(upper, "sym")))
	must(t, unix.Mkfifo(filepath.Join(upper, "fifo"), 0o600))
	must(t, unix.Mknod(filepath.Join(upper, "gone"), unix.S_IFCHR, 0))
	must(t, os.WriteFile(filepath.Join(upper, strings.Repeat("n", 200)+"\xff"), []byte("long"), 0o644))
	must(t, unix.Setxattr(filepath.Join(upper, "a/b/file"), "user.x", []byte("y"), 0))

	staged, sm := stageUpper(t, upper)
	want, err := os.ReadFile(filepath.Join(staged, TarFile))
	must(t, err)

	w, m := streamUpper(t, upper)
	defer w.Release()
	if m.TarSize != int64(len(want)) || m.Entries != sm.Entries || m.Bytes != sm.Bytes || m.Whiteouts != sm.Whiteouts {
		t.Fatalf("streamed manifest %+v, staged %+v (tar %d bytes)", m, sm, len(want))
	}
	got, err := readAll(t, w, TarFile)
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Errorf("the streamed tar differs from the staged one (%d and %d bytes)", len(got), len(want))
	}
	wh, err := readAll(t, w, WhiteoutFile)
	must(t, err)
	if wantWh, _ := os.ReadFile(filepath.Join(staged, WhiteoutFile)); !bytes.Equal(wh, wantWh) {
		t.Errorf("whiteouts differ")
	}
}

// TestStreamChangedFile: a file replaced or grown between the walk and
// the stream fails the stream, naming it.
func TestStreamChangedFile(t *testing.T) {
	for name, change := range map[string]func(p string){
		"replaced": func(p string) {
			must(t, os.Remove(p))
			must(t, os.WriteFile(p, []byte("other"), 0o644))
		},
		"grown":   func(p string) { must(t, os.WriteFile(p, []byte("longer content"), 0o644)) },
		"symlink": func(p string) { must(t, os.Remove(p)); must(t, os.Symlink("/etc/passwd", p)) },
	} {
		t.Run(name, func(t *testing.T) {
			upper := t.TempDir()
			p := filepath.Join(upper, "f")
			must(t, os.WriteFile(p, []byte("short"), 0o644))
			w, _ := streamUpper(t, upper)
			defer w.Release()
			change(p)
			dt, err := readAll(t, w, TarFile)
			if err == nil || !strings.Contains(err.Error(), `"f"`) {
				t.Errorf("error %v", err)
			}
			if bytes.Contains(dt, []byte("root:")) {
				t.Errorf("host content streamed")
			}
		})
	}
}

// TestStreamOnce: the tar is written once; asking again fails, and says so
// to done, rather than reading a container that may have gone on.
func TestStreamOnce(t *testing.T) {
	upper := t.TempDir()
	must(t, os.WriteFile(filepath.Join(upper, "f"), []byte("x"), 0o644))
	w, _ := streamUpper(t, upper)
	defer w.Release()
	var errs []error
	fs := w.TarFS(context.Background(), func(err error) { errs = append(errs, err) })
	rc, err := fs.Open(TarFile)
	must(t, err)
	_, err = io.ReadAll(rc)
	must(t, err)
	rc.Close()
	if _, err := fs.Open(TarFile); err == nil {
		t.Fatal("a second read of the tar succeeded")
	}
	if len(errs) != 2 || errs[0] != nil || errs[1] == nil {
		t.Errorf("done was told %v", errs)
	}
}
