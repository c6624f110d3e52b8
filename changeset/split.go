package changeset

import (
	"archive/tar"
	"strings"
)

// Split cuts the plan into parts of at most limit bytes of file contents
// each, in walk order, for a change set committed as several layers
// applied one on the other: every entry is in exactly one part, the
// removals in the first, a part starts with the directories above its
// first entries (so that each part is a tree of its own), and a hard link
// goes into the part of the file it links to. A file larger than limit is
// a part of its own; Split returns their names. The parts read from the
// plan's tree: Release the plan, not the parts, when they are done.
func (p *Plan) Split(limit int64) (parts []*Plan, oversized []string) {
	if limit <= 0 || p.m.Bytes <= limit {
		return []*Plan{p}, nil
	}
	dirs := map[string]planned{}
	linkPart := map[string]*Plan{}
	var cur *Plan
	var curBytes int64
	newPart := func() *Plan {
		q := &Plan{records: p.records, root: p.root, shared: true, m: Manifest{Version: p.m.Version}}
		if len(parts) == 0 {
			q.rm = p.rm
			q.m.Whiteouts, q.m.Sockets, q.m.Excluded, q.m.WhiteoutNames = p.m.Whiteouts, p.m.Sockets, p.m.Excluded, p.m.WhiteoutNames
		}
		parts = append(parts, q)
		curBytes = 0
		return q
	}
	cur = newPart()
	for _, e := range p.entries {
		name := strings.TrimSuffix(e.h.Name, "/")
		switch {
		case e.h.Typeflag == tar.TypeLink:
			if q := linkPart[e.h.Linkname]; q != nil {
				q.withParents(dirs, name)
				q.add(e)
				continue
			}
		case e.h.Typeflag == tar.TypeReg && e.h.Size > 0:
			if curBytes > 0 && curBytes+e.h.Size > limit {
				cur = newPart()
			}
			if e.h.Size > limit {
				oversized = append(oversized, "/"+name)
			}
			curBytes += e.h.Size
		}
		cur.withParents(dirs, name)
		cur.add(e)
		if e.h.Typeflag == tar.TypeDir {
			dirs[name] = e
		}
		if e.h.Typeflag == tar.TypeReg {
			linkPart[e.h.Name] = cur
		}
	}
	// The first part holds the removals, and the directories they are in.
	for _, d := range p.rm.deleted {
		parts[0].withParents(dirs, strings.TrimSuffix(d, "/"))
	}
	for _, q := range parts {
		q.size = headerSize(globalHeader(q.records))
		for _, e := range q.entries {
			q.size += headerSize(e.h)
			if e.h.Typeflag == tar.TypeReg {
				q.size += (e.h.Size + 511) &^ 511
			}
		}
		q.m.TarSize = q.size + 1024
	}
	return parts, oversized
}

// withParents adds to q the directories above name it does not hold yet,
// outermost first, as the walk wrote them.
func (q *Plan) withParents(dirs map[string]planned, name string) {
	if q.dirs == nil {
		q.dirs = map[string]bool{}
	}
	var missing []string
	for d := parentDir(name); d != "" && !q.dirs[d]; d = parentDir(d) {
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if e, ok := dirs[missing[i]]; ok {
			q.add(e)
		}
	}
}

// add appends e to q and counts it.
func (q *Plan) add(e planned) {
	if q.dirs == nil {
		q.dirs = map[string]bool{}
	}
	if e.h.Typeflag == tar.TypeDir {
		q.dirs[strings.TrimSuffix(e.h.Name, "/")] = true
	}
	q.entries = append(q.entries, e)
	q.m.Entries++
	if e.h.Typeflag == tar.TypeReg {
		q.m.Bytes += e.h.Size
	}
}
