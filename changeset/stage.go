package changeset

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"

	"github.com/pkg/errors"
)

// stage is a change set written whole into a directory (TarFile,
// WhiteoutFile, ManifestFile), each file's contents copied as the walk
// finds it: for a container that may go on writing while it is sent.
type stage struct {
	dir string
	f   *os.File
	tw  *tar.Writer
	buf []byte
}

// Create starts a change set staged in dir, which must exist and be empty.
// records are written into the tar's first header; they change nothing
// that is extracted, only the tar's bytes.
func Create(dir string, records map[string]string) (*Writer, error) {
	f, err := os.OpenFile(filepath.Join(dir, TarFile), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, errors.Wrap(err, "creating the change set")
	}
	s := &stage{dir: dir, f: f, tw: tar.NewWriter(f), buf: make([]byte, 1<<20)}
	if err := s.tw.WriteHeader(globalHeader(records)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, errors.Wrap(err, "creating the change set")
	}
	return newWriter(s), nil
}

func (s *stage) from(*os.File) bool { return false }

func (s *stage) entry(h *tar.Header, n *node, r io.Reader) error {
	if h.Typeflag == tar.TypeReg && n != nil {
		f, err := n.reopen(0)
		if err != nil {
			return errors.Wrapf(err, "change set: %q", n.rel)
		}
		defer f.Close()
		if err := s.write(h, f); err != nil {
			return err
		}
		// Nothing was added since: the file ends where the walk saw it end.
		return checkSize(f, n, h.Size)
	}
	return s.write(h, r)
}

func (s *stage) write(h *tar.Header, r io.Reader) error {
	if err := s.tw.WriteHeader(h); err != nil {
		return errors.Wrapf(err, "change set: %q", h.Name)
	}
	if h.Typeflag != tar.TypeReg || h.Size == 0 {
		return nil
	}
	if r == nil {
		return errors.Errorf("change set: %q: no contents", h.Name)
	}
	n, err := io.CopyBuffer(s.tw, io.LimitReader(r, h.Size), s.buf)
	if err != nil {
		return errors.Wrapf(err, "change set: %q", h.Name)
	}
	if n != h.Size {
		return errors.Errorf("%q shrank while being read (%d of %d bytes): pause the container (--pause) or commit it when it is not writing", h.Name, n, h.Size)
	}
	return nil
}

func (s *stage) close(m *Manifest, rm removals) error {
	if err := s.tw.Close(); err != nil {
		s.f.Close()
		return err
	}
	if st, err := s.f.Stat(); err == nil {
		m.TarSize = st.Size()
	}
	if err := s.f.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.dir, WhiteoutFile), rm.encoded, 0o600); err != nil {
		return err
	}
	dt, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.dir, ManifestFile), dt, 0o600)
}

func (s *stage) abort() {
	s.f.Close()
	for _, n := range []string{TarFile, WhiteoutFile, ManifestFile} {
		_ = os.Remove(filepath.Join(s.dir, n))
	}
}
