package changeset

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFromTree: a volume's tree lands at its mount point whole, its root's
// owner and mode on the mount point, symlinks as links (never followed),
// exclude patterns applying to container paths; a file's bind mount is
// the file alone; a streamed change set refuses a second tree.
func TestFromTree(t *testing.T) {
	vol := t.TempDir()
	must(t, os.Chmod(vol, 0o750))
	must(t, os.Chown(vol, 999, 998))
	must(t, os.MkdirAll(filepath.Join(vol, "db", "cache"), 0o700))
	must(t, os.WriteFile(filepath.Join(vol, "db", "rows"), []byte("1\n2\n"), 0o640))
	must(t, os.WriteFile(filepath.Join(vol, "db", "cache", "tmp"), []byte("x"), 0o600))
	must(t, os.Symlink("/etc/shadow", filepath.Join(vol, "escape")))
	file := filepath.Join(t.TempDir(), "app.conf")
	must(t, os.WriteFile(file, []byte("k=v\n"), 0o644))

	dir := t.TempDir()
	w, err := Create(dir, nil)
	must(t, err)
	must(t, w.Exclude([]string{"/var/lib/data/db/cache"}))
	must(t, FromTree(context.Background(), vol, "/var/lib/data", w))
	must(t, FromTree(context.Background(), file, "/etc/app.conf", w))
	_, err = w.Close()
	must(t, err)
	_, byName := entries(t, dir)
	var names []string
	for n := range byName {
		names = append(names, n)
	}
	for _, want := range []string{"var/lib/data", "var/lib/data/db", "var/lib/data/db/rows", "var/lib/data/escape", "etc/app.conf"} {
		if byName[want] == nil {
			t.Errorf("%s missing from %q", want, names)
		}
	}
	if h := byName["var/lib/data"]; h != nil && (h.Mode != 0o750 || h.Uid != 999 || h.Gid != 998) {
		t.Errorf("mount point %o %d:%d, want the volume root's 750 999:998", h.Mode, h.Uid, h.Gid)
	}
	if h := byName["var/lib/data/escape"]; h != nil && h.Linkname != "/etc/shadow" {
		t.Errorf("symlink %+v", h)
	}
	for n := range byName {
		if strings.Contains(n, "cache") {
			t.Errorf("%s was excluded", n)
		}
	}

	w, _ = Stream(nil)
	if err := FromTree(context.Background(), vol, "/data", w); err == nil {
		t.Error("a streamed change set took a second tree")
	}
}
