package llb

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	"github.com/pkg/errors"
)

// convertRun adds the layer of a RUN step: the command run on the current
// state with the stage's env, workdir, user, build args and mounts.
func convertRun(ctx context.Context, st *stageState, done []*stageState, stageNames []string, c *instructions.RunCommand, cfg *imageconfig.State, opt ConvertOpt, epoch *time.Time) error {
	args, err := runArgs(cfg, c)
	if err != nil {
		return err
	}
	opts := []bkllb.RunOption{bkllb.Args(args), bkllb.WithCustomName("RUN " + strings.Join(c.CmdLine, " "))}
	for _, at := range st.at {
		opts = append(opts, at)
	}
	var argEnv []string
	for _, k := range slices.Sorted(maps.Keys(st.args)) {
		if _, inEnv := envKey(cfg.Image.Config.Env, k); !inEnv {
			opts = append(opts, bkllb.AddEnv(k, st.args[k]))
			argEnv = append(argEnv, k+"="+st.args[k])
		}
	}
	for _, m := range instructions.GetMounts(c) {
		mo, err := mountOption(ctx, st, done, stageNames, m, opt)
		if err != nil {
			return err
		}
		opts = append(opts, mo)
	}
	st.state = st.state.Run(opts...).Root()
	st.layers++
	createdBy := strings.Join(args, " ")
	if len(argEnv) > 0 {
		createdBy = fmt.Sprintf("|%d %s %s", len(argEnv), strings.Join(argEnv, " "), createdBy)
	}
	cfg.Image = imageconfig.AddHistory(cfg.Image, imageconfig.Entry{
		CreatedBy: "RUN " + createdBy + " # buildkit",
		Comment:   imageconfig.HistoryComment,
		Created:   epoch,
	})
	return nil
}

// runArgs is the argv of a RUN step; a shell-form heredoc runs its body.
func runArgs(cfg *imageconfig.State, c *instructions.RunCommand) ([]string, error) {
	if len(c.Files) > 0 {
		if !c.PrependShell || len(c.Files) != 1 || len(c.CmdLine) != 1 || !strings.HasPrefix(c.CmdLine[0], "<<") {
			return nil, errors.New("RUN: only a shell-form heredoc alone (RUN <<EOF ... EOF) is supported")
		}
		return append(imageconfig.Shell(cfg.Image), c.Files[0].Data), nil
	}
	args := imageconfig.CommandLine(cfg.Image, c.ShellDependantCmdLine)
	if len(args) == 0 {
		return nil, errors.New("RUN needs a command")
	}
	return args, nil
}

func mountOption(ctx context.Context, st *stageState, done []*stageState, stageNames []string, m *instructions.Mount, opt ConvertOpt) (bkllb.RunOption, error) {
	switch m.Type {
	case instructions.MountTypeCache:
		id := m.CacheID
		if id == "" {
			id = m.Target
		}
		sharing := bkllb.CacheMountShared
		switch m.CacheSharing {
		case instructions.MountSharingPrivate:
			sharing = bkllb.CacheMountPrivate
		case instructions.MountSharingLocked:
			sharing = bkllb.CacheMountLocked
		}
		return bkllb.AddMount(m.Target, bkllb.Scratch(), bkllb.AsPersistentCacheDir(id, sharing)), nil
	case instructions.MountTypeBind:
		src, err := sourceState(ctx, done, stageNames, m.From, opt, "RUN --mount")
		if err != nil {
			return nil, err
		}
		mo := []bkllb.MountOption{bkllb.SourcePath(m.Source)}
		if m.ReadOnly {
			mo = append(mo, bkllb.Readonly)
		} else {
			mo = append(mo, bkllb.ForceNoOutput)
		}
		return bkllb.AddMount(m.Target, src, mo...), nil
	case instructions.MountTypeTmpfs:
		return bkllb.AddMount(m.Target, bkllb.Scratch(), bkllb.Tmpfs()), nil
	default:
		return nil, errors.Errorf("RUN --mount=type=%s is not supported (cache, bind and tmpfs are)", m.Type)
	}
}

// sourceState resolves a --from value: an earlier stage, a named context or
// an image; "" is the main build context.
func sourceState(ctx context.Context, done []*stageState, stageNames []string, from string, opt ConvertOpt, verb string) (bkllb.State, error) {
	if from == "" {
		return opt.Resolver.Context(ctx, "")
	}
	name := strings.ToLower(from)
	for _, d := range done {
		if d.name != "" && d.name == name {
			return d.state, nil
		}
	}
	if slices.Contains(stageNames, name) {
		return bkllb.State{}, errors.Errorf("%s --from=%s: stage %q is not defined before this instruction; a stage can only use earlier stages", verb, from, name)
	}
	if st, _, err := opt.Resolver.NamedContext(ctx, from, nil); err != nil {
		return bkllb.State{}, err
	} else if st != nil {
		return *st, nil
	}
	s, _, err := opt.Resolver.ResolveImage(ctx, from, nil)
	if err != nil {
		return bkllb.State{}, errors.Wrapf(err, "%s --from=%s: not a stage, a context or an image", verb, from)
	}
	return s, nil
}

func envKey(env []string, k string) (string, bool) {
	for _, kv := range env {
		key, v, _ := strings.Cut(kv, "=")
		if shell.EqualEnvKeys(key, k) {
			return v, true
		}
	}
	return "", false
}

// copySpec is a COPY or ADD step.
type copySpec struct {
	verb               string
	sd                 instructions.SourcesAndDest
	from, chown, chmod string
	link, unpack       bool
}

// convertCopy adds the layer of a COPY or ADD step.
func convertCopy(ctx context.Context, st *stageState, done []*stageState, stageNames []string, c copySpec, cfg *imageconfig.State, opt ConvertOpt, epoch *time.Time) error {
	if len(c.sd.SourcePaths) == 0 && len(c.sd.SourceContents) == 0 {
		return errors.Errorf("%s needs a source and a destination", c.verb)
	}
	if len(c.sd.SourceContents) > 0 {
		return errors.Errorf("%s with a heredoc source is not supported", c.verb)
	}
	src, err := sourceState(ctx, done, stageNames, c.from, opt, c.verb)
	if err != nil {
		return err
	}
	dest := c.sd.DestPath
	if !strings.HasPrefix(dest, "/") {
		dest = imageconfig.Workdir(cfg.Image.Config.WorkingDir, dest)
		if strings.HasSuffix(c.sd.DestPath, "/") || c.sd.DestPath == "." {
			dest += "/"
		}
	}
	var fa *bkllb.FileAction
	for _, p := range c.sd.SourcePaths {
		info := &bkllb.CopyInfo{
			FollowSymlinks:      true,
			CopyDirContentsOnly: true,
			AttemptUnpack:       c.unpack,
			CreateDestPath:      true,
			AllowWildcard:       true,
		}
		if c.chown != "" {
			info.ChownOpt = chownOpt(c.chown)
		}
		if c.chmod != "" {
			m, err := parseMode(c.chmod)
			if err != nil {
				return err
			}
			info.Mode = m
		}
		if fa == nil {
			fa = bkllb.Copy(src, p, dest, info)
		} else {
			fa = fa.Copy(src, p, dest, info)
		}
	}
	createdBy := fmt.Sprintf("%s %s %s", c.verb, strings.Join(c.sd.SourcePaths, " "), c.sd.DestPath)
	opts := append([]bkllb.ConstraintsOpt{bkllb.WithCustomName(createdBy)}, st.at...)
	if c.link {
		st.state = bkllb.Merge([]bkllb.State{st.state, bkllb.Scratch().File(fa, opts...)}, opts...)
	} else {
		st.state = st.state.File(fa, opts...)
	}
	st.layers++
	cfg.Image = imageconfig.AddHistory(cfg.Image, imageconfig.Entry{
		CreatedBy: createdBy + " # buildkit",
		Comment:   imageconfig.HistoryComment,
		Created:   epoch,
	})
	return nil
}
