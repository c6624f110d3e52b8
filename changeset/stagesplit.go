package changeset

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/pkg/errors"
)

// CreateSplit starts a change set staged as parts of at most limit bytes
// of file contents each, in directories part-1, part-2, ... of dir, by
// Split's rules: every entry in exactly one part, in walk order, the
// removals in the first, each part starting with the directories above
// its entries, a hard link in its file's part, a file larger than limit a
// part of its own. StagedParts names them once the Writer is closed.
func CreateSplit(dir string, records map[string]string, limit int64) (*Writer, error) {
	s := &stagedParts{dir: dir, records: records, limit: limit, dirHdr: map[string]*tar.Header{}, linkPart: map[string]int{}}
	if err := s.newPart(); err != nil {
		return nil, err
	}
	return newWriter(s), nil
}

// StagedParts returns the directories of a change set CreateSplit staged,
// in the order they apply, and the files larger than its limit; nil for
// any other change set.
func (w *Writer) StagedParts() (dirs, oversized []string) {
	s, ok := w.sink.(*stagedParts)
	if !ok {
		return nil, nil
	}
	for _, p := range s.parts {
		dirs = append(dirs, p.dir)
	}
	return dirs, s.oversized
}

type stagedParts struct {
	dir     string
	records map[string]string
	limit   int64
	parts   []*stage
	ms      []Manifest
	// held are the directories each part holds; dirHdr the header of
	// every directory written, to repeat it above a later part's entries.
	held      []map[string]bool
	dirHdr    map[string]*tar.Header
	linkPart  map[string]int
	curBytes  int64
	oversized []string
}

func (s *stagedParts) newPart() error {
	d := filepath.Join(s.dir, fmt.Sprintf("part-%d", len(s.parts)+1))
	if err := os.Mkdir(d, 0o700); err != nil {
		return errors.Wrap(err, "creating the change set")
	}
	w, err := Create(d, s.records)
	if err != nil {
		return err
	}
	s.parts = append(s.parts, w.sink.(*stage))
	s.ms = append(s.ms, Manifest{Version: Version})
	s.held = append(s.held, map[string]bool{})
	s.curBytes = 0
	return nil
}

func (s *stagedParts) from(*os.File) bool { return false }

func (s *stagedParts) entry(h *tar.Header, n *node, r io.Reader) error {
	name := strings.TrimSuffix(h.Name, "/")
	i := len(s.parts) - 1
	switch {
	case h.Typeflag == tar.TypeLink:
		if j, ok := s.linkPart[h.Linkname]; ok {
			i = j
		}
	case h.Typeflag == tar.TypeReg && h.Size > 0:
		if s.curBytes > 0 && s.curBytes+h.Size > s.limit {
			if err := s.newPart(); err != nil {
				return err
			}
			i = len(s.parts) - 1
		}
		if h.Size > s.limit {
			s.oversized = append(s.oversized, "/"+name)
		}
		s.curBytes += h.Size
	}
	if err := s.parents(i, name); err != nil {
		return err
	}
	if err := s.parts[i].entry(h, n, r); err != nil {
		return err
	}
	s.ms[i].Entries++
	switch h.Typeflag {
	case tar.TypeReg:
		s.ms[i].Bytes += h.Size
		s.linkPart[h.Name] = i
	case tar.TypeDir:
		hc := *h
		s.dirHdr[name] = &hc
		s.held[i][name] = true
	}
	return nil
}

// parents writes into part i the directories above name it does not hold
// yet, outermost first.
func (s *stagedParts) parents(i int, name string) error {
	var missing []string
	for d := parentDir(name); d != "" && !s.held[i][d]; d = parentDir(d) {
		missing = append(missing, d)
	}
	for k := len(missing) - 1; k >= 0; k-- {
		h, ok := s.dirHdr[missing[k]]
		if !ok {
			continue
		}
		hc := *h
		if err := s.parts[i].write(&hc, nil); err != nil {
			return err
		}
		s.ms[i].Entries++
		s.held[i][missing[k]] = true
	}
	return nil
}

func (s *stagedParts) close(m *Manifest, rm removals) error {
	m.TarSize = 0
	for i, p := range s.parts {
		pm := s.ms[i]
		prm := removals{}
		if i == 0 {
			pm.Whiteouts, pm.Sockets, pm.Excluded, pm.WhiteoutNames = m.Whiteouts, m.Sockets, m.Excluded, m.WhiteoutNames
			prm = rm
		}
		if err := p.close(&pm, prm); err != nil {
			return err
		}
		m.TarSize += pm.TarSize
	}
	return nil
}

func (s *stagedParts) abort() {
	for _, p := range s.parts {
		p.abort()
	}
}
