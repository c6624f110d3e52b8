package commit

import (
	"strings"
	"testing"

	bkclient "github.com/moby/buildkit/client"
)

func TestImageName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"app", "docker.io/library/app:latest", ""},
		{"example.com/team/app:1", "example.com/team/app:1", ""},
		{"Not A Ref", "", "invalid reference"},
		{"app@sha256:" + strings.Repeat("0", 64), "", "cannot be named by digest"},
	} {
		got, err := imageName(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseChanges(t *testing.T) {
	if _, err := parseChanges([]string{"ENV A=1", "USER nobody"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		changes []string
		want    string
	}{
		{[]string{"ENV A=1", "ENV B=2\nRUN rm -rf /"}, "--change 2"},
		{[]string{"RUN true"}, "RUN is not supported by --change"},
		{[]string{"FROM scratch"}, "FROM is not supported"},
	} {
		if _, err := parseChanges(tc.changes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.changes, err, tc.want)
		}
	}
}

func TestSanitizeID(t *testing.T) {
	if got := sanitizeID("K8s.io/Pod_1"); got != "k8s-io-pod-1" {
		t.Errorf("sanitizeID: %q", got)
	}
}

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
