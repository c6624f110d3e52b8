// Package commitfile parses the Commitfile language and the frontend options
// into one AST.
//
// A Commitfile is Dockerfile syntax, read with BuildKit's own parser, with one
// more instruction, COMMIT, that commits a named context holding a container
// filesystem (or its change set) on top of the current state.
package commitfile

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/command"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/pkg/errors"
)

// Commit is the name of the instruction that commits a container filesystem.
const Commit = "commit"

// Commitfile is the parsed form of a Commitfile or of the frontend options.
type Commitfile struct {
	// MetaArgs are the ARG instructions before the first FROM.
	MetaArgs []instructions.ArgCommand
	// Stages are the FROM blocks in order.
	Stages []Stage
	// EscapeToken is the escape character in effect.
	EscapeToken rune
}

// Stage is one FROM block: a base and the instructions applied on it.
type Stage struct {
	// Name is the stage name given with AS, lower-cased; empty when there is none.
	Name string
	// BaseName is the FROM argument before ARG expansion.
	BaseName string
	// Platform is the FROM --platform flag before ARG expansion.
	Platform string
	// Commands are the instructions of the stage in order.
	Commands []instructions.Command
	// Loc is where the FROM instruction stands.
	Loc []parser.Range
}

// CommitCommand commits the filesystem of a named context as one layer.
//
//	COMMIT [--author=NAME] [--message=TEXT] CONTEXT
type CommitCommand struct {
	// Context is the name of the local or named context holding the filesystem.
	Context string
	// Author is recorded in the history entry and as the image author.
	Author string
	// Message is the history comment.
	Message string
	// Loc is where the instruction stands; nil when it came from options.
	Loc []parser.Range
	// Original is the instruction as written.
	Original string
	// CreatedBy overrides the history created_by, e.g. with the container's
	// command; empty for "COMMIT <context>".
	CreatedBy string
}

// Name returns the instruction name.
func (c *CommitCommand) Name() string { return Commit }

// Location returns where the instruction stands.
func (c *CommitCommand) Location() []parser.Range { return c.Loc }

// Comments returns no comments: COMMIT carries none.
func (c *CommitCommand) Comments() []string { return nil }

// Expand expands build arguments in the context name, author and message.
func (c *CommitCommand) Expand(expand instructions.SingleWordExpander) error {
	for _, p := range []*string{&c.Context, &c.Author, &c.Message} {
		v, err := expand(*p)
		if err != nil {
			return err
		}
		*p = v
	}
	return nil
}

// configInstructions are the instructions that change only the image config.
var configInstructions = map[string]bool{
	command.Env: true, command.Arg: true, command.Label: true, command.Cmd: true,
	command.Entrypoint: true, command.Expose: true, command.User: true, command.Volume: true,
	command.Workdir: true, command.StopSignal: true, command.Healthcheck: true,
	command.Onbuild: true, command.Shell: true, command.Maintainer: true,
}

// layerInstructions are the instructions that add a layer.
var layerInstructions = map[string]bool{
	Commit: true, command.Run: true, command.Copy: true, command.Add: true,
}

// Parse parses a Commitfile. Errors carry the line they refer to
// (parser.LocationError), so callers can attach the source.
func Parse(dt []byte) (*Commitfile, error) {
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return nil, err
	}
	cf := &Commitfile{EscapeToken: res.EscapeToken}
	var cur *Stage
	for _, node := range res.AST.Children {
		name := strings.ToLower(node.Value)
		if !configInstructions[name] && !layerInstructions[name] && name != command.From {
			return nil, parser.WithLocation(errors.Errorf("unknown instruction: %s (a Commitfile accepts FROM, COMMIT, RUN, COPY, ADD and the config instructions)", strings.ToUpper(node.Value)), node.Location())
		}
		var cmd instructions.Command
		if name == Commit {
			c, err := parseCommit(node)
			if err != nil {
				return nil, parser.WithLocation(err, node.Location())
			}
			cmd = c
		} else {
			v, err := instructions.ParseInstruction(node)
			if err != nil {
				return nil, err
			}
			if st, ok := v.(*instructions.Stage); ok {
				cf.Stages = append(cf.Stages, Stage{
					Name:     st.Name,
					BaseName: st.BaseName,
					Platform: st.Platform,
					Loc:      node.Location(),
				})
				cur = &cf.Stages[len(cf.Stages)-1]
				continue
			}
			c, ok := v.(instructions.Command)
			if !ok {
				return nil, parser.WithLocation(errors.Errorf("unsupported instruction %s", node.Value), node.Location())
			}
			cmd = c
		}
		if cur == nil {
			if a, ok := cmd.(*instructions.ArgCommand); ok {
				cf.MetaArgs = append(cf.MetaArgs, *a)
				continue
			}
			return nil, parser.WithLocation(errors.Errorf("%s before the first FROM: a Commitfile must start with FROM (only ARG may come before it)", strings.ToUpper(node.Value)), node.Location())
		}
		cur.Commands = append(cur.Commands, cmd)
	}
	if len(cf.Stages) == 0 {
		return nil, errors.New("the Commitfile has no FROM instruction")
	}
	return cf, nil
}

// parseCommit reads COMMIT [--author=..] [--message=..] CONTEXT. The dockerfile
// parser keeps the flags of an instruction it does not know in node.Flags, and
// the whole line in node.Original.
func parseCommit(node *parser.Node) (*CommitCommand, error) {
	flags := instructions.NewBFlagsWithArgs(node.Flags)
	author := flags.AddString("author", "")
	message := flags.AddString("message", "")
	if err := flags.Parse(); err != nil {
		return nil, errors.Wrap(err, "COMMIT")
	}
	args := commitArgs(node.Original)
	switch {
	case len(args) == 0:
		return nil, errors.New("COMMIT requires the name of the context holding the container filesystem")
	case len(args) > 1:
		return nil, errors.Errorf("COMMIT takes one context name, got %d: %s", len(args), strings.Join(args, " "))
	}
	return &CommitCommand{
		Context:  args[0],
		Author:   author.Value,
		Message:  message.Value,
		Loc:      node.Location(),
		Original: node.Original,
	}, nil
}

// commitArgs returns the words of a COMMIT line after the instruction and its
// flags. Quotes group words as the parser's flag reader does.
func commitArgs(original string) []string {
	words := splitWords(original)
	if len(words) > 0 {
		words = words[1:]
	}
	for len(words) > 0 && strings.HasPrefix(words[0], "--") {
		if words[0] == "--" {
			return words[1:]
		}
		words = words[1:]
	}
	return words
}

// splitWords splits s at white space outside single or double quotes.
func splitWords(s string) []string {
	var (
		out   []string
		cur   strings.Builder
		quote rune
		in    bool
	)
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote = r
			in = true
			cur.WriteRune(r)
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			in = true
			cur.WriteRune(r)
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// IsConfigOnly reports whether cmd changes only the image config.
func IsConfigOnly(cmd instructions.Command) bool {
	return configInstructions[strings.ToLower(cmd.Name())]
}

// LineError is an error about one line of an input that has no file of its own,
// such as the `change` option.
type LineError struct {
	// Input names the input, e.g. "change".
	Input string
	// Line is the 1-based line number within the input.
	Line int
	// Err is the underlying error.
	Err error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("%s line %d: %v", e.Input, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }
