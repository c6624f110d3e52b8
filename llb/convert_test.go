package llb

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// staticResolver answers from fixed tables: the conversion's inputs, not a
// stand-in for BuildKit.
type staticResolver struct {
	images  map[string]*dockerspec.DockerOCIImage
	sources map[string]*CommitSource
}

func (r *staticResolver) NamedContext(context.Context, string, *ocispecs.Platform) (*bkllb.State, *dockerspec.DockerOCIImage, error) {
	return nil, nil, nil
}

func (r *staticResolver) ResolveImage(_ context.Context, ref string, _ *ocispecs.Platform) (bkllb.State, *dockerspec.DockerOCIImage, error) {
	img, ok := r.images[ref]
	if !ok {
		return bkllb.State{}, nil, errors.New("not found: " + ref)
	}
	return bkllb.Image(ref), img, nil
}

func (r *staticResolver) CommitSource(_ context.Context, name string, _ *ocispecs.Platform, _ ...bkllb.ConstraintsOpt) (*CommitSource, error) {
	s, ok := r.sources[name]
	if !ok {
		return nil, errors.New("no context " + name)
	}
	return s, nil
}

func (r *staticResolver) Context(context.Context, string) (bkllb.State, error) {
	return bkllb.Local("context"), nil
}

func convert(t *testing.T, src string, r *staticResolver, args map[string]string) (*Result, error) {
	t.Helper()
	cf, err := commitfile.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return Convert(context.Background(), cf, ConvertOpt{Resolver: r, BuildArgs: args})
}

func fileOps(t *testing.T, st bkllb.State) []*pb.FileOp {
	t.Helper()
	def, err := st.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*pb.FileOp
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			t.Fatal(err)
		}
		if f := op.GetFile(); f != nil {
			out = append(out, f)
		}
	}
	return out
}

func TestConvertChangeSet(t *testing.T) {
	base := &dockerspec.DockerOCIImage{}
	base.OS, base.Architecture, base.Variant = "linux", "arm", "v7"
	base.History = []ocispecs.History{{CreatedBy: "base"}}
	r := &staticResolver{
		images: map[string]*dockerspec.DockerOCIImage{"example.com/base:1": base},
		sources: map[string]*CommitSource{"rootfs": {
			Kind: ChangeSet, State: bkllb.Local("rootfs"), TarPath: "/changes.tar", Entries: 3,
			Deletions: []string{"etc/old", "bad-\xff-name"}, Opaque: []string{"var/cache"},
		}},
	}
	res, err := convert(t, "ARG TAG=0\nFROM example.com/base:${TAG}\nCOMMIT --author=me rootfs\nENV A=1\n", r, map[string]string{"TAG": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 1 {
		t.Errorf("layers %d", res.Layers)
	}
	if res.Image.Variant != "v7" || len(res.Image.History) != 3 || res.Image.History[1].Author != "me" || !res.Image.History[2].EmptyLayer {
		t.Errorf("image %+v", res.Image)
	}
	ops := fileOps(t, res.State)
	if len(ops) != 1 {
		t.Fatalf("%d file ops, want one (one layer)", len(ops))
	}
	var rms, copies []string
	for _, a := range ops[0].Actions {
		switch {
		case a.GetRm() != nil:
			rm := a.GetRm()
			rms = append(rms, rm.Path)
			if !rm.AllowNotFound {
				t.Errorf("rm %s must allow not found", rm.Path)
			}
		case a.GetCopy() != nil:
			c := a.GetCopy()
			copies = append(copies, c.Src)
			if !c.AttemptUnpackDockerCompatibility || c.Dest != "/" {
				t.Errorf("copy %+v", c)
			}
		}
	}
	if strings.Join(rms, ",") != "/bad-?-name,/etc/old,/var/cache" {
		t.Errorf("removals %q", rms)
	}
	if len(copies) != 1 || copies[0] != "/changes.tar" {
		t.Errorf("copies %q", copies)
	}
}

func TestConvertEmptyAndErrors(t *testing.T) {
	r := &staticResolver{sources: map[string]*CommitSource{"empty": {Kind: ChangeSet, State: bkllb.Local("empty")}}}
	res, err := convert(t, "FROM scratch\nCOMMIT empty\n", r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Layers != 0 || len(res.Image.History) != 1 || !res.Image.History[0].EmptyLayer {
		t.Errorf("empty commit: %d layers, history %+v", res.Layers, res.Image.History)
	}
	_, err = convert(t, "FROM scratch\n\nCOMMIT missing\n", r, nil)
	var le *parser.LocationError
	if err == nil || !errors.As(err, &le) || le.Locations[0][0].Start.Line != 3 {
		t.Errorf("missing context: %v", err)
	}
	_, err = convert(t, "FROM nosuch/image\n", r, nil)
	if err == nil || !strings.Contains(err.Error(), "nosuch/image") {
		t.Errorf("missing image: %v", err)
	}
}
