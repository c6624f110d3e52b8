package changeset

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWriteTree: the tree written into a directory holds every entry with
// its owner, mode and times, removals as whiteouts; a file of one name is
// the container's own inode, linked, and left as it was; a file of two
// names is a copy, both names one inode, with the walk's extra nanosecond;
// a file rewritten since the walk fails the write.
func TestWriteTree(t *testing.T) {
	upper := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(upper, "a/b"), 0o750))
	must(t, os.WriteFile(filepath.Join(upper, "a/one"), []byte("one name"), 0o640))
	must(t, os.Chown(filepath.Join(upper, "a/one"), 70, 80))
	must(t, os.WriteFile(filepath.Join(upper, "a/two"), []byte("two names"), 0o755))
	must(t, os.Chown(filepath.Join(upper, "a/two"), 1000, 2000))
	must(t, os.Chmod(filepath.Join(upper, "a/two"), os.ModeSetuid|0o755))
	must(t, unix.Setxattr(filepath.Join(upper, "a/two"), "user.x", []byte("y"), 0))
	must(t, os.Link(filepath.Join(upper, "a/two"), filepath.Join(upper, "a/b/second")))
	must(t, os.Symlink("/etc/shadow", filepath.Join(upper, "a/sym")))
	must(t, unix.Mknod(filepath.Join(upper, "a/b/tty"), unix.S_IFCHR|0o620, int(unix.Mkdev(5, 0))))
	must(t, os.Chmod(filepath.Join(upper, "a/b/tty"), 0o620))
	must(t, unix.Mknod(filepath.Join(upper, "a/gone"), unix.S_IFCHR, 0))
	must(t, os.WriteFile(filepath.Join(upper, "a/empty"), nil, 0o604))
	old := time.Unix(1_500_000_000, 0)
	for _, p := range []string{"a/b", "a/one", "a"} {
		must(t, os.Chtimes(filepath.Join(upper, p), old, old))
	}
	var before unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "a/one"), &before))

	p, _ := streamUpper(t, upper)
	defer p.Release()
	dir := t.TempDir()
	stats, err := p.WriteTree(context.Background(), dir)
	must(t, err)
	if stats.Linked != 1 || stats.LinkedBytes != 8 || stats.Copied != 9 {
		t.Errorf("stats %+v, want one file of 8 bytes linked and 9 bytes copied", stats)
	}
	lstat := func(p string) unix.Stat_t {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(dir, p), &st))
		return st
	}
	one := lstat("a/one")
	if one.Ino != before.Ino || one.Uid != 70 || one.Gid != 80 || one.Mode&0o7777 != 0o640 {
		t.Errorf("a/one: ino %d (container's %d), %d:%d %o", one.Ino, before.Ino, one.Uid, one.Gid, one.Mode&0o7777)
	}
	var after unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "a/one"), &after))
	if after.Ctim.Nano() > before.Ctim.Nano()+int64(time.Second) || after.Mtim != before.Mtim || after.Mode != before.Mode {
		t.Errorf("the container's a/one was changed by the link")
	}
	two, second := lstat("a/two"), lstat("a/b/second")
	var ctrTwo unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "a/two"), &ctrTwo))
	if two.Ino == ctrTwo.Ino || two.Ino != second.Ino || two.Uid != 1000 || two.Gid != 2000 || two.Mode&0o7777 != 0o4755 {
		t.Errorf("a/two: ino %d (container's %d, second name %d), %d:%d %o", two.Ino, ctrTwo.Ino, second.Ino, two.Uid, two.Gid, two.Mode&0o7777)
	}
	if two.Mtim.Nsec != 1 {
		t.Errorf("a/two: mtime %v, want the walk's second plus one nanosecond", two.Mtim)
	}
	if dt, _ := os.ReadFile(filepath.Join(dir, "a/b/second")); string(dt) != "two names" {
		t.Errorf("a/b/second holds %q", dt)
	}
	if x, err := getxattr(filepath.Join(dir, "a/two"), "user.x"); err != nil || x != "y" {
		t.Errorf("a/two xattr user.x %q, %v", x, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "a/sym")); err != nil || l != "/etc/shadow" {
		t.Errorf("a/sym -> %q, %v", l, err)
	}
	if st := lstat("a/b/tty"); st.Mode != unix.S_IFCHR|0o620 || st.Rdev != unix.Mkdev(5, 0) {
		t.Errorf("a/b/tty mode %o rdev %d", st.Mode, st.Rdev)
	}
	if st := lstat("a/gone"); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("a/gone is not a whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	if st := lstat("a/empty"); st.Size != 0 || st.Mode != unix.S_IFREG|0o604 {
		t.Errorf("a/empty mode %o size %d", st.Mode, st.Size)
	}
	for _, d := range []string{"a", "a/b"} {
		if st := lstat(d); st.Mtim.Sec != old.Unix() || st.Mode&0o7777 != 0o750 && d == "a/b" {
			t.Errorf("%s: mtime %d mode %o", d, st.Mtim.Sec, st.Mode&0o7777)
		}
	}

	// Rewritten after the walk: refused, nothing linked to the new file.
	p2, _ := streamUpper(t, upper)
	defer p2.Release()
	must(t, os.Remove(filepath.Join(upper, "a/one")))
	must(t, os.WriteFile(filepath.Join(upper, "a/one"), []byte("other!!!"), 0o640))
	if _, err := p2.WriteTree(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), `"a/one"`) || !strings.Contains(err.Error(), "changed while being read") {
		t.Errorf("a file replaced after the walk: %v", err)
	}
}

// TestWriteUpper: a directory the container replaced cannot be a tree of its
// own (WriteTree refuses it), but written as the upper directory of a
// snapshot on the base it is marked opaque, as overlayfs marks it, with the
// attribute the mount reads; its new entries and the other changes are
// written as WriteTree writes them.
func TestWriteUpper(t *testing.T) {
	upper := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(upper, "r/sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(upper, "r/sub/new"), []byte("new"), 0o644))
	must(t, unix.Setxattr(filepath.Join(upper, "r"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, unix.Mknod(filepath.Join(upper, "gone"), unix.S_IFCHR, 0))
	p, _ := streamUpper(t, upper)
	defer p.Release()
	if err := p.TreeOK(); err == nil || !strings.Contains(err.Error(), `"r" replaces a directory`) {
		t.Errorf("TreeOK of a replaced directory: %v", err)
	}
	if err := p.UpperOK(); err != nil {
		t.Fatalf("UpperOK: %v", err)
	}
	if _, err := p.WriteTree(context.Background(), t.TempDir()); err == nil {
		t.Error("WriteTree wrote a replaced directory")
	}
	if _, err := p.WriteUpper(context.Background(), t.TempDir(), ""); err == nil {
		t.Error("WriteUpper with no attribute to mark with")
	}
	for _, attr := range []string{"trusted.overlay.opaque", "user.overlay.opaque"} {
		// A plan links each file once (a link moves the file's ctime).
		p, _ := streamUpper(t, upper)
		defer p.Release()
		dir := t.TempDir()
		if _, err := p.WriteUpper(context.Background(), dir, attr); err != nil {
			t.Fatalf("%s: %v", attr, err)
		}
		if v, err := getxattr(filepath.Join(dir, "r"), attr); err != nil || v != "y" {
			t.Errorf("%s: r is not marked opaque: %q %v", attr, v, err)
		}
		if v, err := getxattr(filepath.Join(dir, "r/sub"), attr); err == nil {
			t.Errorf("%s: r/sub, not replaced, is marked %q", attr, v)
		}
		if dt, err := os.ReadFile(filepath.Join(dir, "r/sub/new")); err != nil || string(dt) != "new" {
			t.Errorf("%s: r/sub/new %q %v", attr, dt, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(dir, "gone"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: gone is not a whiteout: %v", attr, err)
		}
	}
}

// TestWriteUpperLocal: file capabilities and names that are not UTF-8
// cannot cross the session as a tree (TreeOK), nor go into a tree of their
// own (WriteTree), but the upper directory on the base keeps them
// (UpperOK, WriteUpper): the capability set after the owner, the name as
// its bytes.
func TestWriteUpperLocal(t *testing.T) {
	upper := t.TempDir()
	capV := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(t, os.WriteFile(filepath.Join(upper, "ping"), []byte("ping"), 0o755))
	must(t, os.Link(filepath.Join(upper, "ping"), filepath.Join(upper, "ping2")))
	must(t, unix.Lsetxattr(filepath.Join(upper, "ping"), "security.capability", capV, 0))
	must(t, os.WriteFile(filepath.Join(upper, "latin1-\xe9t\xe9"), []byte("l"), 0o644))
	p, _ := streamUpper(t, upper)
	defer p.Release()
	if err := p.TreeOK(); err == nil {
		t.Error("TreeOK accepts file capabilities and a name that is not UTF-8")
	}
	if _, err := p.WriteTree(context.Background(), t.TempDir()); err == nil {
		t.Error("WriteTree wrote file capabilities and a name that is not UTF-8")
	}
	if err := p.UpperOK(); err != nil {
		t.Fatalf("UpperOK: %v", err)
	}
	dir := t.TempDir()
	if _, err := p.WriteUpper(context.Background(), dir, "trusted.overlay.opaque"); err != nil {
		t.Fatal(err)
	}
	// Two names: a copy, its capability set again after the owner.
	for _, n := range []string{"ping", "ping2"} {
		if v, err := getxattr(filepath.Join(dir, n), "security.capability"); err != nil || v != string(capV) {
			t.Errorf("%s: capability %q %v", n, v, err)
		}
	}
	if dt, err := os.ReadFile(filepath.Join(dir, "latin1-\xe9t\xe9")); err != nil || string(dt) != "l" {
		t.Errorf("latin1 name: %q %v", dt, err)
	}
}
