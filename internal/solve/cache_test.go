package solve

import (
	"testing"

	bkclient "github.com/moby/buildkit/client"
)

// TestCommitRecord: what a commit prunes from BuildKit's cache.
func TestCommitRecord(t *testing.T) {
	for _, tc := range []struct {
		desc string
		all  bool
		want bool
	}{
		{"local source for rootfs", false, true},
		{"COMMIT rootfs", false, true},
		{"[commit] load rootfs", false, true},
		{"", false, false}, // a base image's layer in a standalone buildkitd
		{"pulled from docker.io/library/busybox", false, false},
		{"", true, true}, // in dockerd's BuildKit: every record the commit made
	} {
		if got := commitRecord(&bkclient.UsageInfo{Description: tc.desc}, tc.all); got != tc.want {
			t.Errorf("%q (all=%v): %v, want %v", tc.desc, tc.all, got, tc.want)
		}
	}
}
