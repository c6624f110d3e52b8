// Package llb converts a Commitfile AST into BuildKit LLB and the image config
// that goes with it. It needs no daemon: everything it must look up (images,
// named contexts, the contents of a commit context) comes through a Resolver.
//
// In this project BuildKit's own client/llb package is always imported as bkllb.
package llb

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	"github.com/containerd/platforms"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// SourceKind tells how a COMMIT context holds the filesystem.
type SourceKind int

const (
	// Tree is a plain directory tree: the whole filesystem to commit.
	Tree SourceKind = iota
	// ChangeSet is a change set: a tar of added and modified entries plus a
	// list of deletions and replaced directories.
	ChangeSet
)

// CommitSource is what a COMMIT context holds.
type CommitSource struct {
	// Kind is how the filesystem is held.
	Kind SourceKind
	// State is the context's filesystem.
	State bkllb.State
	// TarPath is the change set's tar inside State (ChangeSet only).
	TarPath string
	// Entries is the number of entries in the tar (ChangeSet only).
	Entries int
	// Deletions are the paths the change set deletes (ChangeSet only).
	Deletions []string
	// Opaque are the directories the change set replaces (ChangeSet only).
	Opaque []string
}

// Empty reports whether the source changes nothing.
func (s *CommitSource) Empty() bool {
	return s.Kind == ChangeSet && s.Entries == 0 && len(s.Deletions) == 0 && len(s.Opaque) == 0
}

// Resolver looks up what the conversion cannot know by itself.
type Resolver interface {
	// NamedContext returns the named context `name` given to the build, or
	// a nil state when there is none.
	NamedContext(ctx context.Context, name string, p *ocispecs.Platform) (*bkllb.State, *dockerspec.DockerOCIImage, error)
	// ResolveImage returns the state and config of an image reference.
	ResolveImage(ctx context.Context, ref string, p *ocispecs.Platform) (bkllb.State, *dockerspec.DockerOCIImage, error)
	// CommitSource returns the filesystem held by the COMMIT context
	// `name`; at ties what it loads to the instruction's source line.
	CommitSource(ctx context.Context, name string, p *ocispecs.Platform, at ...bkllb.ConstraintsOpt) (*CommitSource, error)
	// Context returns the build context for COPY and ADD sources: the main
	// context for "" or a named context.
	Context(ctx context.Context, name string) (bkllb.State, error)
}

// ConvertOpt are the inputs of a conversion besides the AST.
type ConvertOpt struct {
	// BuildArgs override ARG defaults.
	BuildArgs map[string]string
	// TargetPlatform is the platform to build for; nil for the default.
	TargetPlatform *ocispecs.Platform
	// Epoch is SOURCE_DATE_EPOCH: the time of every new history entry.
	Epoch *time.Time
	// Target names the stage to build; empty for the last one.
	Target string
	// Author and Message apply to COMMIT instructions that give none.
	Author, Message string
	// Resolver looks up images and contexts.
	Resolver Resolver
	// Now gives the time of history entries when Epoch is nil.
	Now func() time.Time
	// SourceMap, when set, ties each LLB op to its Commitfile line, so that
	// errors during the solve name the line.
	SourceMap *bkllb.SourceMap
	// SquashSince, when set, makes every COMMIT squash: the layers of the
	// stage above the squash base, and the commit's own changes, become one
	// layer on the squash base.
	SquashSince *Squash
	// Config, when set, replaces the config of the first stage's base: a
	// builder's step gives the whole container config of the step.
	Config *dockerspec.DockerOCIImageConfig
}

// Result is the LLB and config of the stage built.
type Result struct {
	// State is the final filesystem.
	State bkllb.State
	// Image is the image config with history.
	Image *dockerspec.DockerOCIImage
	// BaseImage is the config of the stage's base, nil for scratch.
	BaseImage *dockerspec.DockerOCIImage
	// Layers is the number of layers the stage adds to its base.
	Layers int
}

type stageState struct {
	name      string
	state     bkllb.State
	image     *dockerspec.DockerOCIImage
	baseImage *dockerspec.DockerOCIImage
	layers    int
	cmdSet    bool
	args      map[string]string
	loc       []parser.Range
	// at ties the ops of the current instruction to its source line.
	at []bkllb.ConstraintsOpt
}

// Convert turns cf into LLB and an image config.
func Convert(ctx context.Context, cf *commitfile.Commitfile, opt ConvertOpt) (*Result, error) {
	if opt.Resolver == nil {
		return nil, errors.New("conversion needs a resolver")
	}
	platform := platforms.DefaultSpec()
	if opt.TargetPlatform != nil {
		platform = *opt.TargetPlatform
	}
	lex := shell.NewLex(cf.EscapeToken)
	if cf.EscapeToken == 0 {
		lex = shell.NewLex('\\')
	}
	now := opt.Now
	if now == nil {
		now = time.Now
	}

	metaArgs := map[string]string{}
	for _, a := range cf.MetaArgs {
		for _, kv := range a.Args {
			if v, ok := opt.BuildArgs[kv.Key]; ok {
				metaArgs[kv.Key] = v
			} else if kv.Value != nil {
				v, _, err := lex.ProcessWord(*kv.Value, envGetter(metaArgs))
				if err != nil {
					return nil, parser.WithLocation(err, a.Location())
				}
				metaArgs[kv.Key] = v
			} else {
				metaArgs[kv.Key] = ""
			}
		}
	}

	targetIdx := len(cf.Stages) - 1
	if opt.Target != "" {
		targetIdx = -1
		for i, s := range cf.Stages {
			if s.Name == strings.ToLower(opt.Target) {
				targetIdx = i
			}
		}
		if targetIdx < 0 {
			return nil, errors.Errorf("target stage %q not found", opt.Target)
		}
	}

	stageNames := make([]string, len(cf.Stages))
	for i, s := range cf.Stages {
		stageNames[i] = s.Name
	}
	done := make([]*stageState, 0, len(cf.Stages))
	for i := 0; i <= targetIdx; i++ {
		st, err := convertStage(ctx, cf.Stages[i], done, stageNames, metaArgs, lex, platform, opt, now)
		if err != nil {
			return nil, err
		}
		done = append(done, st)
	}
	last := done[targetIdx]
	return &Result{State: last.state, Image: last.image, BaseImage: last.baseImage, Layers: last.layers}, nil
}

func convertStage(ctx context.Context, s commitfile.Stage, done []*stageState, stageNames []string, metaArgs map[string]string, lex *shell.Lex, platform ocispecs.Platform, opt ConvertOpt, now func() time.Time) (*stageState, error) {
	baseName, _, err := lex.ProcessWord(s.BaseName, envGetter(metaArgs))
	if err != nil {
		return nil, parser.WithLocation(errors.Wrapf(err, "FROM %s", s.BaseName), s.Loc)
	}
	p := platform
	if s.Platform != "" {
		pv, _, err := lex.ProcessWord(s.Platform, envGetter(metaArgs))
		if err != nil {
			return nil, parser.WithLocation(err, s.Loc)
		}
		if p, err = platforms.Parse(pv); err != nil {
			return nil, parser.WithLocation(errors.Wrapf(err, "FROM --platform=%s", pv), s.Loc)
		}
	}
	st, err := resolveBase(ctx, baseName, done, p, opt.Resolver)
	if err != nil {
		return nil, parser.WithLocation(err, s.Loc)
	}
	st.name = s.Name
	st.loc = s.Loc
	st.args = map[string]string{}
	history := time.Time{}
	epoch := opt.Epoch
	if epoch == nil {
		history = now().UTC()
		epoch = &history
	}
	if opt.Config != nil && len(done) == 0 {
		st.image = imageconfig.Clone(st.image)
		st.image.Config = *imageconfig.CloneConfig(opt.Config)
		for _, kv := range st.image.Config.Env {
			k, v, _ := strings.Cut(kv, "=")
			st.state = st.state.AddEnv(k, v)
		}
		if wd := st.image.Config.WorkingDir; wd != "" {
			st.state = st.state.Dir(wd)
		}
		if u := st.image.Config.User; u != "" {
			st.state = st.state.User(u)
		}
	}
	cfgState := imageconfig.State{Image: st.image, Epoch: epoch}

	for _, cmd := range s.Commands {
		st.at = sourceLocation(opt.SourceMap, cmd.Location())
		env := stageEnv(cfgState.Image, st.args)
		if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
			if err := ex.Expand(func(w string) (string, error) {
				v, _, err := lex.ProcessWord(w, envGetter(env))
				return v, err
			}); err != nil {
				return nil, parser.WithLocation(err, cmd.Location())
			}
		}
		switch c := cmd.(type) {
		case *commitfile.CommitCommand:
			if err := convertCommit(ctx, st, c, &cfgState, p, opt, epoch); err != nil {
				return nil, parser.WithLocation(err, c.Location())
			}
			continue
		case *commitfile.HistoryCommand:
			cfgState.Image = imageconfig.AddHistory(cfgState.Image, imageconfig.Entry{
				CreatedBy: c.CreatedBy, Author: c.Author, Comment: c.Comment, Created: epoch, EmptyLayer: true,
			})
			continue
		case *instructions.RunCommand:
			if err := convertRun(ctx, st, done, stageNames, c, &cfgState, opt, epoch); err != nil {
				return nil, parser.WithLocation(err, c.Location())
			}
			continue
		case *instructions.CopyCommand:
			if err := convertCopy(ctx, st, done, stageNames, copySpec{verb: "COPY", sd: c.SourcesAndDest, from: c.From, chown: c.Chown, chmod: c.Chmod, link: c.Link}, &cfgState, opt, epoch); err != nil {
				return nil, parser.WithLocation(err, c.Location())
			}
			continue
		case *instructions.AddCommand:
			if err := convertCopy(ctx, st, done, stageNames, copySpec{verb: "ADD", sd: c.SourcesAndDest, chown: c.Chown, chmod: c.Chmod, link: c.Link, unpack: true}, &cfgState, opt, epoch); err != nil {
				return nil, parser.WithLocation(err, c.Location())
			}
			continue
		case *instructions.ArgCommand:
			for _, kv := range c.Args {
				if v, ok := opt.BuildArgs[kv.Key]; ok {
					st.args[kv.Key] = v
				} else if kv.Value != nil {
					st.args[kv.Key] = *kv.Value
				} else if v, ok := metaArgs[kv.Key]; ok {
					st.args[kv.Key] = v
				}
			}
		case *instructions.EnvCommand:
			for _, e := range c.Env {
				st.state = st.state.AddEnv(e.Key, e.Value)
			}
		case *instructions.WorkdirCommand:
			st.state = st.state.Dir(imageconfig.Workdir(cfgState.Image.Config.WorkingDir, c.Path))
		case *instructions.UserCommand:
			st.state = st.state.User(c.User)
		}
		next, err := imageconfig.Apply(cfgState, cmd)
		if err != nil {
			return nil, parser.WithLocation(err, cmd.Location())
		}
		cfgState = next
	}
	st.image = cfgState.Image
	return st, nil
}

func resolveBase(ctx context.Context, name string, done []*stageState, p ocispecs.Platform, r Resolver) (*stageState, error) {
	if strings.EqualFold(name, "scratch") {
		return &stageState{state: bkllb.Scratch().Platform(p), image: imageconfig.FromBase(nil, p)}, nil
	}
	for _, d := range done {
		if d.name != "" && d.name == strings.ToLower(name) {
			return &stageState{state: d.state, image: imageconfig.Clone(d.image), baseImage: d.baseImage}, nil
		}
	}
	if st, img, err := r.NamedContext(ctx, name, &p); err != nil {
		return nil, errors.Wrapf(err, "base %q", name)
	} else if st != nil {
		return &stageState{state: *st, image: imageconfig.FromBase(img, p), baseImage: img}, nil
	}
	st, img, err := r.ResolveImage(ctx, name, &p)
	if err != nil {
		return nil, errors.Wrapf(err, "base image %q", name)
	}
	return &stageState{state: st, image: imageconfig.FromBase(img, p), baseImage: img}, nil
}

// Squash is the image a squashing COMMIT keeps as it is.
type Squash struct {
	// Name names the image in history comments ("scratch" for none).
	Name string
	// State is its filesystem; Layers its number of layers (0: scratch).
	State  bkllb.State
	Layers int
}

// squashed returns state as one layer on sq: the whole filesystem copied
// into an empty one (so no layer of the chain can be reused), then its
// difference from sq's filesystem, BuildKit's differ computing it, merged
// on sq.
func squashed(state bkllb.State, sq *Squash, opts ...bkllb.ConstraintsOpt) bkllb.State {
	flat := bkllb.Scratch().File(bkllb.Copy(state, "/", "/", &bkllb.CopyInfo{CopyDirContentsOnly: true}), opts...)
	if sq.Layers == 0 {
		return flat
	}
	return bkllb.Merge([]bkllb.State{sq.State, bkllb.Diff(sq.State, flat, opts...)}, opts...)
}

// SquashHistory returns a copy of img whose history entries above the
// first keep layers are marked empty_layer: they stay as a record, their
// layers squashed into the next one. It also tells how many were marked.
func SquashHistory(img *dockerspec.DockerOCIImage, keep int) (*dockerspec.DockerOCIImage, int) {
	out := imageconfig.Clone(img)
	seen, marked := 0, 0
	for i := range out.History {
		if out.History[i].EmptyLayer {
			continue
		}
		if seen++; seen > keep {
			out.History[i].EmptyLayer = true
			marked++
		}
	}
	return out, marked
}

// convertCommit adds the layer of a COMMIT instruction: the change set applied
// to the current state in one FileOp, or the difference between the current
// state and a whole tree.
func convertCommit(ctx context.Context, st *stageState, c *commitfile.CommitCommand, cfg *imageconfig.State, p ocispecs.Platform, opt ConvertOpt, epoch *time.Time) error {
	src, err := opt.Resolver.CommitSource(ctx, c.Context, &p, st.at...)
	if err != nil {
		return errors.Wrapf(err, "COMMIT %s", c.Context)
	}
	author, message := c.Author, c.Message
	if author == "" {
		author = opt.Author
	}
	if message == "" {
		message = opt.Message
	}
	entry := imageconfig.Entry{
		CreatedBy: CommitCreatedBy(c),
		Author:    author,
		Comment:   message,
		Created:   epoch,
	}
	opts := append([]bkllb.ConstraintsOpt{bkllb.WithCustomName("COMMIT " + c.Context)}, st.at...)
	switch {
	case src.Empty():
		entry.EmptyLayer = true
	case src.Kind == ChangeSet:
		st.state = st.state.File(ChangeSetAction(src), opts...)
		st.layers++
	default:
		st.state = bkllb.Merge([]bkllb.State{st.state, bkllb.Diff(st.state, src.State, opts...)}, opts...)
		st.layers++
	}
	if sq := opt.SquashSince; sq != nil {
		st.state = squashed(st.state, sq, opts...)
		var n int
		cfg.Image, n = SquashHistory(cfg.Image, sq.Layers)
		if !entry.EmptyLayer {
			n++
		}
		entry.EmptyLayer = false
		note := fmt.Sprintf("squashed %d layers above %s into one", n, sq.Name)
		if entry.Comment == "" {
			entry.Comment = note
		} else {
			entry.Comment += " (" + note + ")"
		}
	}
	cfg.Image = imageconfig.AddHistory(cfg.Image, entry)
	return nil
}

// CommitCreatedBy is the created_by of a COMMIT history entry: the
// instruction itself unless a caller (the commit command) set it.
func CommitCreatedBy(c *commitfile.CommitCommand) string {
	if c.CreatedBy != "" {
		return c.CreatedBy
	}
	return "COMMIT " + c.Context
}

// ChangeSetAction is the one file action that applies a change set: the
// deletions and replaced directories first, then the tar extracted at /.
func ChangeSetAction(src *CommitSource) *bkllb.FileAction {
	var fa *bkllb.FileAction
	rm := func(p string) {
		info := &bkllb.RmInfo{AllowNotFound: true}
		if pat, ok := changeset.PathPattern(p); ok {
			p = pat
			info.AllowWildcard = true
		}
		if fa == nil {
			fa = bkllb.Rm(p, info)
		} else {
			fa = fa.Rm(p, info)
		}
	}
	for _, d := range slices.Sorted(slices.Values(src.Deletions)) {
		rm("/" + strings.TrimPrefix(d, "/"))
	}
	for _, d := range slices.Sorted(slices.Values(src.Opaque)) {
		rm("/" + strings.TrimPrefix(d, "/"))
	}
	if src.Entries > 0 {
		cp := &bkllb.CopyInfo{AttemptUnpack: true, CreateDestPath: true}
		if fa == nil {
			fa = bkllb.Copy(src.State, src.TarPath, "/", cp)
		} else {
			fa = fa.Copy(src.State, src.TarPath, "/", cp)
		}
	}
	return fa
}

func stageEnv(img *dockerspec.DockerOCIImage, args map[string]string) map[string]string {
	env := maps.Clone(args)
	for _, kv := range img.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

type envGetter map[string]string

func (e envGetter) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }

func (e envGetter) Keys() []string { return slices.Sorted(maps.Keys(e)) }

// sourceLocation ties ops to the Commitfile lines of an instruction.
func sourceLocation(sm *bkllb.SourceMap, loc []parser.Range) []bkllb.ConstraintsOpt {
	if sm == nil || len(loc) == 0 {
		return nil
	}
	ranges := make([]*pb.Range, 0, len(loc))
	for _, l := range loc {
		ranges = append(ranges, &pb.Range{
			Start: &pb.Position{Line: int32(l.Start.Line), Character: int32(l.Start.Character)},
			End:   &pb.Position{Line: int32(l.End.Line), Character: int32(l.End.Character)},
		})
	}
	return []bkllb.ConstraintsOpt{sm.Location(ranges)}
}
