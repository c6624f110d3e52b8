package engine

import (
	"testing"

	bkclient "github.com/moby/buildkit/client"
)

func TestSharingIrrelevant(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []bkclient.PruneInfo
		want bool
	}{
		{"the records written in place", []bkclient.PruneInfo{{All: true, Filter: []string{`description=="x"`}}}, true},
		{"prune --all", []bkclient.PruneInfo{{All: true}}, true},
		{"a commit's own records", []bkclient.PruneInfo{{All: true, Filter: []string{"id==a", "id==b"}}}, true},
		// Shared records are kept.
		{"prune", []bkclient.PruneInfo{{Filter: []string{"type==regular"}}}, false},
		// Shared data counts out of the space kept.
		{"all, keeping space", []bkclient.PruneInfo{{All: true, ReservedSpace: 1 << 30}}, false},
		{"all, up to a size", []bkclient.PruneInfo{{All: true, MaxUsedSpace: 1 << 30}}, false},
		{"all, keeping free space", []bkclient.PruneInfo{{All: true, MinFreeSpace: 1 << 30}}, false},
		{"the garbage-collection policy", gcPolicy(t.TempDir()), false},
		{"nothing", nil, false},
	} {
		if got := sharingIrrelevant(c.opts); got != c.want {
			t.Errorf("%s: sharingIrrelevant = %v, want %v", c.name, got, c.want)
		}
	}
}
