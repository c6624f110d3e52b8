package commitfile

import (
	"bytes"
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

// Options are the frontend options that describe a commit without a Commitfile.
type Options struct {
	// Base is the base image reference, named context or "scratch".
	Base string
	// Commit is the name of the context holding the container filesystem;
	// empty for a commit that only changes the config.
	Commit string
	// Change holds config instructions, one per line, as `docker commit --change`.
	Change string
	// Author is the author of the commit.
	Author string
	// Message is the commit message.
	Message string
	// CreatedBy is the history created_by of the commit, e.g. the
	// container's command. Without Commit it adds a history entry with no
	// layer, as a builder's metadata-only step does.
	CreatedBy string
}

// FromOptions builds the AST that the options describe:
//
//	FROM <base>
//	COMMIT --author=<author> --message=<message> <commit>
//	<change lines>
func FromOptions(o Options) (*Commitfile, error) {
	base := o.Base
	if base == "" {
		base = "scratch"
	}
	st := Stage{BaseName: base}
	switch {
	case o.Commit != "":
		st.Commands = append(st.Commands, &CommitCommand{
			Context:   o.Commit,
			Author:    o.Author,
			Message:   o.Message,
			Original:  "COMMIT " + o.Commit,
			CreatedBy: o.CreatedBy,
		})
	case o.CreatedBy != "":
		st.Commands = append(st.Commands, &HistoryCommand{CreatedBy: o.CreatedBy, Author: o.Author, Comment: o.Message})
	}
	changes, err := ParseChanges(o.Change)
	if err != nil {
		return nil, err
	}
	st.Commands = append(st.Commands, changes...)
	return &Commitfile{Stages: []Stage{st}, EscapeToken: '\\'}, nil
}

// ParseChanges parses `--change` instructions, one per line, and refuses any
// instruction `docker commit` does not accept. Errors name the line.
func ParseChanges(text string) ([]instructions.Command, error) {
	var out []instructions.Command
	for i, line := range strings.Split(text, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		cmd, err := ParseChange(line)
		if err != nil {
			return nil, &LineError{Input: "change", Line: i + 1, Err: err}
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
	name := strings.ToLower(node.Value)
	allowed := false
	for _, c := range ChangeInstructions {
		if c == name {
			allowed = true
			break
		}
	}
	if !allowed {
		return nil, errors.Errorf("%s is not supported by --change: commit accepts only %s", strings.ToUpper(node.Value), strings.ToUpper(strings.Join(ChangeInstructions, ", ")))
	}
	return instructions.ParseCommand(node)
}

// AppendChanges appends the change instructions to the last stage of cf.
func (cf *Commitfile) AppendChanges(text string) error {
	changes, err := ParseChanges(text)
	if err != nil {
		return err
	}
	last := &cf.Stages[len(cf.Stages)-1]
	last.Commands = append(last.Commands, changes...)
	return nil
}

// HistoryCommand adds a history entry without a layer. It has no Commitfile
// syntax: it comes from the options of a metadata-only build step.
type HistoryCommand struct {
	// CreatedBy, Author and Comment fill the entry.
	CreatedBy, Author, Comment string
}

// Name returns the pseudo-instruction's name.
func (c *HistoryCommand) Name() string { return "history" }

// Location returns nil: the command comes from options.
func (c *HistoryCommand) Location() []parser.Range { return nil }

// Comments returns nil.
func (c *HistoryCommand) Comments() []string { return nil }
