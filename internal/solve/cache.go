package solve

import (
	"context"
	"strconv"
	"strings"

	bkclient "github.com/moby/buildkit/client"
)

// CacheRecords are the IDs of the records in BuildKit's cache.
func CacheRecords(ctx context.Context, bk *bkclient.Client) (map[string]bool, error) {
	du, err := bk.DiskUsage(ctx)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(du))
	for _, u := range du {
		ids[u.ID] = true
	}
	return ids, nil
}

// commitRecord tells whether a cache record made during a commit is the
// commit's own: its change set (a local source), what its COMMIT ops made,
// or, when all is set, anything (the base's records in dockerd's BuildKit,
// which share docker's own snapshots and cost nothing to make again).
func commitRecord(u *bkclient.UsageInfo, all bool) bool {
	if all {
		return true
	}
	d := u.Description
	return strings.HasPrefix(d, "local source for ") || strings.HasPrefix(d, "COMMIT ") || strings.HasPrefix(d, "[commit] ")
}

// PruneCommitRecords removes from BuildKit's cache the records that a
// commit made (not in before: no clock is compared, buildkitd's may be
// another machine's) and that are its own
// (commitRecord): a commit leaves no copy of the container's changes
// behind, as docker commit leaves nothing in docker's build cache. Records
// still in use by another build are left, as BuildKit's prune leaves them.
func PruneCommitRecords(ctx context.Context, bk *bkclient.Client, before map[string]bool, all bool) error {
	du, err := bk.DiskUsage(ctx)
	if err != nil {
		return err
	}
	var filters []string
	for _, u := range du {
		if before[u.ID] || !commitRecord(u, all) {
			continue
		}
		filters = append(filters, "id=="+u.ID)
	}
	if len(filters) == 0 {
		return nil
	}
	return bk.Prune(ctx, nil, bkclient.WithFilter(filters), bkclient.PruneAll)
}

// InPlaceRecord is the description of the cache record of a change set
// written in place by BuildKit's engine in the CLI (package engine).
const InPlaceRecord = "[commit] change set written in place"

// PruneWrittenInPlace removes from the engine's cache the records of the
// change sets written in place: the commit's own, never taken again (each
// has a cache key of its own), and any an interrupted commit left. It
// lists nothing first: a listing of the records' usage costs as much as the
// prune.
func PruneWrittenInPlace(ctx context.Context, bk *bkclient.Client) error {
	return bk.Prune(ctx, nil, bkclient.WithFilter([]string{"description==" + strconv.Quote(InPlaceRecord)}), bkclient.PruneAll)
}
