package changeset

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUpperdirMatchesWalkingDiff changes a real overlayfs mount and checks
// that reading its upper directory and diffing the mounted tree against the
// lower one give the same change set.
func TestUpperdirMatchesWalkingDiff(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("this test mounts overlayfs and needs root (the test suite runs as root)")
	}
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC)
	for p, c := range map[string]string{"etc/passwd": "root", "etc/motd": "old", "bin/vi": "vi", "var/cache/a": "a", "var/cache/b": "b", "keep/me": "k"} {
		full := filepath.Join(lower, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(c), 0o644))
	}
	must(t, filepath.Walk(lower, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) }))
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	must(t, unix.Mount("overlay", merged, "overlay", 0, opts))
	defer unix.Unmount(merged, unix.MNT_DETACH)

	at := time.Date(2022, 2, 2, 2, 2, 2, 0, time.UTC)
	must(t, os.WriteFile(filepath.Join(merged, "etc/motd"), []byte("new motd"), 0o644))
	must(t, os.Remove(filepath.Join(merged, "bin/vi")))
	must(t, os.RemoveAll(filepath.Join(merged, "var/cache")))
	must(t, os.MkdirAll(filepath.Join(merged, "var/cache"), 0o700))
	must(t, os.WriteFile(filepath.Join(merged, "var/cache/c"), []byte("c"), 0o600))
	must(t, os.MkdirAll(filepath.Join(merged, "new/deep"), 0o750))
	must(t, os.WriteFile(filepath.Join(merged, "new/deep/f"), []byte("f"), 0o640))
	must(t, os.Lchown(filepath.Join(merged, "new/deep/f"), 1000, 1000))
	must(t, os.Symlink("/etc/shadow", filepath.Join(merged, "new/link")))
	must(t, os.Link(filepath.Join(merged, "new/deep/f"), filepath.Join(merged, "new/hard")))
	must(t, unix.Mkfifo(filepath.Join(merged, "new/fifo"), 0o600))
	must(t, filepath.Walk(merged, func(p string, fi os.FileInfo, _ error) error {
		if fi.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		return os.Chtimes(p, at, at)
	}))

	fromUpper := read(t, func(w *Writer) error { return FromUpperdir(context.Background(), upper, UpperOpt{}, w) })
	fromDiff := read(t, func(w *Writer) error { return FromDiff(context.Background(), lower, merged, w) })
	if fromUpper.entries != fromDiff.entries {
		t.Errorf("tar entries differ:\nupperdir:\n%s\nwalking diff:\n%s", fromUpper.entries, fromDiff.entries)
	}
	// The upper directory marks var/cache opaque; the walking diff deletes
	// what it lost. Both must take away a and b and keep keep/me.
	for _, cs := range []changeSet{fromUpper, fromDiff} {
		gone := map[string]bool{}
		for _, d := range cs.deleted {
			gone[d] = true
		}
		for _, o := range cs.opaque {
			gone[o+"/a"], gone[o+"/b"] = true, true
		}
		if !gone["bin/vi"] || !gone["var/cache/a"] || !gone["var/cache/b"] || gone["keep/me"] {
			t.Errorf("deletions %q, opaque %q", cs.deleted, cs.opaque)
		}
	}
}

type changeSet struct {
	entries         string
	deleted, opaque []string
}

func read(t *testing.T, fill func(w *Writer) error) changeSet {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(dir, nil)
	must(t, err)
	must(t, fill(w))
	_, err = w.Close()
	must(t, err)
	f, err := os.Open(filepath.Join(dir, TarFile))
	must(t, err)
	defer f.Close()
	var lines []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		dt, err := io.ReadAll(tr)
		must(t, err)
		lines = append(lines, fmt.Sprintf("%q type=%c mode=%o %d:%d size=%d link=%q mtime=%d sha=%x xattrs=%v",
			h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, h.Size, h.Linkname, h.ModTime.Unix(), sha256.Sum256(dt), h.PAXRecords))
	}
	sort.Strings(lines)
	wh, err := os.ReadFile(filepath.Join(dir, WhiteoutFile))
	must(t, err)
	del, opq, err := ParseWhiteouts(wh)
	must(t, err)
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return changeSet{entries: b.String(), deleted: del, opaque: opq}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestTarOverhead: an entry with nothing unusual costs one 512-byte header,
// so many small files cross the session at most twice their size.
func TestTarOverhead(t *testing.T) {
	upper := t.TempDir()
	for i := 0; i < 1000; i++ {
		must(t, os.WriteFile(filepath.Join(upper, fmt.Sprintf("f%04d", i)), bytes.Repeat([]byte{'x'}, 512), 0o644))
	}
	dir := t.TempDir()
	w, err := Create(dir, nil)
	must(t, err)
	must(t, FromUpperdir(context.Background(), upper, UpperOpt{}, w))
	m, err := w.Close()
	must(t, err)
	if m.Bytes != 512*1000 || m.TarSize > 2*m.Bytes+10240 {
		t.Errorf("%d bytes of content took a %d-byte tar", m.Bytes, m.TarSize)
	}
}

// TestPathTooLong: a container can make a tree deeper than a path can be
// named from the host; reading it fails with a message that says so.
func TestPathTooLong(t *testing.T) {
	upper := t.TempDir()
	fd, err := unix.Open(upper, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	name := string(bytes.Repeat([]byte("d"), 200))
	for i := 0; i < 25; i++ { // 25 × 201 bytes > 4096
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	w, err := Create(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	err = FromUpperdir(context.Background(), upper, UpperOpt{}, w)
	if err == nil || !strings.Contains(err.Error(), "longer than the kernel lets a path be named (PATH_MAX, 4096 bytes)") {
		t.Errorf("error: %v", err)
	}
}

// TestOpaqueOnlyOverLowerDirectories: an opaque mark replaces a directory
// only where a lower layer has one at that path. A directory overlayfs
// marked that has nothing below it (created or moved under a merged
// parent) is a new directory; the change set then stays one the tree
// transfer can carry. Without the lowers every mark counts.
func TestOpaqueOnlyOverLowerDirectories(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	must(t, os.MkdirAll(filepath.Join(lower, "usr/share/old"), 0o755))
	must(t, os.WriteFile(filepath.Join(lower, "usr/share/file"), nil, 0o644))
	must(t, os.Symlink("/etc", filepath.Join(lower, "usr/link")))
	for _, d := range []string{"usr/share/old", "usr/share/new", "usr/share/file", "usr/link/inner", "fresh/deep"} {
		must(t, os.MkdirAll(filepath.Join(upper, d), 0o755))
		must(t, unix.Setxattr(filepath.Join(upper, d), "trusted.overlay.opaque", []byte("y"), 0))
	}
	read := func(lowers []string) []string {
		w, p := Stream(nil)
		defer p.Release()
		must(t, FromUpperdir(context.Background(), upper, UpperOpt{Lowers: lowers}, w))
		_, err := w.Close()
		must(t, err)
		return w.Removals()
	}
	// usr/share/old is a directory below (a file, usr/share/file, is
	// replaced by any directory without a mark); usr/link/inner resolves
	// through a symlink below, which is not followed: kept, as a mark that
	// cannot be told.
	if got, want := read([]string{t.TempDir(), lower}), []string{"usr/link/inner", "usr/share/old"}; !slices.Equal(sorted(got), want) {
		t.Errorf("with the lowers: removals %q, want %q", got, want)
	}
	if got := read(nil); len(got) != 5 {
		t.Errorf("without lowers: removals %q, want all 5 marks", got)
	}
	w, p := Stream(nil)
	defer p.Release()
	must(t, os.RemoveAll(filepath.Join(upper, "usr/share/old")))
	must(t, os.RemoveAll(filepath.Join(upper, "usr/link")))
	must(t, FromUpperdir(context.Background(), upper, UpperOpt{Lowers: []string{lower}}, w))
	_, err := w.Close()
	must(t, err)
	if err := p.TreeOK(); err != nil {
		t.Errorf("new directories marked opaque keep the tree transfer from the change set: %v", err)
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
