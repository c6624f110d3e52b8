package changeset

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWriteStagedUpper: a staged change set written into an upper
// directory is the tree WriteUpper writes from the same container streamed:
// entries, owners, modes, times, xattrs, hard links, whiteouts and the
// replaced directory's opaque mark.
func TestWriteStagedUpper(t *testing.T) {
	upper := t.TempDir()
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	must(t, os.MkdirAll(filepath.Join(upper, "a/b"), 0o750))
	must(t, os.WriteFile(filepath.Join(upper, "a/b/file"), []byte("contents"), 0o644))
	must(t, os.Lchown(filepath.Join(upper, "a/b/file"), 33, 44))
	must(t, os.Link(filepath.Join(upper, "a/b/file"), filepath.Join(upper, "a/link")))
	must(t, unix.Setxattr(filepath.Join(upper, "a/b/file"), "user.x", []byte("y"), 0))
	must(t, os.WriteFile(filepath.Join(upper, "empty"), nil, 0o600))
	must(t, os.Symlink("/etc/shadow", filepath.Join(upper, "sym")))
	must(t, unix.Mkfifo(filepath.Join(upper, "fifo"), 0o600))
	must(t, unix.Mknod(filepath.Join(upper, "gone"), unix.S_IFCHR, 0))
	must(t, os.MkdirAll(filepath.Join(upper, "r"), 0o755))
	must(t, os.WriteFile(filepath.Join(upper, "r/new"), []byte("new"), 0o644))
	must(t, unix.Setxattr(filepath.Join(upper, "r"), "trusted.overlay.opaque", []byte("y"), 0))
	for _, p := range []string{"a/b/file", "empty", "r/new", "a/b", "a", "r"} {
		must(t, os.Chtimes(filepath.Join(upper, p), at, at))
	}

	staged, _ := stageUpper(t, upper)
	fromStaged := t.TempDir()
	if _, err := WriteStagedUpper(context.Background(), staged, fromStaged, "trusted.overlay.opaque"); err != nil {
		t.Fatal(err)
	}
	p, _ := streamUpper(t, upper)
	defer p.Release()
	fromStream := t.TempDir()
	if _, err := p.WriteUpper(context.Background(), fromStream, "trusted.overlay.opaque"); err != nil {
		t.Fatal(err)
	}
	got, want := summarize(t, fromStaged), summarize(t, fromStream)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("staged, written:\n%v\nstreamed, written:\n%v", got, want)
	}
	if len(got) < 9 {
		t.Errorf("only %d entries written: %v", len(got), got)
	}
	if _, err := WriteStagedUpper(context.Background(), staged, t.TempDir(), ""); err == nil {
		t.Error("written with no attribute to mark replaced directories with")
	}
}

// summarize describes every entry below dir: type and mode, owner, size,
// modification time, link target, device, contents, extended attributes,
// and which earlier name shares its inode.
func summarize(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	inodes := map[uint64]string{}
	must(t, filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		must(t, unix.Lstat(p, &st))
		line := fmt.Sprintf("%s %o %d:%d %d %d", rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Nano())
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			line += fmt.Sprintf(" mtime-s=%d", st.Mtim.Sec)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			line += " -> " + l
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" dev=%d", st.Rdev)
		case unix.S_IFREG:
			dt, _ := os.ReadFile(p)
			line += fmt.Sprintf(" %q", dt)
			if first, ok := inodes[st.Ino]; ok {
				line += " same inode as " + first
			} else {
				inodes[st.Ino] = rel
			}
		}
		var xs []string
		for _, x := range []string{"user.x", "trusted.overlay.opaque"} {
			if v, err := getxattr(p, x); err == nil {
				xs = append(xs, x+"="+v)
			}
		}
		sort.Strings(xs)
		out = append(out, fmt.Sprintf("%s %v", line, xs))
		return nil
	}))
	return out
}
