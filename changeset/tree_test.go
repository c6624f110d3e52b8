package changeset

import (
	"context"
	"io"
	gofs "io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tonistiigi/fsutil"
	"github.com/tonistiigi/fsutil/types"
	"golang.org/x/sys/unix"
)

// TestTreeFS: the tree view of a streamed change set walks in the order
// the transfer checks, carries owners, modes, xattrs, links and devices,
// turns removals into whiteouts, and reads each file once, from the inode
// the walk saw.
func TestTreeFS(t *testing.T) {
	upper := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(upper, "a-b"), 0o755))
	must(t, os.MkdirAll(filepath.Join(upper, "a/b"), 0o750))
	must(t, os.MkdirAll(filepath.Join(upper, "z"), 0o755))
	must(t, os.WriteFile(filepath.Join(upper, "z/file"), []byte("contents"), 0o755))
	must(t, os.Chown(filepath.Join(upper, "z/file"), 1000, 2000))
	must(t, os.Chmod(filepath.Join(upper, "z/file"), os.ModeSetuid|0o755))
	must(t, unix.Setxattr(filepath.Join(upper, "z/file"), "user.x", []byte("y"), 0))
	must(t, os.Link(filepath.Join(upper, "z/file"), filepath.Join(upper, "a/link")))
	must(t, os.Symlink("/etc/shadow", filepath.Join(upper, "a/sym")))
	must(t, unix.Mknod(filepath.Join(upper, "a/b/tty"), unix.S_IFCHR|0o600, int(unix.Mkdev(5, 0))))
	must(t, unix.Mknod(filepath.Join(upper, "a/gone"), unix.S_IFCHR, 0))
	must(t, os.WriteFile(filepath.Join(upper, "a-b/empty"), nil, 0o600))

	w, _ := streamUpper(t, upper)
	defer w.Release()
	must(t, w.TreeOK())
	var doneErr error
	doneCalls := 0
	fs, err := w.TreeFS(context.Background(), func(err error) { doneCalls++; doneErr = err })
	must(t, err)
	var paths []string
	stats := map[string]*types.Stat{}
	must(t, fs.Walk(context.Background(), "", func(p string, d gofs.DirEntry, err error) error {
		must(t, err)
		paths = append(paths, p)
		info, err := d.Info()
		must(t, err)
		stats[p] = info.Sys().(*types.Stat)
		return nil
	}))
	var v fsutil.Validator
	for _, p := range paths {
		st := stats[p]
		if err := v.HandleChange(fsutil.ChangeKindAdd, p, &fsutil.StatInfo{Stat: st}, nil); err != nil {
			t.Fatalf("walk order %q: %v", paths, err)
		}
	}
	want := "a a/b a/b/tty a/gone a/link a/sym a-b a-b/empty z z/file"
	if strings.Join(paths, " ") != want {
		t.Errorf("walk %q, want %q", strings.Join(paths, " "), want)
	}
	// a/link comes first: it carries the file, z/file links to it.
	if l, f := stats["a/link"], stats["z/file"]; l.Linkname != "" || l.Size != 8 || l.Uid != 1000 || l.Gid != 2000 ||
		os.FileMode(l.Mode)&os.ModeSetuid == 0 || string(l.Xattrs["user.x"]) != "y" || f.Linkname != "a/link" {
		t.Errorf("hard link: a/link %+v, z/file %+v", l, f)
	}
	if g := stats["a/gone"]; os.FileMode(g.Mode)&os.ModeCharDevice == 0 || g.Devmajor != 0 || g.Devminor != 0 {
		t.Errorf("removal: %+v", g)
	}
	if d := stats["a/b/tty"]; d.Devmajor != 5 || d.Devminor != 0 {
		t.Errorf("device: %+v", d)
	}
	if s := stats["a/sym"]; s.Linkname != "/etc/shadow" || os.FileMode(s.Mode)&os.ModeSymlink == 0 {
		t.Errorf("symlink: %+v", s)
	}
	if doneCalls != 0 {
		t.Fatalf("done before any file was read")
	}
	rc, err := fs.Open("a/link")
	must(t, err)
	dt, err := io.ReadAll(rc)
	must(t, err)
	rc.Close()
	if string(dt) != "contents" || doneCalls != 1 || doneErr != nil {
		t.Errorf("contents %q, done %d times (%v)", dt, doneCalls, doneErr)
	}
	if _, err := fs.Open("a/link"); err == nil || doneErr == nil {
		t.Errorf("a second read: %v, done with %v", err, doneErr)
	}
}

// TestTreeOKRefuses: what the session's transfer cannot carry keeps the tar.
func TestTreeOKRefuses(t *testing.T) {
	for name, fill := range map[string]func(upper string){
		"not UTF-8": func(upper string) {
			must(t, os.WriteFile(filepath.Join(upper, "bad\xff"), nil, 0o644))
		},
		"capabilities": func(upper string) {
			must(t, os.WriteFile(filepath.Join(upper, "ping"), nil, 0o755))
			must(t, unix.Setxattr(filepath.Join(upper, "ping"), "security.capability", []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 0))
		},
		"replaced directory": func(upper string) {
			must(t, os.MkdirAll(filepath.Join(upper, "d"), 0o755))
			must(t, unix.Setxattr(filepath.Join(upper, "d"), "trusted.overlay.opaque", []byte("y"), 0))
		},
		"nothing": func(string) {},
	} {
		t.Run(name, func(t *testing.T) {
			upper := t.TempDir()
			fill(upper)
			w, _ := streamUpper(t, upper)
			defer w.Release()
			if err := w.TreeOK(); err == nil {
				t.Error("taken as a tree")
			}
		})
	}
}
