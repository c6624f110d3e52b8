package changeset

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// splitFixture writes the tree the split tests cut with a limit of 250
// bytes: four files of 100 bytes, one of 350, a hard link across
// directories, a file two directories down.
func splitFixture(t *testing.T, upper string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(upper, "a"), 0o755))
	for _, n := range []string{"1", "2", "3", "4"} {
		must(t, os.WriteFile(filepath.Join(upper, "a", n), bytes.Repeat([]byte(n), 100), 0o644))
	}
	must(t, os.MkdirAll(filepath.Join(upper, "b"), 0o700))
	must(t, os.WriteFile(filepath.Join(upper, "b", "big"), bytes.Repeat([]byte("b"), 350), 0o644))
	must(t, os.Link(filepath.Join(upper, "a", "1"), filepath.Join(upper, "b", "link")))
	must(t, os.MkdirAll(filepath.Join(upper, "d", "e"), 0o755))
	must(t, os.WriteFile(filepath.Join(upper, "d", "e", "f"), []byte("f"), 0o644))
}

// TestSplit: the parts of a split change set hold every entry exactly once
// (directories aside, which a part repeats above its entries), no part
// more than the limit of contents but a file larger than the limit alone,
// the removals in the first, a hard link with the file it links to; each
// part is a tree of its own (TreeOK) and its tar is the size its manifest
// says.
func TestSplit(t *testing.T) {
	upper := t.TempDir()
	splitFixture(t, upper)
	must(t, unix.Mknod(filepath.Join(upper, "d", "gone"), unix.S_IFCHR, 0))

	p, m := streamUpper(t, upper)
	defer p.Release()
	parts, oversized := p.Split(250)
	if len(parts) < 3 || strings.Join(oversized, " ") != "/b/big" {
		t.Fatalf("%d parts, oversized %q", len(parts), oversized)
	}
	seen := map[string]int{}
	for i, q := range parts {
		if err := q.TreeOK(); err != nil {
			t.Errorf("part %d is not a tree of its own: %v", i, err)
		}
		dt, err := readAll(t, q, TarFile)
		must(t, err)
		if int64(len(dt)) != q.m.TarSize {
			t.Errorf("part %d: tar of %d bytes, manifest says %d", i, len(dt), q.m.TarSize)
		}
		var bytesIn int64
		names := map[string]string{}
		tr := tar.NewReader(bytes.NewReader(dt))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			must(t, err)
			if h.Typeflag == tar.TypeXGlobalHeader {
				continue
			}
			names[h.Name] = h.Linkname
			if h.Typeflag != tar.TypeDir {
				seen[h.Name]++
			}
			if h.Typeflag == tar.TypeReg {
				bytesIn += h.Size
			}
		}
		if _, big := names["b/big"]; bytesIn > 250 && (!big || bytesIn != 350) {
			t.Errorf("part %d holds %d bytes of contents: %v", i, bytesIn, names)
		}
		if target, ok := names["b/link"]; ok {
			if _, with := names[target]; !with {
				t.Errorf("part %d: b/link without %s", i, target)
			}
		}
		if i > 0 && (len(q.rm.deleted) > 0 || q.m.Whiteouts > 0) {
			t.Errorf("part %d has removals", i)
		}
	}
	if len(parts[0].rm.deleted) != 1 || parts[0].m.Whiteouts != m.Whiteouts {
		t.Errorf("first part's removals %q", parts[0].rm.deleted)
	}
	for _, n := range []string{"a/1", "a/2", "a/3", "a/4", "b/big", "b/link", "d/e/f"} {
		if seen[n] != 1 {
			t.Errorf("%s is in %d parts", n, seen[n])
		}
	}
	if one, _ := p.Split(m.Bytes); len(one) != 1 || one[0] != p {
		t.Error("a change set within the limit is split")
	}
}

// TestCreateSplit: a staged change set split as it is written follows
// Split's rules: every entry once (directories aside),
// no part over the limit but the file larger than it, a hard link with
// its file, each entry's directory in its part, the removals in the first.
func TestCreateSplit(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	must(t, os.MkdirAll(filepath.Join(lower, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(lower, "d", "gone"), []byte("x"), 0o644))
	splitFixture(t, upper)
	for name, read := range map[string]func(w *Writer) error{
		"diff": func(w *Writer) error { return FromDiff(context.Background(), lower, upper, w) },
	} {
		dir := t.TempDir()
		w, err := CreateSplit(dir, nil, 250)
		must(t, err)
		must(t, read(w))
		_, err = w.Close()
		must(t, err)
		dirs, oversized := w.StagedParts()
		if len(dirs) < 3 || strings.Join(oversized, " ") != "/b/big" {
			t.Fatalf("%s: %d parts, oversized %q", name, len(dirs), oversized)
		}
		seen := map[string]int{}
		for i, d := range dirs {
			_, byName := entries(t, d)
			var size int64
			for n, h := range byName {
				if h.Typeflag == tar.TypeXGlobalHeader {
					continue
				}
				if parent := parentDir(strings.TrimSuffix(n, "/")); parent != "" && byName[parent] == nil {
					t.Errorf("%s: part %d holds %s without its directory", name, i+1, n)
				}
				if h.Typeflag != tar.TypeDir {
					seen[n]++
				}
				if h.Typeflag == tar.TypeReg {
					size += h.Size
				}
				if h.Typeflag == tar.TypeLink && byName[h.Linkname] == nil {
					t.Errorf("%s: part %d holds %s without %s", name, i+1, n, h.Linkname)
				}
			}
			if _, big := byName["b/big"]; size > 250 && (!big || size != 350) {
				t.Errorf("%s: part %d holds %d bytes", name, i+1, size)
			}
			wh, _ := os.ReadFile(filepath.Join(d, WhiteoutFile))
			if del, _, _ := ParseWhiteouts(wh); (i == 0) != (len(del) == 1) {
				t.Errorf("%s: part %d removes %q", name, i+1, del)
			}
		}
		for _, n := range []string{"a/1", "a/2", "a/3", "a/4", "b/big", "b/link", "d/e/f"} {
			if seen[n] != 1 {
				t.Errorf("%s: %s is in %d parts", name, n, seen[n])
			}
		}
	}
}
