// Package commitfile reads the Commitfile language: Dockerfile syntax, read
// with BuildKit's own parser, plus one instruction, COMMIT, that commits a
// named context holding a container filesystem (or its change set) on top of
// the current state.
//
// Every instruction but COMMIT is BuildKit's to convert. Parse hands back the
// text BuildKit's Dockerfile converter is given, each COMMIT replaced on its
// own lines by an exec-form RUN of a placeholder (so every line number stays
// where it was), and the COMMITs themselves, in order.
package commitfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	cfllb "github.com/commit-frontend/commit-frontend/llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/pkg/errors"
)

// Commit is the name of the instruction that commits a container filesystem.
const Commit = "commit"

// Commitfile is a parsed Commitfile.
type Commitfile struct {
	// Text is the Commitfile with each COMMIT replaced by its placeholder
	// RUN, on the same lines: the input of BuildKit's Dockerfile converter.
	Text []byte
	// Commits are the COMMIT instructions in order; Commits[k] is the one
	// whose placeholder is llb.Placeholder(Key, k).
	Commits []*CommitCommand
	// Key is in every placeholder: the start of the SHA-256 of the
	// Commitfile as written, which the file itself cannot contain.
	Key string
	// EscapeToken is the escape character in effect.
	EscapeToken rune
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
	// CreatedBy overrides the history created_by, e.g. with the container's
	// command; empty for "COMMIT <context>".
	CreatedBy string
}

// Location returns where the instruction stands.
func (c *CommitCommand) Location() []parser.Range { return c.Loc }

// Expanded returns a copy of c with build arguments and environment
// variables expanded in its context name, author and message, as the
// Dockerfile frontend expands the words of an instruction.
func (c *CommitCommand) Expanded(escape rune, env []string) (*CommitCommand, error) {
	if escape == 0 {
		escape = '\\'
	}
	lex := shell.NewLex(escape)
	out := *c
	// The flag values come unquoted from the parser: their quotes are
	// text ("the container's changes"), only $VARIABLES expand.
	literal := strings.NewReplacer(`'`, string(escape)+`'`, `"`, string(escape)+`"`)
	for _, w := range []struct {
		p      *string
		quoted bool
	}{{&out.Context, true}, {&out.Author, false}, {&out.Message, false}} {
		word := *w.p
		if !w.quoted {
			word = literal.Replace(word)
		}
		res, err := lex.ProcessWordWithMatches(word, shell.EnvsFromSlice(env))
		if err != nil {
			return nil, parser.WithLocation(errors.Wrap(err, "COMMIT"), c.Loc)
		}
		*w.p = res.Result
	}
	if out.Context == "" {
		return nil, parser.WithLocation(errors.Errorf("COMMIT %s: the context name is empty once expanded", c.Context), c.Loc)
	}
	return &out, nil
}

// CreatedByText is the created_by of the COMMIT's history entry: the
// instruction itself unless a caller (the commit command) set it.
func (c *CommitCommand) CreatedByText() string {
	if c.CreatedBy != "" {
		return c.CreatedBy
	}
	return "COMMIT " + c.Context
}

// Parse parses a Commitfile. Errors carry the line they refer to
// (parser.LocationError), so callers can attach the source; everything but
// COMMIT is checked by BuildKit's converter later, with its own lines.
func Parse(dt []byte) (*Commitfile, error) {
	res, err := parser.Parse(bytes.NewReader(dt))
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(dt)
	cf := &Commitfile{EscapeToken: res.EscapeToken, Key: hex.EncodeToString(sum[:8])}
	lines := bytes.SplitAfter(dt, []byte("\n"))
	for _, node := range res.AST.Children {
		if !strings.EqualFold(node.Value, Commit) {
			continue
		}
		c, err := parseCommit(node)
		if err != nil {
			return nil, parser.WithLocation(err, node.Location())
		}
		k := len(cf.Commits)
		cf.Commits = append(cf.Commits, c)
		for l := node.StartLine; l <= node.EndLine && l-1 < len(lines); l++ {
			nl := ""
			if bytes.HasSuffix(lines[l-1], []byte("\n")) {
				nl = "\n"
			}
			if l == node.StartLine {
				lines[l-1] = fmt.Appendf(nil, "RUN [%q]%s", cfllb.Placeholder(cf.Key, k), nl)
			} else {
				lines[l-1] = []byte(nl)
			}
		}
	}
	cf.Text = bytes.Join(lines, nil)
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
		Context: args[0],
		Author:  author.Value,
		Message: message.Value,
		Loc:     node.Location(),
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
