package commit

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/exporter"
	bkclient "github.com/moby/buildkit/client"
)

// TestOptionsCheck: bad options are refused, naming the option, before any
// daemon is asked anything.
func TestOptionsCheck(t *testing.T) {
	big := 100
	epoch := time.Unix(1, 0)
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"blank container", Options{Container: " "}, "the container name is empty"},
		{"change", Options{Container: "c", Changes: []string{"RUN true"}}, "RUN is not supported by --change"},
		{"change with newline", Options{Container: "c", Changes: []string{"ENV A=1\nUSER root"}}, "--change 1"},
		{"compression", Options{Container: "c", Layer: exporter.Layer{Compression: "lz4"}}, "lz4"},
		{"level", Options{Container: "c", Layer: exporter.Layer{Compression: "gzip", Level: &big}}, "100"},
		{"exclude everything", Options{Container: "c", Exclude: []string{"/"}}, "/"},
		{"rewrite without epoch", Options{Container: "c", Layer: exporter.Layer{RewriteTimestamp: true}}, "--rewrite-timestamp needs --source-date-epoch"},
		{"both squashes", Options{Container: "c", Squash: true, SquashSince: "img"}, "--squash and --squash-since exclude each other"},
		{"provenance", Options{Container: "c", Provenance: "mode=all"}, "--provenance=mode=all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.opt.check()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%v, want an error with %q", err, tc.want)
			}
		})
	}
	good := Options{Container: "c", Changes: []string{"ENV A=1"}, Exclude: []string{"/root/.ssh"}, Provenance: "mode=max",
		Layer: exporter.Layer{RewriteTimestamp: true}, SourceDateEpoch: &epoch}
	if err := good.check(); err != nil {
		t.Errorf("good options: %v", err)
	}
}

// TestClientCheck: a call without the connections it needs says so.
func TestClientCheck(t *testing.T) {
	ctx := context.Background()
	var c Client
	if _, err := c.Commit(ctx, Options{Container: "c"}); err == nil || !strings.Contains(err.Error(), "needs a containerd and a buildkitd client") {
		t.Errorf("Commit: %v", err)
	}
	if _, err := c.Build(ctx, BuildOptions{Tags: []string{"a"}}); err == nil || !strings.Contains(err.Error(), "needs a containerd and a buildkitd client") {
		t.Errorf("Build: %v", err)
	}
	if _, err := (&DockerBuilder{}).CommitBuildStep(ctx, DockerStep{}); err == nil || !strings.Contains(err.Error(), "Docker Engine's client") {
		t.Errorf("DockerBuilder: %v", err)
	}
	c.Buildkit = &bkclient.Client{}
	c.Warnf = nil
	c.warnf("nobody listens: %d", 1) // must not panic
}

// TestUseTree: a streamed change set crosses as its tree only when its
// files are large enough on average, or when COMMIT_FRONTEND_TRANSFER says.
func TestUseTree(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, p := changeset.Stream(nil)
	defer w.Abort()
	if err := changeset.FromUpperdir(context.Background(), dir, changeset.UpperOpt{}, w); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	small := &changeset.Manifest{Entries: 10, Bytes: 10 * 512}
	large := &changeset.Manifest{Entries: 4, Bytes: 4 << 20}
	if useTree(p, small) {
		t.Error("10 files of 512 bytes go as a tree")
	}
	if !useTree(p, large) {
		t.Error("4 files of 1 MiB go as a tar")
	}
	t.Setenv(transferEnv, "tree")
	if !useTree(p, small) {
		t.Errorf("%s=tree: small files go as a tar", transferEnv)
	}
	t.Setenv(transferEnv, "tar")
	if useTree(p, large) {
		t.Errorf("%s=tar: large files go as a tree", transferEnv)
	}
}
