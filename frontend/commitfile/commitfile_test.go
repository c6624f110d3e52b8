package commitfile

import (
	"errors"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func TestParse(t *testing.T) {
	cf, err := Parse([]byte(`# syntax=example.com/commit-frontend
ARG BASE=busybox
FROM ${BASE} AS one
ENV A=1 \
    B=2
COMMIT --author="Jane Doe" --message='a message' rootfs
RUN <<EOT
echo hi
EOT
FROM one
COMMIT -- second
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.MetaArgs) != 1 || cf.MetaArgs[0].Args[0].Key != "BASE" {
		t.Errorf("meta args: %+v", cf.MetaArgs)
	}
	if len(cf.Stages) != 2 || cf.Stages[0].Name != "one" || cf.Stages[0].BaseName != "${BASE}" || cf.Stages[1].BaseName != "one" {
		t.Fatalf("stages: %+v", cf.Stages)
	}
	cmds := cf.Stages[0].Commands
	if len(cmds) != 3 {
		t.Fatalf("commands: %d", len(cmds))
	}
	env := cmds[0].(*instructions.EnvCommand)
	if len(env.Env) != 2 {
		t.Errorf("ENV with a line continuation: %+v", env.Env)
	}
	c := cmds[1].(*CommitCommand)
	if c.Context != "rootfs" || c.Author != "Jane Doe" || c.Message != "a message" {
		t.Errorf("COMMIT: %+v", c)
	}
	if loc := c.Location(); len(loc) != 1 || loc[0].Start.Line != 6 {
		t.Errorf("COMMIT location: %+v", loc)
	}
	if run := cmds[2].(*instructions.RunCommand); len(run.Files) != 1 || !strings.Contains(run.Files[0].Data, "echo hi") {
		t.Errorf("RUN heredoc: %+v", run)
	}
	if c2 := cf.Stages[1].Commands[0].(*CommitCommand); c2.Context != "second" {
		t.Errorf("COMMIT after --: %+v", c2)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"FROM scratch\nFROBNICATE x\n", 2, "unknown instruction: FROBNICATE"},
		{"ENV A=1\nFROM scratch\n", 1, "before the first FROM"},
		{"FROM scratch\nCOMMIT\n", 2, "COMMIT requires the name"},
		{"FROM scratch\nCOMMIT a b\n", 2, "COMMIT takes one context name"},
		{"FROM scratch\nCOMMIT --colour=red a\n", 2, "unknown flag: --colour"},
		{"FROM scratch\nEXPOSE\n", 2, "EXPOSE requires at least one argument"},
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
	cmds, err := ParseChanges("ENV A=1\n\nCMD [\"sh\"]\nHEALTHCHECK --interval=3s CMD true\nONBUILD RUN make")
	if err != nil {
		t.Fatal(err)
	}
	if len(cmds) != 4 {
		t.Fatalf("got %d commands", len(cmds))
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
	cf, err := FromOptions(Options{Base: "busybox", Commit: "rootfs", Change: "USER nobody", Author: "a", Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	from, err := Parse([]byte("FROM busybox\nCOMMIT --author=a --message=m rootfs\nUSER nobody\n"))
	if err != nil {
		t.Fatal(err)
	}
	got, want := cf.Stages[0], from.Stages[0]
	if got.BaseName != want.BaseName || len(got.Commands) != len(want.Commands) {
		t.Fatalf("options %+v, Commitfile %+v", got, want)
	}
	gc, wc := got.Commands[0].(*CommitCommand), want.Commands[0].(*CommitCommand)
	if gc.Context != wc.Context || gc.Author != wc.Author || gc.Message != wc.Message {
		t.Errorf("COMMIT from options %+v, from a Commitfile %+v", gc, wc)
	}
	if got.Commands[1].(*instructions.UserCommand).User != "nobody" {
		t.Errorf("USER: %+v", got.Commands[1])
	}
	if cf, _ := FromOptions(Options{}); cf.Stages[0].BaseName != "scratch" || len(cf.Stages[0].Commands) != 0 {
		t.Errorf("empty options: %+v", cf.Stages[0])
	}
}
