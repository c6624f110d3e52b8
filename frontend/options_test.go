package frontend

import (
	"reflect"
	"strings"
	"testing"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
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
