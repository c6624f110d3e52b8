package frontend

import (
	"reflect"
	"strings"
	"testing"

	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestOptionsRoundTrip: what a client encodes is what the frontend decodes.
func TestOptionsRoundTrip(t *testing.T) {
	empty := ""
	cfg := &dockerspec.DockerOCIImageConfig{}
	cfg.Env = []string{"A=1"}
	cfg.Cmd = []string{"sh", "-c", "echo hi"}
	for _, o := range []*Options{
		{},
		{Base: "base", Commit: "rootfs", CommitTree: true, Changes: []string{"USER nobody", `CMD ["sh"]`}, Author: "Jane <j@example.com>", Message: "a\nmultiline message",
			CreatedBy: "/bin/sh -c make", SquashSince: "squash-base", SquashSinceName: "busybox:latest", Platform: "linux/arm/v7",
			Contexts:  map[string]string{"base": "oci-layout://store@sha256:0000", "squash-base": "docker-image://busybox"},
			BuildArgs: map[string]string{"SOURCE_DATE_EPOCH": "1000000000"}, Provenance: "mode=max", LayerDiffer: DifferWalking},
		{Filename: "Commitfile.prod", CreatedBy: "step", ImageConfig: cfg},
		{Filename: "Commitfile", Target: "app", NoCache: &empty, NetworkMode: "none", AddHosts: []string{"a:1.2.3.4", "b:::1"},
			Attests: map[string]string{"sbom": "generator=scanner"}, Extra: map[string]string{"image-resolve-mode": "local"}},
		{Base: "b", UnsetEnv: []string{"AWS_*", "TOKEN"}, UnsetLabels: []string{"io.kubernetes.*"}, UnsetVolumes: []string{"/data", "/var/lib/db"}, CommitParts: []string{"rootfs-part-2", "rootfs-part-3"},
			CommitSources: []string{"commit-frontend-layer://a", "", "commit-frontend-tree://c"},
			Annotations:   map[string]string{"org.opencontainers.image.source": "https://example.com/x", "empty": ""}, OmitHistory: true},
	} {
		attrs, err := o.Attrs()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseOptions(attrs)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, o) {
			t.Errorf("round trip:\n got %+v\nwant %+v\nattrs %v", got, o, attrs)
		}
		c := o.Clone()
		if !reflect.DeepEqual(c, o) {
			t.Errorf("clone %+v of %+v", c, o)
		}
		if c.Contexts != nil {
			c.Contexts["x"] = "y"
			if o.Contexts["x"] == "y" {
				t.Error("the clone shares its contexts")
			}
		}
	}
}

// TestOptionsLayerSourceFirst: a source that is the base with the change
// set on it stands for the commit context, never for a part, which is
// applied on the layers before it.
func TestOptionsLayerSourceFirst(t *testing.T) {
	_, err := ParseOptions(map[string]string{KeyCommitParts: "rootfs-part-2", KeyCommitSources: "commit-frontend-tree://a\ncommit-frontend-layer://b"})
	if err == nil || !strings.Contains(err.Error(), "commit-sources, line 2") {
		t.Errorf("a layer source for a part: %v", err)
	}
}

// TestOptionsKeys: the keys are the contract buildctl users type.
func TestOptionsKeys(t *testing.T) {
	attrs, err := (&Options{Base: "b", Commit: "c", Changes: []string{"ENV A=1"}, Author: "a", Message: "m", SquashSince: SquashScratch,
		Contexts: map[string]string{"b": "docker-image://busybox"}, BuildArgs: map[string]string{"X": "1"}}).Attrs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"base": "b", "commit": "c", "change": "ENV A=1", "author": "a", "message": "m", "squash-since": "scratch",
		"context:b": "docker-image://busybox", "build-arg:X": "1"}
	if !reflect.DeepEqual(attrs, want) {
		t.Errorf("attrs %v, want %v", attrs, want)
	}
	if _, err := ParseOptions(map[string]string{"image-config": "{"}); err == nil || !strings.Contains(err.Error(), "image-config") {
		t.Errorf("a bad image-config: %v", err)
	}
	if _, err := ParseOptions(map[string]string{"image-config": "{}", "change": "USER x"}); err == nil {
		t.Error("image-config with change was taken")
	}
}

// TestOptionsSafeToShare: the unset patterns, annotations and omitted
// history as buildctl users spell them, applied to an image; bad input is
// refused naming the option.
func TestOptionsSafeToShare(t *testing.T) {
	o, err := ParseOptions(map[string]string{
		"unset-env": "AWS_*\nTOKEN", "unset-label": "io.kubernetes.*", "omit-history": "1",
		"annotation:org.opencontainers.image.source": "https://example.com/x",
	})
	if err != nil {
		t.Fatal(err)
	}
	img := &dockerspec.DockerOCIImage{}
	img.Config.Env = []string{"PATH=/bin", "AWS_SECRET_ACCESS_KEY=x", "AWS_REGION=eu", "TOKEN=t", "TOKENS=kept"}
	img.Config.Labels = map[string]string{"io.kubernetes.pod.name": "p", "app": "a"}
	img.History = []ocispecs.History{{CreatedBy: "ADD rootfs", Comment: "c"}, {CreatedBy: "ENV X", EmptyLayer: true}, {CreatedBy: "COMMIT", Author: "me"}}
	got, err := o.finishImage(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"PATH=/bin", "TOKENS=kept"}; !reflect.DeepEqual(got.Config.Env, want) {
		t.Errorf("env %q, want %q", got.Config.Env, want)
	}
	if want := map[string]string{"app": "a"}; !reflect.DeepEqual(got.Config.Labels, want) {
		t.Errorf("labels %v, want %v", got.Config.Labels, want)
	}
	if len(got.History) != 2 || got.Created == nil {
		t.Fatalf("history %+v, created %v: want two entries (one per layer) and the image's time", got.History, got.Created)
	}
	for _, h := range got.History {
		if h.CreatedBy != "" || h.Author != "" || h.Comment != "" || h.EmptyLayer || h.Created == nil || !h.Created.Equal(*got.Created) {
			t.Errorf("history %+v: want blank entries at the image's time %v", got.History, got.Created)
		}
	}
	if len(img.Config.Env) != 5 || len(img.History) != 3 {
		t.Error("the input image was changed")
	}
	res := &gwclient.Result{}
	o.annotate(res, false)
	if v := string(res.Metadata["annotation-manifest.org.opencontainers.image.source"]); v != "https://example.com/x" || len(res.Metadata) != 1 {
		t.Errorf("annotations as result metadata: %q", res.Metadata)
	}
	for _, bad := range []struct{ k, v, want string }{
		{"unset-env", "[A-", `option unset-env "[A-": a malformed pattern`},
		{"unset-label", "a\n\nb", "option unset-label: an empty pattern"},
		{"annotation:with space", "v", `option annotation:with space: annotation key "with space"`},
		{"omit-history", "maybe", `option omit-history="maybe": want true or false`},
	} {
		if _, err := ParseOptions(map[string]string{bad.k: bad.v}); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s=%q: %v, want %q", bad.k, bad.v, err, bad.want)
		}
	}
}
