package changeset

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseWhiteouts checks that no whiteouts file makes the reader panic
// and that what it reads writes back to the same bytes.
func FuzzParseWhiteouts(f *testing.F) {
	f.Add([]byte("Dbin/vi\x00Oetc\x00"))
	f.Add([]byte("D\xff\xfe\x00"))
	f.Add([]byte("X\x00"))
	f.Add([]byte("Dno-terminator"))
	f.Fuzz(func(t *testing.T, dt []byte) {
		del, opq, err := ParseWhiteouts(dt)
		if err != nil {
			return
		}
		var back []byte
		for _, d := range del {
			back = AppendWhiteout(back, Deleted, d)
		}
		for _, o := range opq {
			back = AppendWhiteout(back, Opaque, o)
		}
		d2, o2, err := ParseWhiteouts(back)
		if err != nil || len(d2) != len(del) || len(o2) != len(opq) {
			t.Errorf("round trip of %q: %v", dt, err)
		}
	})
}

// FuzzFromUpperdir lays out an upper directory from the fuzzer's names and
// contents and reads it: never a panic, never a path outside the root.
func FuzzFromUpperdir(f *testing.F) {
	f.Add("a/b/c", []byte("x"), "d")
	f.Add("../../escape", []byte(""), "..")
	f.Add("dir/\xff\xfe", []byte("bytes"), "with space")
	f.Fuzz(func(t *testing.T, name string, data []byte, other string) {
		upper := t.TempDir()
		for _, n := range []string{name, other} {
			p := filepath.Join(upper, filepath.Clean("/"+n))
			if p == upper {
				continue
			}
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return
			}
			_ = os.WriteFile(p, data, 0o644)
		}
		out := t.TempDir()
		w, err := Create(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := FromUpperdir(context.Background(), upper, UpperOpt{}, w); err != nil {
			w.Abort()
			return
		}
		m, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		if m.Entries < 0 || m.Bytes > int64(2*len(data)) {
			t.Errorf("manifest %+v for %d bytes of data", m, len(data))
		}
	})
}
