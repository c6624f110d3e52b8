package engine

import (
	"testing"
	"time"

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

func TestCollectable(t *testing.T) {
	now := time.Now()
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	policy := gcPolicy(t.TempDir())
	if len(policy) == 0 {
		t.Fatal("no garbage-collection policy")
	}
	const free = 1 << 50 // a disk with room
	for _, c := range []struct {
		name   string
		policy []bkclient.PruneInfo
		du     []*bkclient.UsageInfo
		free   int64
		want   bool
	}{
		{"an empty cache", policy, nil, free, false},
		{"a base used an hour ago", policy, []*bkclient.UsageInfo{{Size: 1 << 30, LastUsedAt: ago(time.Hour)}}, free, false},
		// The first rule: over 512 MB, local sources (and cache mounts, git
		// checkouts) unused for 48 hours.
		{"a local source unused for three days", policy, []*bkclient.UsageInfo{{Size: 1 << 30, RecordType: bkclient.UsageRecordTypeLocalSource, LastUsedAt: ago(72 * time.Hour)}}, free, true},
		{"a base unused for three days", policy, []*bkclient.UsageInfo{{Size: 1 << 30, RecordType: bkclient.UsageRecordTypeRegular, LastUsedAt: ago(72 * time.Hour)}}, free, false},
		{"a small local source unused for three days", policy, []*bkclient.UsageInfo{{Size: 1 << 20, RecordType: bkclient.UsageRecordTypeLocalSource, LastUsedAt: ago(72 * time.Hour)}}, free, false},
		{"a cache mount never used, over the space", policy, []*bkclient.UsageInfo{{Size: 1 << 30, RecordType: bkclient.UsageRecordTypeCacheMount}}, free, true},
		{"a local source used today, over the space", policy, []*bkclient.UsageInfo{{Size: 1 << 30, RecordType: bkclient.UsageRecordTypeLocalSource, LastUsedAt: ago(time.Hour)}}, free, false},
		// The second: anything unused for 60 days, once over the cap.
		{"a small record unused for 90 days", policy, []*bkclient.UsageInfo{{Size: 1 << 20, LastUsedAt: ago(90 * 24 * time.Hour)}}, free, false},
		{"a full disk, a record unused for 90 days", policy, []*bkclient.UsageInfo{{Size: 1 << 20, LastUsedAt: ago(90 * 24 * time.Hour)}}, 0, true},
		// The last: the cache over its cap, whatever its age.
		{"a cache over the cap", policy, []*bkclient.UsageInfo{{Size: 200 << 30, LastUsedAt: ago(time.Minute)}}, free, true},
		{"a full disk", policy, []*bkclient.UsageInfo{{Size: 1 << 20, LastUsedAt: ago(time.Minute)}}, 0, true},
		// Internal records go to the last rule alone, which keeps space.
		{"an internal record on a full disk", policy[:3], []*bkclient.UsageInfo{{Size: 1 << 20, RecordType: bkclient.UsageRecordTypeInternal}}, 0, false},
		{"a bad filter", []bkclient.PruneInfo{{Filter: []string{"type=="}, KeepDuration: time.Hour}}, []*bkclient.UsageInfo{{Size: 1, LastUsedAt: ago(time.Second)}}, free, true},
		{"a rule that keeps nothing", []bkclient.PruneInfo{{Filter: []string{"type==regular"}}}, []*bkclient.UsageInfo{{Size: 1, RecordType: bkclient.UsageRecordTypeRegular, LastUsedAt: ago(time.Second)}}, free, true},
		{"a rule that keeps nothing, for other records", []bkclient.PruneInfo{{Filter: []string{"type==regular"}}}, []*bkclient.UsageInfo{{Size: 1, RecordType: bkclient.UsageRecordTypeLocalSource, LastUsedAt: ago(time.Second)}}, free, false},
		{"a rule that keeps nothing, no record", []bkclient.PruneInfo{{All: true}}, nil, free, false},
	} {
		if got := collectable(c.policy, c.du, c.free, now); got != c.want {
			t.Errorf("%s: collectable = %v, want %v", c.name, got, c.want)
		}
	}
}
