package commitfile

import (
	"bytes"
	"fmt"
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

// ChangesStage names the stage AppendChanges adds for a build target.
const ChangesStage = "commit-frontend-changes"

// AppendChanges appends `--change` instructions, one per line, to the end of
// the Commitfile, after checking them as ParseChanges does. With a build
// target, they go into a stage of their own on that target, whose name
// AppendChanges returns: the build's new target (every line of the
// Commitfile keeps its number).
func (cf *Commitfile) AppendChanges(text, target string) (string, error) {
	changes, err := ParseChanges(text)
	if err != nil {
		return "", err
	}
	if len(changes) == 0 {
		return "", nil
	}
	escape := cf.EscapeToken
	if escape == 0 {
		escape = '\\'
	}
	var b bytes.Buffer
	b.Write(cf.Text)
	if len(cf.Text) > 0 && !bytes.HasSuffix(cf.Text, []byte("\n")) {
		b.WriteByte('\n')
	}
	newTarget := ""
	if target != "" {
		if strings.ContainsAny(target, " \t\r\n$\\`\"'") {
			return "", errors.Errorf("target %q: not a stage name", target)
		}
		b.WriteString("FROM " + target + " AS " + ChangesStage + "\n")
		newTarget = ChangesStage
	}
	for i, line := range changes {
		if strings.HasSuffix(strings.TrimRight(line, " \t"), string(escape)) {
			return "", &LineError{Input: "change", Line: i + 1, Err: errors.Errorf("%q ends with a line continuation", line)}
		}
		b.WriteString(line + "\n")
	}
	cf.Text = b.Bytes()
	return newTarget, nil
}

// ParseChanges checks `--change` instructions, one per line, and refuses any
// instruction `docker commit` does not accept. It returns the non-empty
// lines; errors name the line.
func ParseChanges(text string) ([]string, error) {
	var out []string
	for i, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if _, err := ParseChange(line); err != nil {
			return nil, &LineError{Input: "change", Line: i + 1, Err: err}
		}
		out = append(out, line)
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
		return nil, fmt.Errorf("%s is not supported by --change: commit accepts only %s", strings.ToUpper(node.Value), strings.ToUpper(strings.Join(ChangeInstructions, ", ")))
	}
	return instructions.ParseCommand(node)
}
