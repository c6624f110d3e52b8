package exporter

import (
	"strings"
	"testing"
)

func TestImageName(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"", "", ""},
		{"app", "docker.io/library/app:latest", ""},
		{"example.com/team/app:1", "example.com/team/app:1", ""},
		{"Not A Ref", "", "invalid reference"},
		{"app@sha256:" + strings.Repeat("0", 64), "", "cannot be named by digest"},
	} {
		got, err := ImageName(tc.in)
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
