package frontend

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const testdata = "../testdata"

// images answers image lookups from testdata/images: the conversion's
// inputs, not a stand-in for BuildKit.
type images struct{ t *testing.T }

func (r images) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(ref, "docker.io/library/"), ":latest")
	dt, err := os.ReadFile(filepath.Join(testdata, "images", name+".json"))
	if err != nil {
		return "", "", nil, fmt.Errorf("no image %s in testdata/images", ref)
	}
	return ref, digest.FromBytes(dt), dt, nil
}

// sources is the fixed table of COMMIT contexts described in testdata/README.md.
func sources(_ context.Context, name string, _ *ocispecs.Platform, at ...bkllb.ConstraintsOpt) (*cfllb.CommitSource, error) {
	local := bkllb.Local(name, bkllb.LocalUniqueID("golden"))
	switch name {
	case "rootfs":
		return &cfllb.CommitSource{Kind: cfllb.ChangeSet, State: local, TarPath: "/changes.tar", Entries: 3, Deletions: []string{"/etc/old"}, Opaque: []string{"/var/cache"}}, nil
	case "empty":
		return &cfllb.CommitSource{Kind: cfllb.ChangeSet, State: local}, nil
	case "tree":
		return &cfllb.CommitSource{Kind: cfllb.Tree, State: local}, nil
	}
	return nil, fmt.Errorf("no context %q", name)
}

var amd64 = ocispecs.Platform{OS: "linux", Architecture: "amd64"}

func dockerfileOpt(t *testing.T) dockerfile2llb.ConvertOpt {
	// A main context without the random ID a session's would carry.
	main := bkllb.Local("context", bkllb.SharedKeyHint("context"), bkllb.LocalUniqueID("golden"))
	return dockerfile2llb.ConvertOpt{
		MainContext: &main,
		Config: dockerui.Config{
			BuildArgs:      map[string]string{"SOURCE_DATE_EPOCH": "1000000000"},
			BuildPlatforms: []ocispecs.Platform{amd64},
		},
		TargetPlatform: &amd64,
		MetaResolver:   images{t},
	}
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(testdata, "*.Commitfile"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases in %s: %v", testdata, err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".Commitfile")
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			dt, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			cf, err := commitfile.Parse(dt)
			if err != nil {
				t.Fatal(err)
			}
			res, err := Convert(ctx, cf, ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources, Author: "default author"})
			if err != nil {
				t.Fatal(err)
			}
			if len(cf.Commits) == 0 {
				// Identity: what the Dockerfile frontend makes of the text.
				df, err := dockerfile2llb.Dockerfile2LLB(ctx, dt, dockerfileOpt(t))
				if err != nil {
					t.Fatal(err)
				}
				def, err := df.State.Marshal(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.EqualFunc(def.Def, res.Definition.Def, bytes.Equal) {
					t.Errorf("the LLB differs from the Dockerfile frontend's:\n%s\nDockerfile frontend:\n%s", summary(t, res.Definition, nil), summary(t, def.ToPB(), nil))
				}
				a, _ := json.Marshal(df.Image)
				b, _ := json.Marshal(res.Image)
				if !bytes.Equal(a, b) {
					t.Errorf("the image config differs from the Dockerfile frontend's:\n%s\n%s", b, a)
				}
			}
			got := summary(t, res.Definition, res.Image)
			golden := strings.TrimSuffix(file, ".Commitfile") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to write it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (go test ./frontend -run TestGolden -update rewrites it):\n%s", golden, lineDiff(string(want), got))
			}
		})
	}
}

// summary describes a definition and an image config, one line per op.
func summary(t *testing.T, def *pb.Definition, img *dockerspec.DockerOCIImage) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# LLB: one op per line, in the definition's order\n")
	short := func(d string) string { return strings.TrimPrefix(d, "sha256:")[:12] }
	for _, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(dt).String()
		var ins []string
		for _, in := range op.Inputs {
			ins = append(ins, fmt.Sprintf("%s:%d", short(in.Digest), in.Index))
		}
		fmt.Fprintf(&b, "%s [%s] ", short(d), strings.Join(ins, " "))
		switch o := op.Op.(type) {
		case *pb.Op_Source:
			fmt.Fprintf(&b, "source %s", o.Source.Identifier)
			for _, k := range slices.Sorted(mapsKeys(o.Source.Attrs)) {
				fmt.Fprintf(&b, " %s=%s", k, o.Source.Attrs[k])
			}
		case *pb.Op_Exec:
			fmt.Fprintf(&b, "exec %q", o.Exec.Meta.Args)
			if o.Exec.Network != pb.NetMode_UNSET {
				fmt.Fprintf(&b, " network=%s", o.Exec.Network)
			}
			if o.Exec.Security != pb.SecurityMode_SANDBOX {
				fmt.Fprintf(&b, " security=%s", o.Exec.Security)
			}
			for _, m := range o.Exec.Mounts {
				fmt.Fprintf(&b, " mount=%s:%s", m.MountType, m.Dest)
			}
		case *pb.Op_File:
			b.WriteString("file")
			for _, a := range o.File.Actions {
				switch f := a.Action.(type) {
				case *pb.FileAction_Copy:
					fmt.Fprintf(&b, " copy(%s -> %s)", f.Copy.Src, f.Copy.Dest)
				case *pb.FileAction_Mkdir:
					fmt.Fprintf(&b, " mkdir(%s)", f.Mkdir.Path)
				case *pb.FileAction_Mkfile:
					fmt.Fprintf(&b, " mkfile(%s)", f.Mkfile.Path)
				case *pb.FileAction_Rm:
					fmt.Fprintf(&b, " rm(%s)", f.Rm.Path)
				case *pb.FileAction_Symlink:
					fmt.Fprintf(&b, " symlink(%s)", f.Symlink.Newpath)
				}
			}
		case *pb.Op_Merge:
			b.WriteString("merge")
		case *pb.Op_Diff:
			b.WriteString("diff")
		case nil:
			b.WriteString("result")
		}
		b.WriteString("\n")
	}
	if img == nil {
		return b.String()
	}
	cfg := *img
	cfg.History = nil
	dt, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("# image config, history apart\n")
	b.Write(dt)
	b.WriteString("\n# history: created_by | author | comment | empty_layer\n")
	for _, h := range img.History {
		fmt.Fprintf(&b, "%s | %s | %s | %v\n", h.CreatedBy, h.Author, h.Comment, h.EmptyLayer)
	}
	return b.String()
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// lineDiff lists the lines that differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  want %s\n  got  %s\n", i+1, a, c)
		}
	}
	return b.String()
}

func TestConvertErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"FROM scratch\nEXPOSE\n", 2, "EXPOSE requires at least one argument"},
		{"FROM scratch\nFROBNICATE x\n", 2, "unknown instruction: FROBNICATE"},
		{"FROM scratch\n\nCOMMIT nosuch\n", 3, `COMMIT nosuch: no context "nosuch"`},
		{"FROM scratch\nARG X\nCOMMIT $X\n", 3, "empty once expanded"},
		{"FROM scratch\nRUN --network=nope true\n", 2, "nope"},
	} {
		cf, err := commitfile.Parse([]byte(tc.src))
		if err == nil {
			_, err = Convert(context.Background(), cf, ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources})
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
			continue
		}
		var le *parser.LocationError
		if !errors.As(err, &le) || le.Locations[0][0].Start.Line != tc.line {
			t.Errorf("%q: error %v does not point at line %d", tc.src, err, tc.line)
		}
	}
}

// TestConvertSquash: a squashing COMMIT keeps the squash base's layers and
// marks the entries above them.
func TestConvertSquash(t *testing.T) {
	cf, err := commitfile.Parse([]byte("FROM busybox\nRUN echo one > /one\nCOMMIT rootfs\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Convert(context.Background(), cf, ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources, Squash: &cfllb.Squash{Name: "busybox", State: bkllb.Image("busybox"), Layers: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range res.Image.History {
		got = append(got, fmt.Sprintf("%v %s", h.EmptyLayer, h.Comment))
	}
	want := []string{"false ", "true buildkit.dockerfile.v0", "false squashed 2 layers above busybox into one"}
	if !slices.Equal(got, want) {
		t.Errorf("history %q, want %q", got, want)
	}
}

// TestConvertPlatforms converts one Commitfile for several platforms at
// once, as dockerui's Build does: run with -race, it shows the conversions
// share nothing they write.
func TestConvertPlatforms(t *testing.T) {
	dt, err := os.ReadFile(filepath.Join(testdata, "pipeline.Commitfile"))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := commitfile.Parse(dt)
	if err != nil {
		t.Fatal(err)
	}
	plats := []ocispecs.Platform{amd64, {OS: "linux", Architecture: "arm64"}, {OS: "linux", Architecture: "arm", Variant: "v7"}}
	results := make([]*Result, len(plats))
	errs := make(chan error, len(plats))
	for i := range plats {
		go func() {
			opt := ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources}
			opt.Dockerfile.TargetPlatform = &plats[i]
			var err error
			results[i], err = Convert(context.Background(), cf, opt)
			errs <- err
		}()
	}
	for range plats {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range results {
		if r.Image.Architecture != plats[i].Architecture || r.Image.Variant != plats[i].Variant {
			t.Errorf("platform %d: image for %s/%s", i, r.Image.Architecture, r.Image.Variant)
		}
		var commits int
		for _, h := range r.Image.History {
			if strings.HasPrefix(h.CreatedBy, "COMMIT ") {
				commits++
			}
		}
		if commits != 3 {
			t.Errorf("platform %d: %d COMMIT entries, want 3", i, commits)
		}
	}
	if results[0].Definition.Def[len(results[0].Definition.Def)-1] == nil || bytes.Equal(results[0].Definition.Def[len(results[0].Definition.Def)-1], results[1].Definition.Def[len(results[1].Definition.Def)-1]) {
		t.Error("two platforms gave the same LLB")
	}
}

// TestConvertEmptyOnScratch: committing nothing on scratch is an empty
// image with one empty_layer entry, as the Dockerfile frontend makes of a
// bare FROM scratch.
func TestConvertEmptyOnScratch(t *testing.T) {
	cf, err := commitfile.Parse([]byte("FROM scratch\nCOMMIT empty\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Convert(context.Background(), cf, ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Definition.Def) != 0 {
		t.Errorf("definition of %d ops, want none", len(res.Definition.Def))
	}
	if h := res.Image.History; len(h) != 1 || h[0].CreatedBy != "COMMIT empty" || !h[0].EmptyLayer {
		t.Errorf("history %+v", h)
	}
	cf, err = commitfile.Parse([]byte("FROM scratch\nCOMMIT empty\nRUN true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(context.Background(), cf, ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources}); err == nil || !strings.Contains(err.Error(), "leaves nothing") {
		t.Errorf("a RUN on nothing: %v", err)
	}
}

// TestConvertChangesWithTarget: `change` lines apply to the config of the
// stage built (the target), not to the file's last stage, and add no
// history entry.
func TestConvertChangesWithTarget(t *testing.T) {
	cf, err := commitfile.Parse([]byte("FROM busybox AS a\nCOMMIT rootfs\nFROM a AS b\nRUN echo b\n"))
	if err != nil {
		t.Fatal(err)
	}
	changes, err := commitfile.ParseChanges("LABEL x=y\nUSER nobody")
	if err != nil {
		t.Fatal(err)
	}
	opt := ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources, Changes: changes}
	opt.Dockerfile.Config.Target = "a"
	res, err := Convert(context.Background(), cf, opt)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range res.Image.History[1:] {
		got = append(got, h.CreatedBy)
	}
	want := []string{"COMMIT rootfs"}
	if !slices.Equal(got, want) || res.Image.Config.Labels["x"] != "y" || res.Image.Config.User != "nobody" {
		t.Errorf("history %q (want %q), config %+v", got, want, res.Image.Config)
	}
}

// TestConvertUserRunOfPlaceholderPath: a RUN the user wrote that looks
// like a COMMIT's placeholder — the bare form, or the key of another text —
// stays an ordinary RUN (it runs, and its history entry stays), while the
// file's own COMMIT is spliced.
func TestConvertUserRunOfPlaceholderPath(t *testing.T) {
	other, err := commitfile.Parse([]byte("FROM busybox\nCOMMIT rootfs\n"))
	if err != nil {
		t.Fatal(err)
	}
	guessed := cfllb.Placeholder(other.Key, 0)
	src := "FROM busybox\nRUN [\"/.commit-frontend/COMMIT-0\"]\nRUN [\"" + guessed + "\"]\nCOMMIT rootfs\n"
	cf, err := commitfile.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Convert(context.Background(), cf, ConvertOpt{Dockerfile: dockerfileOpt(t), Source: sources})
	if err != nil {
		t.Fatal(err)
	}
	sum := summary(t, res.Definition, res.Image)
	for _, p := range []string{"/.commit-frontend/COMMIT-0", guessed} {
		if !strings.Contains(sum, p) {
			t.Errorf("the user's RUN %s is gone:\n%s", p, sum)
		}
	}
	var created []string
	for _, h := range res.Image.History {
		created = append(created, h.CreatedBy)
	}
	created = created[max(0, len(created)-3):]
	if len(created) != 3 || !strings.Contains(created[0], "/.commit-frontend/COMMIT-0") || !strings.Contains(created[1], guessed) || created[2] != "COMMIT rootfs" {
		t.Errorf("history %q", created)
	}
}
