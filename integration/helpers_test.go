package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

// result is what a command printed and how it ended.
type result struct {
	stdout, stderr string
	err            error
}

// run runs a binary with the test environment's addresses set.
func run(t *testing.T, dir string, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"BUILDKIT_HOST="+env.bk.Addr,
		"CONTAINERD_ADDRESS="+env.ctrd.Addr,
		"BUILDX_CONFIG="+env.buildxCfg,
		"PATH="+env.bkBinDir+":"+os.Getenv("PATH"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// cf runs the commit-frontend CLI and fails the test if it fails.
func cf(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := run(t, dir, env.cli, args...)
	if r.err != nil {
		t.Fatalf("commit-frontend %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.err, r.stdout, r.stderr)
	}
	return r
}

// cfFail runs the commit-frontend CLI and fails the test if it succeeds.
func cfFail(t *testing.T, dir string, args ...string) result {
	t.Helper()
	r := run(t, dir, env.cli, args...)
	if r.err == nil {
		t.Fatalf("commit-frontend %s succeeded, want an error\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.stdout, r.stderr)
	}
	return r
}

// tool returns the path of a daemon or tool binary built by install-deps.
func tool(name string) string { return filepath.Join(env.bkBinDir, name) }

// writeFiles writes files (path → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ociImage is an image read back from an OCI archive.
type ociImage struct {
	Manifest ocispecs.Manifest
	Config   dockerspec.DockerOCIImage
	ConfigID string
	// Layers are the uncompressed layer tars, in order.
	Layers [][]byte
}

// readOCITar reads the single image of an OCI archive written by an exporter.
func readOCITar(t *testing.T, path string) *ociImage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		dt, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		blobs[h.Name] = dt
	}
	var idx ocispecs.Index
	mustJSON(t, blobs["index.json"], &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(idx.Manifests))
	}
	blob := func(d string) []byte {
		dt, ok := blobs["blobs/"+strings.Replace(d, ":", "/", 1)]
		if !ok {
			t.Fatalf("blob %s missing from %s", d, path)
		}
		return dt
	}
	img := &ociImage{}
	mustJSON(t, blob(idx.Manifests[0].Digest.String()), &img.Manifest)
	img.ConfigID = img.Manifest.Config.Digest.String()
	mustJSON(t, blob(img.ConfigID), &img.Config)
	for _, l := range img.Manifest.Layers {
		img.Layers = append(img.Layers, decompress(t, blob(l.Digest.String()), l.MediaType))
	}
	return img
}

func decompress(t *testing.T, dt []byte, mediaType string) []byte {
	t.Helper()
	if !strings.Contains(mediaType, "gzip") {
		return dt
	}
	zr, err := gzip.NewReader(bytes.NewReader(dt))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustJSON(t *testing.T, dt []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(dt, v); err != nil {
		t.Fatalf("%v: %s", err, dt)
	}
}

// layerEntry is one entry of a layer tar.
type layerEntry struct {
	Header *tar.Header
	Data   []byte
}

// layerEntries reads a layer tar into a map by path (without leading "./" or "/").
func layerEntries(t *testing.T, layer []byte) map[string]layerEntry {
	t.Helper()
	out := map[string]layerEntry{}
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		dt, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/"), "/")
		out[name] = layerEntry{Header: h, Data: dt}
	}
}

// nonEmptyHistory returns the history entries that have a layer.
func nonEmptyHistory(img *dockerspec.DockerOCIImage) []ocispecs.History {
	var out []ocispecs.History
	for _, h := range img.History {
		if !h.EmptyLayer {
			out = append(out, h)
		}
	}
	return out
}

// baseImage reads the busybox base image.
func baseImage(t *testing.T) *ociImage {
	t.Helper()
	return readOCITar(t, env.base.Tar)
}
