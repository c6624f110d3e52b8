// Package changeset reads a container's filesystem changes (from an
// overlay upper directory, or by a walk of a snapshot against its parent)
// into a change set, and makes it something a BuildKit session carries.
//
// The readers write into a Writer, which decides what goes in and hands
// each entry to one of its sinks: a change set staged whole in a
// directory (Create), or a Plan streamed later (Stream), whose contents
// are read from the same inodes only when a transport asks. A change set
// crosses the session in one of two forms. As a change-set directory
// (staged, or Plan.TarFS) of three files:
//
//	CHANGESET    JSON manifest: {"version":1,"entries":N,"whiteouts":M}
//	changes.tar  the added and modified entries, as a tar rooted at /
//	whiteouts    NUL-terminated records: 'D'+path deleted, 'O'+path replaced directory
//
// The tar keeps owners, the security.capability xattr and names that are
// not UTF-8 across a session; deletions travel apart because extracting a
// tar applies no whiteouts. Or, for a Plan the session's file transfer can
// carry (Plan.TreeOK), as the tree it describes (Plan.TreeFS: each removal
// a 0/0 whiteout device), with no tar to extract; the commit takes the
// tree when the files average 64 KiB or more.
package changeset

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/pkg/errors"
)

// Names of the files in a change-set context.
const (
	// ManifestFile marks a context as a change set.
	ManifestFile = "CHANGESET"
	// TarFile holds the added and modified entries.
	TarFile = "changes.tar"
	// WhiteoutFile lists deletions and replaced directories.
	WhiteoutFile = "whiteouts"
)

// Version is the change-set format version.
const Version = 1

// Manifest is the content of the CHANGESET file.
type Manifest struct {
	// Version is the format version.
	Version int `json:"version"`
	// Entries is the number of entries in changes.tar.
	Entries int `json:"entries"`
	// Whiteouts is the number of records in the whiteouts file.
	Whiteouts int `json:"whiteouts"`
	// Bytes is the size of the regular files' contents in changes.tar.
	Bytes int64 `json:"bytes"`
	// TarSize is the size of changes.tar: what crosses the session.
	TarSize int64 `json:"tarSize,omitempty"`
	// Sockets is the number of unix sockets left out: a layer cannot hold
	// one, and docker and containerd leave them out too.
	Sockets int `json:"sockets,omitempty"`
	// Excluded is the number of paths left out by exclude patterns (a
	// directory left out whole counts once).
	Excluded int `json:"excluded,omitempty"`
	// WhiteoutNames is the number of paths left out because their names
	// start with ".wh.", which a layer reads as deletions.
	WhiteoutNames int `json:"whiteoutNames,omitempty"`
}

// ParseManifest reads a CHANGESET file.
func ParseManifest(dt []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(dt, &m); err != nil {
		return nil, errors.Wrapf(err, "bad %s", ManifestFile)
	}
	if m.Version != Version {
		return nil, errors.Errorf("%s version %d is not supported (want %d)", ManifestFile, m.Version, Version)
	}
	return &m, nil
}

// Whiteout record kinds.
const (
	// Deleted marks a deleted path.
	Deleted = 'D'
	// Opaque marks a directory whose lower contents are replaced.
	Opaque = 'O'
)

// AppendWhiteout appends one record to a whiteouts file.
func AppendWhiteout(dt []byte, kind byte, path string) []byte {
	dt = append(dt, kind)
	dt = append(dt, path...)
	return append(dt, 0)
}

// ParseWhiteouts reads a whiteouts file.
func ParseWhiteouts(dt []byte) (deleted, opaque []string, err error) {
	for len(dt) > 0 {
		i := bytes.IndexByte(dt, 0)
		if i < 0 {
			return nil, nil, errors.New("whiteouts: record without terminating NUL")
		}
		rec := dt[:i]
		dt = dt[i+1:]
		if len(rec) < 2 {
			return nil, nil, errors.Errorf("whiteouts: short record %q", rec)
		}
		switch rec[0] {
		case Deleted:
			deleted = append(deleted, string(rec[1:]))
		case Opaque:
			opaque = append(opaque, string(rec[1:]))
		default:
			return nil, nil, errors.Errorf("whiteouts: unknown record kind %q", rec[0])
		}
	}
	return deleted, opaque, nil
}

// PathPattern returns the pattern that stands for a path that is not valid
// UTF-8 where only UTF-8 can travel (LLB carries paths as protobuf
// strings): every byte that is not UTF-8 becomes a one-character wildcard,
// and the pattern's own special characters are escaped. A valid path is
// returned as it is, with false.
func PathPattern(p string) (string, bool) {
	if utf8.ValidString(p) {
		return p, false
	}
	var b strings.Builder
	for i := 0; i < len(p); {
		r, size := utf8.DecodeRuneInString(p[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b.WriteByte('?')
		case r == '*' || r == '?' || r == '[' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		default:
			b.WriteString(p[i : i+size])
		}
		i += size
	}
	return b.String(), true
}
