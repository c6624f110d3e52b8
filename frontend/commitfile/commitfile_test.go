package commitfile

import (
	"errors"
	"strings"
	"testing"

	cfllb "github.com/commit-frontend/commit-frontend/llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func TestParse(t *testing.T) {
	src := `# syntax=example.com/commit-frontend
ARG BASE=busybox
FROM ${BASE} AS one
ENV A=1 \
    B=2
COMMIT --author="Jane Doe" \
  --message='a message' rootfs
RUN <<EOT
echo hi
EOT
FROM one
COMMIT -- second
`
	cf, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Commits) != 2 {
		t.Fatalf("commits: %+v", cf.Commits)
	}
	c := cf.Commits[0]
	if c.Context != "rootfs" || c.Author != "Jane Doe" || c.Message != "a message" {
		t.Errorf("COMMIT: %+v", c)
	}
	if loc := c.Location(); len(loc) == 0 || loc[0].Start.Line != 6 || loc[len(loc)-1].End.Line != 7 {
		t.Errorf("COMMIT location: %+v", loc)
	}
	if c2 := cf.Commits[1]; c2.Context != "second" {
		t.Errorf("COMMIT after --: %+v", c2)
	}
	// The converter's text: every line where it was, each COMMIT a
	// placeholder RUN on its first line, its other lines empty.
	got := strings.Split(string(cf.Text), "\n")
	want := strings.Split(src, "\n")
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(want), cf.Text)
	}
	for i := range want {
		switch i + 1 {
		case 6:
			want[i] = `RUN ["` + cfllb.Placeholder(cf.Key, 0) + `"]`
		case 7:
			want[i] = ""
		case 12:
			want[i] = `RUN ["` + cfllb.Placeholder(cf.Key, 1) + `"]`
		}
		if got[i] != want[i] {
			t.Errorf("line %d: %q, want %q", i+1, got[i], want[i])
		}
	}
}

func TestExpanded(t *testing.T) {
	cf, err := Parse([]byte("FROM scratch\nCOMMIT --author=\"$WHO\" --message=\"${MSG:-none}, isn't it \\\"so\\\"\" ${CTX}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := cf.Commits[0].Expanded(cf.EscapeToken, []string{"WHO=Jane Doe", "CTX=rootfs"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Context != "rootfs" || c.Author != "Jane Doe" || c.Message != `none, isn't it "so"` {
		t.Errorf("expanded: %+v", c)
	}
	if cf.Commits[0].Context != "${CTX}" {
		t.Errorf("Expanded changed its receiver: %+v", cf.Commits[0])
	}
	if _, err := cf.Commits[0].Expanded(cf.EscapeToken, nil); err == nil || !strings.Contains(err.Error(), "empty once expanded") {
		t.Errorf("an empty context name: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"FROM scratch\nCOMMIT\n", 2, "COMMIT requires the name"},
		{"FROM scratch\nCOMMIT a b\n", 2, "COMMIT takes one context name"},
		{"FROM scratch\nCOMMIT --colour=red a\n", 2, "unknown flag: --colour"},
		{"# only a comment\n", 0, "no instructions"},
	} {
		_, err := Parse([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
			continue
		}
		if tc.line == 0 {
			continue
		}
		var le *parser.LocationError
		if !errors.As(err, &le) || le.Locations[0][0].Start.Line != tc.line {
			t.Errorf("%q: error %v does not point at line %d", tc.src, err, tc.line)
		}
	}
}

func TestParseChanges(t *testing.T) {
	lines, err := ParseChanges("ENV A=1\n\nCMD [\"sh\"]\nHEALTHCHECK --interval=3s CMD true\nONBUILD RUN make")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 4 {
		t.Fatalf("got %d lines", len(lines))
	}
	for _, refused := range []string{"RUN make", "COPY a b", "ADD a b", "FROM scratch", "SHELL [\"bash\"]", "ARG X", "MAINTAINER me"} {
		_, err := ParseChanges("ENV A=1\n" + refused)
		var le *LineError
		if !errors.As(err, &le) || le.Line != 2 || le.Input != "change" {
			t.Errorf("%q: error %v, want a change line 2 error", refused, err)
			continue
		}
		name := strings.Fields(refused)[0]
		if !strings.Contains(err.Error(), name+" is not supported by --change") {
			t.Errorf("%q: error %q does not name the instruction", refused, err)
		}
	}
}

func TestFromOptions(t *testing.T) {
	cf, err := FromOptions("busybox", "rootfs")
	if err != nil {
		t.Fatal(err)
	}
	want := "FROM busybox\nRUN [\"" + cfllb.Placeholder(cf.Key, 0) + "\"]\n"
	if string(cf.Text) != want || len(cf.Commits) != 1 || cf.Commits[0].Context != "rootfs" {
		t.Errorf("text %q, commits %+v; want %q", cf.Text, cf.Commits, want)
	}
	if cf, _ := FromOptions("", ""); string(cf.Text) != "FROM scratch\n" || len(cf.Commits) != 0 {
		t.Errorf("empty options: %q", cf.Text)
	}
	if _, err := FromOptions("busybox\nRUN rm -rf /", ""); err == nil {
		t.Error("a base with a line break was taken")
	}
	_, err = ParseChanges("ENV A=1 \\")
	var le *LineError
	if !errors.As(err, &le) || !strings.Contains(err.Error(), "line continuation") {
		t.Errorf("a change ending in a continuation: %v", err)
	}
}
