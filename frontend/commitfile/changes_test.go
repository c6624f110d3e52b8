package commitfile

import (
	"strings"
	"testing"
)

func TestParseChangeFlags(t *testing.T) {
	if _, err := ParseChangeFlags([]string{"ENV A=1", "USER nobody"}); err != nil {
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
		if _, err := ParseChangeFlags(tc.changes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.changes, err, tc.want)
		}
	}
}
