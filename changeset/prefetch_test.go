package changeset

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPrefetch: what was copied while the container ran is reused where
// the inode, size and ctime are the same and the file is not mapped
// writable; a file written since, a new one, and a mapped one are copied
// again; the streamed tar is then the tar of the tree as it is now, even
// after the tree changes again (it reads nothing more of it).
func TestPrefetch(t *testing.T) {
	upper := t.TempDir()
	write := func(name, s string) {
		must(t, os.WriteFile(filepath.Join(upper, name), []byte(s), 0o644))
	}
	write("same", "unchanged contents")
	write("written", "first contents")
	write("mapped", "mapped contents")
	time.Sleep(2 * PrefetchMargin)
	write("fresh", "written just now")

	p1, _ := streamUpper(t, upper)
	pf, err := p1.Prefetch(context.Background(), t.TempDir())
	must(t, err)
	p1.Release()
	if want := int64(len("unchanged contents") + len("first contents") + len("mapped contents")); pf.Bytes != want {
		t.Errorf("prefetched %d bytes, want %d (a file changed within the margin is left to the pause)", pf.Bytes, want)
	}

	write("written", "second contents!")
	write("new", "a new file")
	p2, _ := streamUpper(t, upper)
	defer p2.Release()
	reused, copied, err := p2.UsePrefetched(context.Background(), pf, map[string]bool{"/mapped": true})
	must(t, err)
	if reused != int64(len("unchanged contents")) || copied != int64(len("second contents!")+len("mapped contents")+len("written just now")+len("a new file")) {
		t.Errorf("reused %d, copied %d", reused, copied)
	}
	staged, _ := stageUpper(t, upper)
	want, err := os.ReadFile(filepath.Join(staged, TarFile))
	must(t, err)

	// Changed after the pause: the plan reads its copies.
	write("same", "changed after it")
	must(t, unix.Unlink(filepath.Join(upper, "new")))
	got, err := readAll(t, p2, TarFile)
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Error("the tar from the copies is not the tree at the time of the second walk")
	}
}
