package testenv

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/containerd/platforms"
	"github.com/moby/buildkit/client"
	bkllb "github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil"
)

// BusyboxPath is Debian's static busybox (package busybox-static).
const BusyboxPath = "/bin/busybox"

// BaseImage is a base image made offline from Debian's busybox-static.
type BaseImage struct {
	// Ref is its name in the registry, when it was pushed.
	Ref string
	// Layout is an OCI layout directory holding it, tagged "latest".
	Layout string
	// Tar is an OCI archive of it, for `ctr images import`.
	Tar string
}

// BusyboxRootfs writes a minimal root filesystem into dir: /bin/busybox, a
// link for every applet, /etc/passwd and /etc/group, /tmp.
func BusyboxRootfs(dir string) error {
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return errors.Wrapf(err, "%s --list-full (install busybox-static)", BusyboxPath)
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	dt, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), dt, 0o755); err != nil {
		return err
	}
	for _, l := range strings.Fields(string(out)) {
		if l == "bin/busybox" {
			continue
		}
		p := filepath.Join(dir, l)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.Symlink("/bin/busybox", p); err != nil && !os.IsExist(err) {
			return err
		}
	}
	for _, d := range []string{"etc", "tmp", "root", "home"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
		"etc/group":  "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n",
	}
	for p, c := range files {
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// BuildBusybox builds the busybox base image with buildkitd and exports it
// as an OCI layout in dir, an OCI archive, and (when registry is not empty)
// pushes it to registry as busybox:latest.
func BuildBusybox(ctx context.Context, c *client.Client, dir, registry string) (*BaseImage, error) {
	rootfs := filepath.Join(dir, "busybox-rootfs")
	if err := BusyboxRootfs(rootfs); err != nil {
		return nil, err
	}
	fs, err := fsutil.NewFS(rootfs)
	if err != nil {
		return nil, err
	}
	img := &BaseImage{Layout: filepath.Join(dir, "busybox-oci"), Tar: filepath.Join(dir, "busybox-oci.tar")}
	tarFile, err := os.Create(img.Tar)
	if err != nil {
		return nil, err
	}
	defer tarFile.Close()
	exports := []client.ExportEntry{
		{Type: client.ExporterOCI, OutputDir: img.Layout, Attrs: map[string]string{exporter.OCIExporterTar: "false", name: "busybox:latest"}},
		{Type: client.ExporterOCI, Output: fixedWriter(tarFile), Attrs: map[string]string{name: "docker.io/library/busybox:latest"}},
	}
	if registry != "" {
		img.Ref = registry + "/busybox:latest"
		exports = append(exports, client.ExportEntry{Type: client.ExporterImage, Attrs: map[string]string{
			name: img.Ref, string(exptypes.OptKeyPush): "true", string(exptypes.OptKeyInsecure): "true",
		}})
	}
	build := rootfsBuild("busybox-static from Debian, made offline")
	_, err = c.Build(ctx, client.SolveOpt{
		Exports:     exports,
		LocalMounts: map[string]fsutil.FS{"rootfs": fs},
	}, "", build, nil)
	if err != nil {
		return nil, errors.Wrap(err, "building the busybox base image")
	}
	return img, nil
}

// name is the image exporters' name attribute.
var name = string(exptypes.OptKeyName)

// fixedWriter returns an exporter output func that writes to f.
func fixedWriter(f *os.File) func(map[string]string) (io.WriteCloser, error) {
	return func(map[string]string) (io.WriteCloser, error) { return f, nil }
}

// BuildRootfsImage builds an image whose one layer is the directory rootfs
// and writes it as an OCI archive to tarPath, with the layer compressed as
// compression says (gzip, zstd, uncompressed).
func BuildRootfsImage(ctx context.Context, c *client.Client, rootfs, tarPath, compression string) error {
	fs, err := fsutil.NewFS(rootfs)
	if err != nil {
		return err
	}
	f, err := os.Create(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = c.Build(ctx, client.SolveOpt{
		Exports: []client.ExportEntry{{Type: client.ExporterOCI, Output: fixedWriter(f), Attrs: map[string]string{
			name: "docker.io/library/rootfs:latest", string(exptypes.OptKeyLayerCompression): compression, string(exptypes.OptKeyForceCompression): "true",
		}}},
		LocalMounts: map[string]fsutil.FS{"rootfs": fs},
	}, "", rootfsBuild("rootfs made offline"), nil)
	return errors.Wrapf(err, "building an image of %s", rootfs)
}

// rootfsBuild is a build function whose image is the local context "rootfs"
// as one layer, with a minimal shell config and one history entry.
func rootfsBuild(createdBy string) gwclient.BuildFunc {
	return func(ctx context.Context, gc gwclient.Client) (*gwclient.Result, error) {
		p := platforms.DefaultSpec()
		st := bkllb.Scratch().File(bkllb.Copy(bkllb.Local("rootfs"), "/", "/", &bkllb.CopyInfo{CopyDirContentsOnly: true}))
		def, err := st.Marshal(ctx, bkllb.Platform(p))
		if err != nil {
			return nil, err
		}
		res, err := gc.Solve(ctx, gwclient.SolveRequest{Definition: def.ToPB()})
		if err != nil {
			return nil, err
		}
		var cfg dockerspec.DockerOCIImage
		cfg.Architecture, cfg.OS, cfg.Variant = runtime.GOARCH, "linux", p.Variant
		cfg.RootFS.Type = "layers"
		cfg.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		cfg.Config.Cmd = []string{"sh"}
		cfg.History = []ocispecs.History{{CreatedBy: createdBy, Comment: "testenv"}}
		dt, err := json.Marshal(cfg)
		if err != nil {
			return nil, err
		}
		res.AddMeta(exptypes.ExporterImageConfigKey, dt)
		return res, nil
	}
}
