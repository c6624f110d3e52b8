// Package llb turns a COMMIT into BuildKit LLB: a change set applied on a
// state, a whole tree diffed against it, a squash by Diff and Merge, and the
// splice that puts those ops where BuildKit's Dockerfile converter left a
// placeholder. It is pure: no daemon, no gateway client.
//
// In this project BuildKit's own client/llb package is always imported as bkllb.
package llb

import (
	"slices"
	"strings"

	"github.com/commit-frontend/commit-frontend/changeset"
	bkllb "github.com/moby/buildkit/client/llb"
)

// SourceKind tells how a COMMIT context holds the filesystem.
type SourceKind int

const (
	// Tree is a plain directory tree: the whole filesystem to commit.
	Tree SourceKind = iota
	// ChangeSet is a change set: a tar of added and modified entries plus a
	// list of deletions and replaced directories.
	ChangeSet
	// TreeChangeSet is a change set sent as the tree it describes: the
	// added and modified entries themselves, each removal a whiteout (a
	// 0/0 character device, as overlayfs writes it).
	TreeChangeSet
	// Layer is the base image's filesystem with the change set as one
	// layer on it: a whole filesystem whose top layer is the commit's. It
	// stands for the COMMIT on the base it was made on, and only there.
	Layer
)

// The schemes of the LLB sources that BuildKit's engine in the client's
// process writes in place ("SCHEME://ID", only that engine knows them): a
// change set's tree (TreeChangeSet), or the base image with that tree as
// its upper directory (Layer).
const (
	TreeSourceScheme  = "commit-frontend-tree"
	LayerSourceScheme = "commit-frontend-layer"
)

// CommitSource is what a COMMIT context holds.
type CommitSource struct {
	// Kind is how the filesystem is held.
	Kind SourceKind
	// State is the context's filesystem.
	State bkllb.State
	// TarPath is the change set's tar inside State (ChangeSet only).
	TarPath string
	// Entries is the number of entries in the tar (ChangeSet only).
	Entries int
	// Deletions are the paths the change set deletes (ChangeSet only).
	Deletions []string
	// Opaque are the directories the change set replaces (ChangeSet only).
	Opaque []string
}

// Empty reports whether the source changes nothing.
func (s *CommitSource) Empty() bool {
	return s.Kind == ChangeSet && s.Entries == 0 && len(s.Deletions) == 0 && len(s.Opaque) == 0
}

// Squash is the image a squashing COMMIT keeps as it is.
type Squash struct {
	// Name names the image in history comments ("scratch" for none).
	Name string
	// State is its filesystem; Layers its number of layers (0: scratch).
	State  bkllb.State
	Layers int
}

// Squashed returns state as one layer on sq: the whole filesystem copied
// into an empty one (so no layer of the chain can be reused), then its
// difference from sq's filesystem, BuildKit's differ computing it, merged
// on sq.
func Squashed(state bkllb.State, sq *Squash, opts ...bkllb.ConstraintsOpt) bkllb.State {
	flat := bkllb.Scratch().File(bkllb.Copy(state, "/", "/", &bkllb.CopyInfo{CopyDirContentsOnly: true}), opts...)
	if sq.Layers == 0 {
		return flat
	}
	return bkllb.Merge([]bkllb.State{sq.State, bkllb.Diff(sq.State, flat, opts...)}, opts...)
}

// ChangeSetAction is the one file action that applies a change set: the
// deletions and replaced directories first, then the tar extracted at /.
func ChangeSetAction(src *CommitSource) *bkllb.FileAction {
	var fa *bkllb.FileAction
	rm := func(p string) {
		info := &bkllb.RmInfo{AllowNotFound: true}
		if pat, ok := changeset.PathPattern(p); ok {
			p = pat
			info.AllowWildcard = true
		}
		if fa == nil {
			fa = bkllb.Rm(p, info)
		} else {
			fa = fa.Rm(p, info)
		}
	}
	for _, d := range slices.Sorted(slices.Values(src.Deletions)) {
		rm("/" + strings.TrimPrefix(d, "/"))
	}
	for _, d := range slices.Sorted(slices.Values(src.Opaque)) {
		rm("/" + strings.TrimPrefix(d, "/"))
	}
	if src.Entries > 0 {
		cp := &bkllb.CopyInfo{AttemptUnpack: true, CreateDestPath: true}
		if fa == nil {
			fa = bkllb.Copy(src.State, src.TarPath, "/", cp)
		} else {
			fa = fa.Copy(src.State, src.TarPath, "/", cp)
		}
	}
	return fa
}

// Apply returns the state a COMMIT of src makes of st, and whether it adds a
// layer: a change set applied in one file op, or the difference between st
// and a whole tree merged on st. An empty change set leaves st as it is.
func Apply(st bkllb.State, src *CommitSource, opts ...bkllb.ConstraintsOpt) (bkllb.State, bool) {
	switch {
	case src.Empty():
		return st, false
	case src.Kind == ChangeSet:
		return st.File(ChangeSetAction(src), opts...), true
	case src.Kind == Layer:
		// Already on the base, which st is.
		return src.State, true
	case src.Kind == TreeChangeSet:
		// Merged on st, the tree's whiteouts hide what it removes; the
		// difference from st is then one upper directory that BuildKit's
		// overlay differ reads as it is. Nothing is taken from the cache:
		// the cache's checksums leave mtimes out, and a tree that differs
		// from an earlier one only in times would get the earlier layer.
		nocache := append(slices.Clone(opts), bkllb.IgnoreCache)
		merged := bkllb.Merge([]bkllb.State{st, src.State}, nocache...)
		return bkllb.Merge([]bkllb.State{st, bkllb.Diff(st, merged, nocache...)}, nocache...), true
	default:
		return bkllb.Merge([]bkllb.State{st, bkllb.Diff(st, src.State, opts...)}, opts...), true
	}
}

// WalkingDiffer returns applied — st with one COMMIT layer on it — as the
// same layer computed by the worker's walking differ (containerd's, the one
// docker commit uses) rather than BuildKit's overlay differ. The layer is
// the difference from a copy of st that applied does not stand on (st and
// one empty layer): BuildKit then compares the two trees instead of
// taking applied's own layer. The two differ where a new name is
// hard-linked to an unchanged file of the base: the walking differ writes
// the new name with the bytes and the base's name as a link to it, as
// docker commit does; the overlay differ does not see the base's name.
func WalkingDiffer(st, applied bkllb.State, opts ...bkllb.ConstraintsOpt) bkllb.State {
	aside := st.File(bkllb.Rm("/.commit-frontend-walking-differ", &bkllb.RmInfo{AllowNotFound: true}), opts...)
	return bkllb.Merge([]bkllb.State{st, bkllb.Diff(aside, applied, opts...)}, opts...)
}
