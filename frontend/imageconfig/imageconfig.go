// Package imageconfig computes image configs and history as pure functions:
// a config comes in, a new one goes out, and the input is never changed.
package imageconfig

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/sys/signal"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Clone returns a deep copy of img.
func Clone(img *dockerspec.DockerOCIImage) *dockerspec.DockerOCIImage {
	out := &dockerspec.DockerOCIImage{}
	if img == nil {
		return out
	}
	dt, err := json.Marshal(img)
	if err != nil {
		panic(fmt.Sprintf("image config cannot be marshalled: %v", err))
	}
	if err := json.Unmarshal(dt, out); err != nil {
		panic(fmt.Sprintf("image config cannot be unmarshalled: %v", err))
	}
	return out
}

// CloneConfig returns a deep copy of c.
func CloneConfig(c *dockerspec.DockerOCIImageConfig) *dockerspec.DockerOCIImageConfig {
	img := Clone(&dockerspec.DockerOCIImage{Config: *c})
	return &img.Config
}

// Entry describes one history entry to append.
type Entry struct {
	// CreatedBy is the command that made the entry.
	CreatedBy string
	// Author is the entry's author.
	Author string
	// Comment is the entry's comment (the commit message).
	Comment string
	// Created is the entry's time; nil leaves it to the exporter.
	Created *time.Time
	// EmptyLayer marks an entry that adds no layer.
	EmptyLayer bool
}

// AddHistory returns a copy of img with e appended to its history. An author
// on a layer entry also becomes the image author, as `docker commit -a` does.
func AddHistory(img *dockerspec.DockerOCIImage, e Entry) *dockerspec.DockerOCIImage {
	out := Clone(img)
	out.History = append(out.History, ocispecs.History{
		Created:    e.Created,
		CreatedBy:  e.CreatedBy,
		Author:     e.Author,
		Comment:    e.Comment,
		EmptyLayer: e.EmptyLayer,
	})
	if e.Author != "" {
		out.Author = e.Author
	}
	return out
}

// Change returns a copy of img whose config has the `docker commit
// --change` instructions cmds applied, by docker's rules: config only (no
// history entry, no layer), words expanded against the config's own
// environment as each instruction comes, and an ENTRYPOINT that clears
// the CMD unless a CMD came before it. img is not changed.
func Change(img *dockerspec.DockerOCIImage, cmds []instructions.Command) (*dockerspec.DockerOCIImage, error) {
	out := Clone(img)
	cfg := &out.Config
	lex := shell.NewLex('\\')
	cmdSet := false
	for _, cmd := range cmds {
		if ex, ok := cmd.(instructions.SupportsSingleWordExpansion); ok {
			env := envList(cfg.Env)
			if err := ex.Expand(func(w string) (string, error) {
				v, _, err := lex.ProcessWord(w, env)
				return v, err
			}); err != nil {
				return nil, errors.Wrapf(err, "%s", strings.ToUpper(cmd.Name()))
			}
		}
		switch c := cmd.(type) {
		case *instructions.EnvCommand:
			for _, e := range c.Env {
				cfg.Env = addEnv(cfg.Env, e.Key, e.Value)
			}
		case *instructions.LabelCommand:
			if cfg.Labels == nil {
				cfg.Labels = map[string]string{}
			}
			for _, l := range c.Labels {
				cfg.Labels[l.Key] = l.Value
			}
		case *instructions.CmdCommand:
			cfg.Cmd = commandLine(out, c.ShellDependantCmdLine)
			cfg.ArgsEscaped = true //nolint:staticcheck // kept for docker compatibility, as BuildKit does
			cmdSet = true
		case *instructions.EntrypointCommand:
			cfg.Entrypoint = commandLine(out, c.ShellDependantCmdLine)
			if !cmdSet {
				cfg.Cmd = nil
			}
		case *instructions.ExposeCommand:
			ports, err := parsePorts(c.Ports)
			if err != nil {
				return nil, err
			}
			if cfg.ExposedPorts == nil {
				cfg.ExposedPorts = map[string]struct{}{}
			}
			for _, p := range ports {
				cfg.ExposedPorts[p] = struct{}{}
			}
		case *instructions.VolumeCommand:
			if cfg.Volumes == nil {
				cfg.Volumes = map[string]struct{}{}
			}
			for _, v := range c.Volumes {
				if v == "" {
					return nil, errors.New("VOLUME specified can not be an empty string")
				}
				cfg.Volumes[v] = struct{}{}
			}
		case *instructions.UserCommand:
			cfg.User = c.User
		case *instructions.WorkdirCommand:
			cfg.WorkingDir = workdir(cfg.WorkingDir, c.Path)
		case *instructions.StopSignalCommand:
			if _, err := signal.ParseSignal(c.Signal); err != nil {
				return nil, errors.Wrapf(err, "STOPSIGNAL %s", c.Signal)
			}
			cfg.StopSignal = c.Signal
		case *instructions.HealthCheckCommand:
			h := *c.Health
			h.Test = slices.Clone(h.Test)
			cfg.Healthcheck = &h
		case *instructions.OnbuildCommand:
			cfg.OnBuild = append(cfg.OnBuild, c.Expression)
		default:
			return nil, errors.Errorf("%s is not a config instruction", strings.ToUpper(cmd.Name()))
		}
	}
	return out, nil
}

// envList is a config's environment as the shell lexer reads it.
type envList []string

func (e envList) Get(key string) (string, bool) {
	for i := len(e) - 1; i >= 0; i-- {
		k, v, _ := strings.Cut(e[i], "=")
		if shell.EqualEnvKeys(k, key) {
			return v, true
		}
	}
	return "", false
}

func (e envList) Keys() []string {
	keys := make([]string, 0, len(e))
	for _, kv := range e {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	return keys
}

// commandLine turns a CMD/ENTRYPOINT/RUN argument into argv: the exec form as
// is, the shell form behind the image's SHELL (default /bin/sh -c).
func commandLine(img *dockerspec.DockerOCIImage, c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return slices.Clone(c.CmdLine)
	}
	line := strings.Join(c.CmdLine, " ")
	if strings.TrimSpace(line) == "" {
		return nil
	}
	return append(shellOf(img), line)
}

// shellOf returns the shell that prefixes shell-form commands.
func shellOf(img *dockerspec.DockerOCIImage) []string {
	if len(img.Config.Shell) > 0 {
		return slices.Clone(img.Config.Shell)
	}
	if img.OS == "windows" {
		return []string{"cmd", "/S", "/C"}
	}
	return []string{"/bin/sh", "-c"}
}

// addEnv returns env with k set to v: an existing key is replaced in place,
// a new one appended.
func addEnv(env []string, k, v string) []string {
	out := slices.Clone(env)
	for i, kv := range out {
		key, _, _ := strings.Cut(kv, "=")
		if shell.EqualEnvKeys(key, k) {
			out[i] = k + "=" + v
			return out
		}
	}
	return append(out, k+"="+v)
}

// workdir resolves a WORKDIR argument against the current working directory.
func workdir(cur, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	if cur == "" {
		cur = "/"
	}
	return path.Join(cur, p)
}

// parsePorts normalises EXPOSE arguments the way docker does: a missing
// protocol is tcp, and a range expands to one entry per port.
func parsePorts(specs []string) ([]string, error) {
	var out []string
	for _, spec := range specs {
		portPart, proto, hasProto := strings.Cut(spec, "/")
		if !hasProto {
			proto = "tcp"
		}
		proto = strings.ToLower(proto)
		switch proto {
		case "tcp", "udp", "sctp":
		default:
			return nil, errors.Errorf("invalid port %q: protocol %q is not tcp, udp or sctp", spec, proto)
		}
		lo, hi, isRange := strings.Cut(portPart, "-")
		start, err := parsePort(lo)
		if err != nil {
			return nil, errors.Wrapf(err, "invalid port %q", spec)
		}
		end := start
		if isRange {
			if end, err = parsePort(hi); err != nil {
				return nil, errors.Wrapf(err, "invalid port %q", spec)
			}
			if end < start {
				return nil, errors.Errorf("invalid port %q: range ends before it starts", spec)
			}
		}
		for p := start; p <= end; p++ {
			out = append(out, strconv.Itoa(p)+"/"+proto)
		}
	}
	return out, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return 0, errors.Errorf("%q is not a port number (0-65535)", s)
	}
	return n, nil
}

// CheckPatterns refuses a malformed name pattern, naming it and the
// option that gave it.
func CheckPatterns(option string, patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return errors.Errorf("%s: an empty pattern matches nothing", option)
		}
		if _, err := path.Match(p, ""); err != nil {
			return errors.Errorf("%s %q: a malformed pattern (use * for any run of characters, ? for one, [...] for a class)", option, p)
		}
	}
	return nil
}

func matchesAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Unset returns a copy of img without the environment variables and the
// labels whose names match any of env and labels (path.Match patterns:
// AWS_* takes every variable whose name starts with AWS_).
func Unset(img *dockerspec.DockerOCIImage, env, labels []string) (*dockerspec.DockerOCIImage, error) {
	if err := CheckPatterns("--unset-env", env); err != nil {
		return nil, err
	}
	if err := CheckPatterns("--unset-label", labels); err != nil {
		return nil, err
	}
	out := Clone(img)
	if len(env) > 0 {
		out.Config.Env = slices.DeleteFunc(out.Config.Env, func(kv string) bool {
			k, _, _ := strings.Cut(kv, "=")
			return matchesAny(env, k)
		})
	}
	for k := range out.Config.Labels {
		if matchesAny(labels, k) {
			delete(out.Config.Labels, k)
		}
	}
	return out, nil
}

// OmitHistory returns a copy of img whose history tells nothing of how it
// was made: one entry per layer, each with the image's time (now when img
// has none yet) and no command, author or comment. (An image exporter
// gives a layer without an entry one of its own, with the layer's
// description and time.)
func OmitHistory(img *dockerspec.DockerOCIImage, now time.Time) *dockerspec.DockerOCIImage {
	out := Clone(img)
	if out.Created == nil {
		out.Created = &now
	}
	var h []ocispecs.History
	for _, e := range out.History {
		if !e.EmptyLayer {
			h = append(h, ocispecs.History{Created: out.Created})
		}
	}
	out.History = h
	return out
}
