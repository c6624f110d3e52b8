package llb

import (
	"context"
	"fmt"
	"strings"

	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"google.golang.org/protobuf/proto"
)

// placeholderPrefix starts the argv[0] of the exec op that stands for a
// COMMIT until Splice replaces it. BuildKit's Dockerfile converter is given
// `RUN ["<placeholder>"]` in place of each COMMIT line, so every other
// instruction is converted exactly as the Dockerfile frontend converts it.
const placeholderPrefix = "/.commit-frontend/COMMIT-"

// Placeholder returns the argv[0] that stands for the COMMIT numbered k in
// the Commitfile whose placeholder key is key (commitfile.Key): a text
// cannot hold the key made of its own bytes, so a RUN the user wrote is
// never taken for a COMMIT.
func Placeholder(key string, k int) string { return fmt.Sprintf("%s%s-%d", placeholderPrefix, key, k) }

// PlaceholderIndex tells which COMMIT a history created_by written by
// BuildKit's converter for a placeholder RUN of key stands for.
func PlaceholderIndex(key, createdBy string) (int, bool) {
	prefix := placeholderPrefix + key + "-"
	i := strings.Index(createdBy, prefix)
	if i < 0 {
		return 0, false
	}
	return placeholderNumber(createdBy[i+len(prefix):])
}

// placeholderNumber reads the COMMIT number that starts s.
func placeholderNumber(s string) (int, bool) {
	var k int
	if _, err := fmt.Sscanf(s, "%d", &k); err != nil {
		return 0, false
	}
	return k, true
}

// Site is where a placeholder stood: what the COMMIT is applied to.
type Site struct {
	// Index numbers the COMMIT in the Commitfile, from 0.
	Index int
	// State is the filesystem the COMMIT is applied on.
	State bkllb.State
	// Env is the environment the converter gave the placeholder: the
	// stage's ENV and the build arguments in scope, for expanding the
	// COMMIT's words.
	Env []string
	// Platform is the platform of the stage.
	Platform *ocispecs.Platform
}

// Replacer returns the state a COMMIT makes of its site.
type Replacer func(ctx context.Context, s Site) (bkllb.State, error)

// Splice returns def with every placeholder exec op replaced by the ops
// that replace returns for it, and every op that depended on a placeholder
// rewritten to depend on its replacement. Ops that no placeholder reaches
// keep their bytes, so their digests (and BuildKit's cache) are unchanged.
func Splice(ctx context.Context, def *pb.Definition, key string, replace Replacer) (*pb.Definition, error) {
	if def == nil || len(def.Def) == 0 {
		return def, nil
	}
	out := &pb.Definition{Metadata: map[string]*pb.OpMetadata{}, Source: &pb.Source{Locations: map[string]*pb.Locations{}}}
	if def.Source != nil {
		out.Source.Infos = append(out.Source.Infos, def.Source.Infos...)
	}
	have := map[digest.Digest]bool{}
	add := func(dt []byte, md *pb.OpMetadata, locs *pb.Locations) digest.Digest {
		d := digest.FromBytes(dt)
		if have[d] {
			return d
		}
		have[d] = true
		out.Def = append(out.Def, dt)
		if md != nil {
			out.Metadata[string(d)] = md
		}
		if locs != nil {
			out.Source.Locations[string(d)] = locs
		}
		return d
	}
	type output struct {
		digest digest.Digest
		index  int64
	}
	// remap moves one output (a placeholder's) to its replacement; moved
	// moves every output of an op rewritten because an input moved.
	remap := map[output]output{}
	moved := map[digest.Digest]digest.Digest{}
	// empty holds placeholders replaced by the empty filesystem (nothing
	// committed on scratch): only the result may stand on one, and is
	// then empty too.
	empty := map[digest.Digest]bool{}
	spliced := 0
	for _, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			return nil, errors.Wrap(err, "reading the LLB definition")
		}
		old := digest.FromBytes(dt)
		changed := false
		for _, in := range op.Inputs {
			if empty[digest.Digest(in.Digest)] {
				if op.Op != nil || len(op.Inputs) != 1 {
					return nil, errors.New("a COMMIT that adds nothing to an empty filesystem leaves nothing for the next step to work on")
				}
				return &pb.Definition{}, nil
			}
			if to, ok := remap[output{digest.Digest(in.Digest), in.Index}]; ok {
				in.Digest, in.Index = string(to.digest), to.index
				changed = true
			} else if to, ok := moved[digest.Digest(in.Digest)]; ok {
				in.Digest = string(to)
				changed = true
			}
		}
		var locs *pb.Locations
		if def.Source != nil {
			locs = def.Source.Locations[string(old)]
		}
		if k, ok := placeholder(&op, key); ok {
			site := Site{Index: k, Env: op.GetExec().GetMeta().GetEnv()}
			if op.Platform != nil {
				p := op.Platform.Spec()
				site.Platform = &p
			}
			st, err := rootState(out, &op)
			if err != nil {
				return nil, errors.Wrapf(err, "COMMIT %d", k)
			}
			if site.Platform != nil {
				st = st.Platform(*site.Platform)
			}
			site.State = st
			rst, err := replace(ctx, site)
			if err != nil {
				return nil, err
			}
			rdef, err := rst.Marshal(ctx)
			if err != nil {
				return nil, errors.Wrapf(err, "COMMIT %d", k)
			}
			term, err := merge(out, rdef.ToPB(), add)
			if err != nil {
				return nil, err
			}
			if term == nil {
				empty[old] = true
				spliced++
				continue
			}
			remap[output{old, 0}] = output{digest.Digest(term.Digest), term.Index}
			spliced++
			continue
		}
		if changed {
			var err error
			if dt, err = (proto.MarshalOptions{Deterministic: true}).Marshal(&op); err != nil {
				return nil, err
			}
			if nd := digest.FromBytes(dt); nd != old {
				moved[old] = nd
			}
		}
		add(dt, def.Metadata[string(old)], locs)
	}
	if spliced == 0 {
		return def, nil
	}
	return prune(out)
}

// placeholder tells whether op is the exec op of a placeholder RUN of key.
func placeholder(op *pb.Op, key string) (int, bool) {
	args := op.GetExec().GetMeta().GetArgs()
	prefix := placeholderPrefix + key + "-"
	if len(args) != 1 || !strings.HasPrefix(args[0], prefix) {
		return 0, false
	}
	return placeholderNumber(args[0][len(prefix):])
}

// rootState returns the state an exec op runs on: its root mount's input,
// scratch for none.
func rootState(def *pb.Definition, op *pb.Op) (bkllb.State, error) {
	for _, m := range op.GetExec().GetMounts() {
		if m.Dest != "/" {
			continue
		}
		if m.Input == int64(pb.Empty) {
			return bkllb.Scratch(), nil
		}
		if m.Input < 0 || int(m.Input) >= len(op.Inputs) {
			return bkllb.State{}, errors.Errorf("root mount input %d out of range", m.Input)
		}
		return stateAt(def, op.Inputs[m.Input])
	}
	return bkllb.State{}, errors.New("no root mount")
}

// stateAt returns the state of one output of the ops in def.
func stateAt(def *pb.Definition, in *pb.Input) (bkllb.State, error) {
	term, err := (&pb.Op{Inputs: []*pb.Input{{Digest: in.Digest, Index: in.Index}}}).MarshalVT()
	if err != nil {
		return bkllb.State{}, err
	}
	sub := &pb.Definition{Def: append(append([][]byte{}, def.Def...), term), Metadata: def.Metadata, Source: def.Source}
	op, err := bkllb.NewDefinitionOp(sub)
	if err != nil {
		return bkllb.State{}, errors.Wrap(err, "the state before a COMMIT")
	}
	return bkllb.NewState(op.Output()), nil
}

// merge adds the ops of def (all but its terminal) to out and returns the
// terminal's input: the output that stands for def.
func merge(out, def *pb.Definition, add func([]byte, *pb.OpMetadata, *pb.Locations) digest.Digest) (*pb.Input, error) {
	if len(def.Def) == 0 {
		return nil, nil
	}
	offset := int32(len(out.Source.Infos))
	if def.Source != nil {
		out.Source.Infos = append(out.Source.Infos, def.Source.Infos...)
	}
	for _, dt := range def.Def[:len(def.Def)-1] {
		d := digest.FromBytes(dt)
		var locs *pb.Locations
		if def.Source != nil {
			if l := def.Source.Locations[string(d)]; l != nil {
				locs = &pb.Locations{}
				for _, loc := range l.Locations {
					c := proto.Clone(loc).(*pb.Location)
					c.SourceIndex += offset
					locs.Locations = append(locs.Locations, c)
				}
			}
		}
		add(dt, def.Metadata[string(d)], locs)
	}
	var term pb.Op
	if err := proto.Unmarshal(def.Def[len(def.Def)-1], &term); err != nil {
		return nil, err
	}
	if len(term.Inputs) == 0 {
		return nil, nil
	}
	return term.Inputs[0], nil
}

// prune drops the ops the terminal op no longer reaches, keeping the order.
func prune(def *pb.Definition) (*pb.Definition, error) {
	ops := map[digest.Digest]*pb.Op{}
	for _, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			return nil, err
		}
		ops[digest.FromBytes(dt)] = &op
	}
	keep := map[digest.Digest]bool{}
	var walk func(digest.Digest)
	walk = func(d digest.Digest) {
		if keep[d] {
			return
		}
		keep[d] = true
		if op := ops[d]; op != nil {
			for _, in := range op.Inputs {
				walk(digest.Digest(in.Digest))
			}
		}
	}
	walk(digest.FromBytes(def.Def[len(def.Def)-1]))
	out := &pb.Definition{Metadata: map[string]*pb.OpMetadata{}, Source: &pb.Source{Infos: def.Source.Infos, Locations: map[string]*pb.Locations{}}}
	for _, dt := range def.Def {
		d := digest.FromBytes(dt)
		if !keep[d] {
			continue
		}
		out.Def = append(out.Def, dt)
		if md := def.Metadata[string(d)]; md != nil {
			out.Metadata[string(d)] = md
		}
		if l := def.Source.Locations[string(d)]; l != nil {
			out.Source.Locations[string(d)] = l
		}
	}
	return out, nil
}
