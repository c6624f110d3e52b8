package commitfile

import (
	"bytes"
	"slices"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/command"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/pkg/errors"
)

// ChangeInstructions are the instructions `docker commit --change` accepts.
var ChangeInstructions = []string{
	command.Cmd, command.Entrypoint, command.Env, command.Expose, command.Healthcheck,
	command.Label, command.Onbuild, command.StopSignal, command.User, command.Volume,
	command.Workdir,
}

// FromOptions returns the Commitfile that frontend options without one
// describe:
//
//	FROM <base>
//	COMMIT <commit>
//
// base "" is scratch; commit "" commits nothing (a config-only step).
func FromOptions(base, commit string) (*Commitfile, error) {
	if base == "" {
		base = "scratch"
	}
	for name, v := range map[string]string{"base": base, "commit": commit} {
		if strings.ContainsAny(v, "\n\r \t\\`$\"'") {
			return nil, errors.Errorf("option %s=%q: not a name", name, v)
		}
	}
	text := "FROM " + base + "\n"
	if commit != "" {
		text += "COMMIT " + commit + "\n"
	}
	return Parse([]byte(text))
}

// ParseChanges parses `--change` instructions, one per line, and refuses
// any instruction `docker commit` does not accept. Blank lines are skipped;
// errors name the line.
func ParseChanges(text string) ([]instructions.Command, error) {
	var out []instructions.Command
	for i, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if strings.HasSuffix(strings.TrimRight(line, " \t"), "\\") {
			return nil, &LineError{Input: "change", Line: i + 1, Err: errors.Errorf("%q ends with a line continuation", line)}
		}
		cmd, err := ParseChange(line)
		if err != nil {
			return nil, &LineError{Input: "change", Line: i + 1, Err: err}
		}
		out = append(out, cmd)
	}
	return out, nil
}

// ParseChangeFlags parses the changes given as `--change` flags, one
// instruction each; errors name the flag by its place.
func ParseChangeFlags(changes []string) ([]instructions.Command, error) {
	var out []instructions.Command
	for i, c := range changes {
		if strings.ContainsAny(c, "\n\r") {
			return nil, errors.Errorf("--change %d (%q): a change is one instruction on one line; give each as its own --change, without line continuations", i+1, c)
		}
		cmd, err := ParseChange(c)
		if err != nil {
			return nil, errors.Wrapf(err, "--change %d (%q)", i+1, c)
		}
		out = append(out, cmd)
	}
	return out, nil
}

// ParseChange parses one `--change` instruction.
func ParseChange(line string) (instructions.Command, error) {
	res, err := parser.Parse(bytes.NewReader([]byte(line)))
	if err != nil {
		return nil, errors.Wrapf(err, "%q", line)
	}
	if len(res.AST.Children) != 1 {
		return nil, errors.Errorf("%q: a change is exactly one instruction", line)
	}
	node := res.AST.Children[0]
	if !slices.Contains(ChangeInstructions, strings.ToLower(node.Value)) {
		return nil, errors.Errorf("%s is not supported by --change: commit accepts only %s", strings.ToUpper(node.Value), strings.ToUpper(strings.Join(ChangeInstructions, ", ")))
	}
	return instructions.ParseCommand(node)
}
