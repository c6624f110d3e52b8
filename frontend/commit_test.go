package frontend

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
)

// testImage reads a base image config from testdata/images.
func testImage(t *testing.T, name string) *dockerspec.DockerOCIImage {
	t.Helper()
	dt, err := os.ReadFile(filepath.Join(testdata, "images", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	img := &dockerspec.DockerOCIImage{}
	if err := json.Unmarshal(dt, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// opTypes lists the kinds of op a state's definition holds.
func opTypes(t *testing.T, st bkllb.State) []string {
	t.Helper()
	def, err := st.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, dt := range def.Def {
		var op pb.Op
		if err := op.UnmarshalVT(dt); err != nil {
			t.Fatal(err)
		}
		switch op.Op.(type) {
		case *pb.Op_Exec:
			kinds = append(kinds, "exec")
		case *pb.Op_File:
			kinds = append(kinds, "file")
		case *pb.Op_Source:
			kinds = append(kinds, "source")
		case *pb.Op_Merge:
			kinds = append(kinds, "merge")
		case *pb.Op_Diff:
			kinds = append(kinds, "diff")
		}
	}
	return kinds
}

// TestConvertCommitConfigOnly: a commit of a container whose image has
// ONBUILD triggers, with --change WORKDIR and ENV, is what docker commit
// makes: one file op (the layer), no RUN, one history entry, the changes in
// the config, the base's triggers neither run nor kept.
func TestConvertCommitConfigOnly(t *testing.T) {
	base := testImage(t, "onbuild")
	changes, err := commitfile.ParseChanges("WORKDIR /home/app\nENV A=1 B=$A\nLABEL l=$A\nONBUILD RUN make")
	if err != nil {
		t.Fatal(err)
	}
	src, err := sources(context.Background(), "rootfs", nil)
	if err != nil {
		t.Fatal(err)
	}
	epoch := time.Unix(1000000000, 0).UTC()
	baseState := bkllb.Image("docker.io/library/onbuild:latest")
	st, img, err := ConvertCommit(baseState, base, CommitOpt{
		Platform: amd64, Source: src, CreatedBy: "sh -c make", Author: "me", Message: "msg",
		Changes: changes, Epoch: &epoch,
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := opTypes(t, st)
	if slices.Contains(kinds, "exec") || strings.Count(strings.Join(kinds, " "), "file") != 1 {
		t.Errorf("ops %q: want one file op and no exec", kinds)
	}
	if len(img.History) != len(base.History)+1 {
		t.Fatalf("history %+v: want the base's and one entry", img.History)
	}
	h := img.History[len(img.History)-1]
	if h.CreatedBy != "sh -c make" || h.Author != "me" || h.Comment != "msg" || h.EmptyLayer || h.Created == nil || !h.Created.Equal(epoch) {
		t.Errorf("entry %+v", h)
	}
	if img.Created == nil || !img.Created.Equal(epoch) || img.Author != "me" {
		t.Errorf("image created %v author %q", img.Created, img.Author)
	}
	c := img.Config
	if c.WorkingDir != "/home/app" || !slices.Contains(c.Env, "A=1") || !slices.Contains(c.Env, "B=") || c.Labels["l"] != "1" {
		t.Errorf("config %+v", c)
	}
	if !slices.Equal(c.OnBuild, []string{"RUN make"}) {
		t.Errorf("OnBuild %q, want the change's alone, as docker commit leaves it", c.OnBuild)
	}
	if base.Config.WorkingDir != "" || len(base.History) != 1 || len(base.Config.OnBuild) != 2 {
		t.Error("the base image was changed")
	}
}

// TestConvertCommitTime: without SOURCE_DATE_EPOCH each commit has its own
// time, set in the config (not left to the exporter, which would take the
// cached layer's).
func TestConvertCommitTime(t *testing.T) {
	src, err := sources(context.Background(), "rootfs", nil)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UTC()
	_, img, err := ConvertCommit(bkllb.Scratch(), nil, CommitOpt{Platform: amd64, Source: src, CreatedBy: "COMMIT rootfs"})
	if err != nil {
		t.Fatal(err)
	}
	h := img.History[len(img.History)-1]
	if h.Created == nil || h.Created.Before(before) || img.Created == nil || !img.Created.Equal(*h.Created) {
		t.Errorf("created %v, entry %v, want now (after %v)", img.Created, h.Created, before)
	}
	if img.OS != "linux" || img.Architecture != "amd64" || img.RootFS.Type != "layers" {
		t.Errorf("scratch image %+v", img)
	}
}

// TestConvertCommitEmpty: an empty change set adds no layer, and its entry
// says so.
func TestConvertCommitEmpty(t *testing.T) {
	src, err := sources(context.Background(), "empty", nil)
	if err != nil {
		t.Fatal(err)
	}
	base := bkllb.Image("docker.io/library/busybox:latest")
	st, img, err := ConvertCommit(base, testImage(t, "busybox"), CommitOpt{Platform: amd64, Source: src, CreatedBy: "COMMIT empty"})
	if err != nil {
		t.Fatal(err)
	}
	if kinds := opTypes(t, st); !slices.Equal(kinds, []string{"source"}) {
		t.Errorf("ops %q: want the base alone", kinds)
	}
	if h := img.History[len(img.History)-1]; !h.EmptyLayer {
		t.Errorf("entry %+v: want empty_layer", h)
	}
}

// TestConvertCommitMetadataOnly: options without a COMMIT but with a
// created_by (a builder's metadata-only step) add one entry that keeps its
// author and comment, and a builder's config replaces the base's.
func TestConvertCommitMetadataOnly(t *testing.T) {
	cfg := &dockerspec.DockerOCIImageConfig{}
	cfg.Env = []string{"STEP=1"}
	epoch := time.Unix(1000000000, 0).UTC()
	_, img, err := ConvertCommit(bkllb.Image("busybox"), testImage(t, "busybox"), CommitOpt{
		Platform: amd64, CreatedBy: "/bin/sh -c #(nop) ENV STEP=1", Author: "builder", Message: "a step",
		ImageConfig: cfg, Epoch: &epoch,
	})
	if err != nil {
		t.Fatal(err)
	}
	h := img.History[len(img.History)-1]
	if h.CreatedBy != "/bin/sh -c #(nop) ENV STEP=1" || h.Author != "builder" || h.Comment != "a step" || !h.EmptyLayer {
		t.Errorf("history entry %+v", h)
	}
	if h.Created == nil || !h.Created.Equal(epoch) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH", h.Created)
	}
	if !slices.Equal(img.Config.Env, cfg.Env) {
		t.Errorf("config %+v", img.Config)
	}
}

// TestConvertCommitSquash: a squashing commit notes what it squashed.
func TestConvertCommitSquash(t *testing.T) {
	src, err := sources(context.Background(), "rootfs", nil)
	if err != nil {
		t.Fatal(err)
	}
	base := testImage(t, "busybox")
	_, img, err := ConvertCommit(bkllb.Image("busybox"), base, CommitOpt{
		Platform: amd64, Source: src, CreatedBy: "COMMIT rootfs", Squash: &cfllb.Squash{Name: SquashScratch},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := img.History[len(img.History)-1]
	if !strings.Contains(h.Comment, "squashed 2 layers above scratch into one") || !img.History[0].EmptyLayer {
		t.Errorf("history %+v", img.History)
	}
}

// TestConvertCommitParts: a change set split into parts is one file op and
// one history entry per part, applied in order, the first entry with the
// author and message and the others naming themselves its parts; a squash
// makes the parts one layer again.
func TestConvertCommitParts(t *testing.T) {
	base := testImage(t, "onbuild")
	var parts []*cfllb.CommitSource
	for range 2 {
		src, err := sources(context.Background(), "rootfs", nil)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, src)
	}
	src, err := sources(context.Background(), "rootfs", nil)
	if err != nil {
		t.Fatal(err)
	}
	st, img, err := ConvertCommit(bkllb.Image("docker.io/library/onbuild:latest"), base, CommitOpt{
		Platform: amd64, Source: src, Parts: parts, CreatedBy: "sh", Author: "me", Message: "msg",
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(opTypes(t, st), " "), "file"); n != 3 {
		t.Errorf("%d file ops, want one per part", n)
	}
	added := img.History[len(base.History):]
	if len(added) != 3 || added[0].Comment != "msg" || added[0].Author != "me" ||
		added[1].Comment != "part 2 of 3 of the layers of the commit above" || added[2].Comment != "part 3 of 3 of the layers of the commit above" ||
		added[1].EmptyLayer || added[2].EmptyLayer || added[1].CreatedBy != "sh" {
		t.Errorf("history of the parts: %+v", added)
	}

	_, img, err = ConvertCommit(bkllb.Image("docker.io/library/onbuild:latest"), base, CommitOpt{
		Platform: amd64, Source: src, Parts: parts, CreatedBy: "sh", Squash: &cfllb.Squash{Name: SquashScratch},
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(img.History) - len(base.History); n != 1 {
		t.Errorf("a squash of parts added %d history entries, want 1", n)
	}
}

// TestConvertCommitLayerSource: a tree written in place on the base is the
// COMMIT's result as it stands, one history entry with a layer; a tree
// alone is merged on the base.
func TestConvertCommitLayerSource(t *testing.T) {
	base := testImage(t, "onbuild")
	for _, tc := range []struct {
		kind cfllb.SourceKind
		want []string
	}{
		{cfllb.Layer, []string{"source"}},
		{cfllb.TreeChangeSet, []string{"source", "source", "merge", "diff", "merge"}},
	} {
		src := &cfllb.CommitSource{Kind: tc.kind, State: bkllb.NewState(bkllb.NewSource(cfllb.LayerSourceScheme+"://x", nil, bkllb.Constraints{}).Output())}
		st, img, err := ConvertCommit(bkllb.Image("docker.io/library/onbuild:latest"), base, CommitOpt{Platform: amd64, Source: src, CreatedBy: "sh"})
		if err != nil {
			t.Fatal(err)
		}
		got := opTypes(t, st)
		slices.Sort(got)
		want := slices.Sorted(slices.Values(tc.want))
		if !slices.Equal(got, want) {
			t.Errorf("kind %d: ops %q, want %q", tc.kind, got, want)
		}
		added := img.History[len(base.History):]
		if len(added) != 1 || added[0].EmptyLayer {
			t.Errorf("kind %d: history %+v", tc.kind, added)
		}
	}
}
