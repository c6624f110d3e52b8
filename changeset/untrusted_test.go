package changeset

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// entries reads a change-set tar: its headers by name, and the first one.
func entries(t *testing.T, dir string) (first *tar.Header, byName map[string]*tar.Header) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, TarFile))
	must(t, err)
	defer f.Close()
	byName = map[string]*tar.Header{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return first, byName
		}
		must(t, err)
		if first == nil {
			first = h
		}
		byName[strings.TrimSuffix(h.Name, "/")] = h
	}
}

func readUpper(t *testing.T, upper string, opt UpperOpt, records map[string]string) (string, *Manifest, error) {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(dir, records)
	must(t, err)
	if err := FromUpperdir(context.Background(), upper, opt, w); err != nil {
		w.Abort()
		return dir, nil, err
	}
	m, err := w.Close()
	return dir, m, err
}

// TestFirstHeader: whatever the first file is called, the tar starts with
// the same fixed header, and its records change the tar's bytes.
func TestFirstHeader(t *testing.T) {
	upper := t.TempDir()
	must(t, os.Mkdir(filepath.Join(upper, "BZh91AY&SY"), 0o755))
	dir, _, err := readUpper(t, upper, UpperOpt{}, map[string]string{"layer": "zstd::"})
	must(t, err)
	raw, err := os.ReadFile(filepath.Join(dir, TarFile))
	must(t, err)
	if !bytes.HasPrefix(raw, []byte(HeaderName)) {
		t.Errorf("the tar starts with %q", raw[:16])
	}
	first, byName := entries(t, dir)
	if first.Typeflag != tar.TypeXGlobalHeader || first.PAXRecords["COMMIT_FRONTEND.layer"] != "zstd::" {
		t.Errorf("first header %+v", first)
	}
	if _, ok := byName["BZh91AY&SY"]; !ok {
		t.Errorf("the directory is missing")
	}
	dir2, _, err := readUpper(t, upper, UpperOpt{}, map[string]string{"layer": "gzip::"})
	must(t, err)
	raw2, err := os.ReadFile(filepath.Join(dir2, TarFile))
	must(t, err)
	if bytes.Equal(raw, raw2) {
		t.Errorf("another compression gives the same tar, and BuildKit the same cached layer")
	}
}

// TestSocketsSkipped: a socket is counted, not written.
func TestSocketsSkipped(t *testing.T) {
	upper := t.TempDir()
	must(t, os.Mkdir(filepath.Join(upper, "run"), 0o755))
	must(t, unix.Mknod(filepath.Join(upper, "run", "app.sock"), unix.S_IFSOCK|0o777, 0))
	dir, m, err := readUpper(t, upper, UpperOpt{}, nil)
	must(t, err)
	_, byName := entries(t, dir)
	if _, ok := byName["run/app.sock"]; ok || m.Sockets != 1 {
		t.Errorf("socket written %v, counted %d", ok, m.Sockets)
	}
	if _, ok := byName["run"]; !ok {
		t.Errorf("its directory is missing")
	}
}

// TestOverlayXattrNamespace: on a rootful mount only trusted.overlay.*
// marks count; user.overlay.* is an ordinary attribute. With userxattr it
// is the other way round.
func TestOverlayXattrNamespace(t *testing.T) {
	if os.Getuid() != 0 {
		t.Fatal("trusted.* xattrs need root (the test suite runs as root)")
	}
	upper := t.TempDir()
	for _, d := range []string{"user-opaque", "trusted-opaque", "user-redirect"} {
		must(t, os.Mkdir(filepath.Join(upper, d), 0o755))
	}
	must(t, unix.Setxattr(filepath.Join(upper, "user-opaque"), "user.overlay.opaque", []byte("y"), 0))
	must(t, unix.Setxattr(filepath.Join(upper, "trusted-opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, unix.Setxattr(filepath.Join(upper, "user-redirect"), "user.overlay.redirect", []byte("/x"), 0))

	dir, _, err := readUpper(t, upper, UpperOpt{}, nil)
	must(t, err)
	wh, err := os.ReadFile(filepath.Join(dir, WhiteoutFile))
	must(t, err)
	_, opaque, err := ParseWhiteouts(wh)
	must(t, err)
	if len(opaque) != 1 || opaque[0] != "trusted-opaque" {
		t.Errorf("rootful: opaque %q, want only trusted-opaque", opaque)
	}
	_, byName := entries(t, dir)
	if _, ok := byName["user-opaque"].PAXRecords["SCHILY.xattr.user.overlay.opaque"]; ok {
		t.Errorf("rootful: the attribute travels, and BuildKit's differ would read it as a mark")
	}

	_, _, err = readUpper(t, upper, UpperOpt{UserXattr: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "user.overlay.redirect") {
		t.Errorf("userxattr: a redirect is not refused: %v", err)
	}
	must(t, unix.Removexattr(filepath.Join(upper, "user-redirect"), "user.overlay.redirect"))
	dir, _, err = readUpper(t, upper, UpperOpt{UserXattr: true}, nil)
	must(t, err)
	wh, err = os.ReadFile(filepath.Join(dir, WhiteoutFile))
	must(t, err)
	if _, opaque, _ = ParseWhiteouts(wh); len(opaque) != 1 || opaque[0] != "user-opaque" {
		t.Errorf("userxattr: opaque %q, want only user-opaque", opaque)
	}
}

// TestSymlinksNeverFollowed: a directory or file that is a symlink out of
// the tree is written as a symlink, and nothing behind it is read.
func TestSymlinksNeverFollowed(t *testing.T) {
	outside := t.TempDir()
	must(t, os.WriteFile(filepath.Join(outside, "secret"), []byte("HOST"), 0o600))
	upper := t.TempDir()
	must(t, os.Symlink(outside, filepath.Join(upper, "dir")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(upper, "file")))
	dir, _, err := readUpper(t, upper, UpperOpt{}, nil)
	must(t, err)
	raw, err := os.ReadFile(filepath.Join(dir, TarFile))
	must(t, err)
	if bytes.Contains(raw, []byte("HOST")) {
		t.Errorf("host content in the change set")
	}
	_, byName := entries(t, dir)
	if byName["dir"].Typeflag != tar.TypeSymlink || byName["file"].Typeflag != tar.TypeSymlink {
		t.Errorf("dir %c, file %c", byName["dir"].Typeflag, byName["file"].Typeflag)
	}
	if _, ok := byName["dir/secret"]; ok {
		t.Errorf("the walk went through the symlink")
	}
}

// TestGrowingFile: a file that grows while it is read fails the read,
// naming it, rather than being cut at its first size.
func TestGrowingFile(t *testing.T) {
	upper := t.TempDir()
	p := filepath.Join(upper, "log")
	must(t, os.WriteFile(p, bytes.Repeat([]byte("x"), 64<<20), 0o644))
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	defer f.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				_, _ = f.Write([]byte("more\n"))
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	_, _, err = readUpper(t, upper, UpperOpt{}, nil)
	close(stop)
	wg.Wait()
	if err == nil || !strings.Contains(err.Error(), `"log" changed size while being read`) {
		t.Errorf("error: %v", err)
	}
}

// TestLinkToBaseFile: the first name of a hard-linked file carries one
// nanosecond on its mtime, so BuildKit's differ cannot take it for the
// base's unchanged file.
func TestLinkToBaseFile(t *testing.T) {
	upper := t.TempDir()
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	must(t, os.WriteFile(filepath.Join(upper, "x"), []byte("x"), 0o644))
	must(t, os.Chtimes(filepath.Join(upper, "x"), at, at))
	must(t, os.Link(filepath.Join(upper, "x"), filepath.Join(upper, "y")))
	dir, _, err := readUpper(t, upper, UpperOpt{}, nil)
	must(t, err)
	_, byName := entries(t, dir)
	if got := byName["x"].ModTime; !got.Equal(at.Add(time.Nanosecond)) {
		t.Errorf("x mtime %v", got)
	}
	if byName["y"].Typeflag != tar.TypeLink || byName["y"].Linkname != "x" || !byName["y"].ModTime.Equal(at.Add(time.Nanosecond)) {
		t.Errorf("y: %+v", byName["y"])
	}
}

// TestRemovalLimit: past the LLB budget the read fails, naming the number
// and what to do instead.
func TestRemovalLimit(t *testing.T) {
	w, err := Create(t.TempDir(), nil)
	must(t, err)
	defer w.Abort()
	var i int
	for i = 0; i < 1_000_000; i++ {
		if err = w.Delete(strings.Repeat("d", 60) + "/" + string(rune('a'+i%26)) + strings.Repeat("x", i%7)); err != nil {
			break
		}
	}
	if err == nil || !strings.Contains(err.Error(), "remove whole directories") || !strings.Contains(err.Error(), "16 MiB") {
		t.Fatalf("after %d removals: %v", i, err)
	}
}

// TestWalkingDiffRemovedTree: a removed directory is one deletion.
func TestWalkingDiffRemovedTree(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	must(t, os.MkdirAll(filepath.Join(lower, "tree", "sub"), 0o755))
	for _, n := range []string{"a", "b", "sub/c"} {
		must(t, os.WriteFile(filepath.Join(lower, "tree", n), []byte(n), 0o644))
	}
	cs := read(t, func(w *Writer) error { return FromDiff(context.Background(), lower, upper, w) })
	if len(cs.deleted) != 1 || cs.deleted[0] != "tree" {
		t.Errorf("deleted %q", cs.deleted)
	}
}

// TestCheckPatternsSymlink: a symlink that a wildcard matches counts as a
// match, and is not followed.
func TestCheckPatternsSymlink(t *testing.T) {
	root := t.TempDir()
	must(t, os.Symlink("/etc", filepath.Join(root, "dX")))
	err := CheckPatterns(root, []string{"d\xff/passwd"})
	if err == nil || !strings.Contains(err.Error(), `also matches "/dX"`) {
		t.Errorf("error: %v", err)
	}
	must(t, os.Remove(filepath.Join(root, "dX")))
	must(t, os.MkdirAll(filepath.Join(root, "dY"), 0o755))
	must(t, CheckPatterns(root, []string{"d\xff/passwd"}))
	must(t, os.WriteFile(filepath.Join(root, "dY", "passwd"), nil, 0o644))
	if err := CheckPatterns(root, []string{"d\xff/passwd"}); err == nil || !strings.Contains(err.Error(), `"/dY/passwd"`) {
		t.Errorf("error: %v", err)
	}
}

// TestExclude: excluded paths are neither added nor removed, by either
// reader, and counted; a "!" pattern brings a path back.
func TestExclude(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	for _, d := range []string{"var/cache/apt", "tmp", "app"} {
		must(t, os.MkdirAll(filepath.Join(lower, d), 0o755))
		must(t, os.MkdirAll(filepath.Join(upper, d), 0o755))
	}
	must(t, os.WriteFile(filepath.Join(lower, "tmp", "old"), []byte("o"), 0o644)) // deleted in upper
	for p, c := range map[string]string{"var/cache/apt/pkg.deb": "deb", "tmp/scratch": "s", "app/main.py": "m", "app/main.pyc": "c", "app/keep.pyc": "k"} {
		must(t, os.WriteFile(filepath.Join(upper, p), []byte(c), 0o644))
	}
	// Container paths as users write them (absolute) and as .dockerignore
	// has them; one pattern that matches nothing.
	patterns := []string{"/var/cache", "tmp/", "**/*.pyc", "!/app/keep.pyc", "/root/.ssh"}
	dir := t.TempDir()
	w, err := Create(dir, nil)
	must(t, err)
	must(t, w.Exclude(patterns))
	must(t, FromDiff(context.Background(), lower, upper, w))
	m, err := w.Close()
	must(t, err)
	_, byName := entries(t, dir)
	for _, p := range []string{"var/cache/apt/pkg.deb", "tmp/scratch", "app/main.pyc"} {
		if _, ok := byName[p]; ok {
			t.Errorf("%s was not excluded", p)
		}
	}
	for _, p := range []string{"app/main.py", "app/keep.pyc"} {
		if _, ok := byName[p]; !ok {
			t.Errorf("%s is missing", p)
		}
	}
	wh, err := os.ReadFile(filepath.Join(dir, WhiteoutFile))
	must(t, err)
	if del, _, _ := ParseWhiteouts(wh); len(del) != 0 {
		t.Errorf("an excluded removal was recorded: %q", del)
	}
	if m.Excluded == 0 {
		t.Errorf("nothing counted as excluded")
	}
	if unused := w.UnusedExcludes(); len(unused) != 1 || unused[0] != "/root/.ssh" {
		t.Errorf("unused patterns %q, want /root/.ssh alone", unused)
	}
	if err := (&Writer{}).Exclude([]string{"/"}); err == nil || !strings.Contains(err.Error(), `"/"`) {
		t.Errorf("--exclude / : %v", err)
	}

	dir = t.TempDir()
	w, err = Create(dir, nil)
	must(t, err)
	must(t, w.Exclude(patterns))
	must(t, FromUpperdir(context.Background(), upper, UpperOpt{}, w))
	_, err = w.Close()
	must(t, err)
	_, byName = entries(t, dir)
	if _, ok := byName["app/main.pyc"]; ok {
		t.Errorf("upperdir: app/main.pyc was not excluded")
	}
	if _, ok := byName["app/keep.pyc"]; !ok {
		t.Errorf("upperdir: app/keep.pyc is missing")
	}
}

// TestWhiteoutNamesSkipped: a file the container named ".wh.passwd" would
// delete passwd in a layer: both readers leave it (and a directory so
// named, whole) out, name it and count it.
func TestWhiteoutNamesSkipped(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	must(t, os.MkdirAll(filepath.Join(lower, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(lower, "etc", "passwd"), []byte("root"), 0o644))
	must(t, os.MkdirAll(filepath.Join(upper, "etc", ".wh.dir", "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(upper, "etc", "passwd"), []byte("root"), 0o644))
	must(t, os.WriteFile(filepath.Join(upper, "etc", ".wh.passwd"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(upper, "etc", ".wh..wh..opq"), nil, 0o644))
	must(t, os.WriteFile(filepath.Join(upper, "etc", "kept"), []byte("k"), 0o644))
	for name, read := range map[string]func(w *Writer) error{
		"upperdir": func(w *Writer) error { return FromUpperdir(context.Background(), upper, UpperOpt{}, w) },
		"diff":     func(w *Writer) error { return FromDiff(context.Background(), lower, upper, w) },
	} {
		dir := t.TempDir()
		w, err := Create(dir, nil)
		must(t, err)
		must(t, read(w))
		m, err := w.Close()
		must(t, err)
		_, byName := entries(t, dir)
		for p := range byName {
			if strings.Contains(p, ".wh.") {
				t.Errorf("%s: %s is in the change set", name, p)
			}
		}
		if _, ok := byName["etc/kept"]; !ok {
			t.Errorf("%s: etc/kept is missing", name)
		}
		wh, err := os.ReadFile(filepath.Join(dir, WhiteoutFile))
		if err == nil {
			if del, opq, _ := ParseWhiteouts(wh); len(del)+len(opq) != 0 {
				t.Errorf("%s: removals %q %q", name, del, opq)
			}
		}
		got := strings.Join(w.WhiteoutNames(), " ")
		if m.WhiteoutNames != 3 || got != "/etc/.wh..wh..opq /etc/.wh.dir /etc/.wh.passwd" {
			t.Errorf("%s: %d left out: %s", name, m.WhiteoutNames, got)
		}
	}
}
