package commit

import (
	"context"
	"strings"

	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	digest "github.com/opencontainers/go-digest"
	"github.com/pkg/errors"
)

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	// Containerd is the containerd the image lands in, its client's
	// default namespace set to Namespace.
	Containerd *containerd.Client
	// Namespace is the containerd namespace.
	Namespace string
	// Buildkit is the buildkitd that runs the build.
	Buildkit *bkclient.Client
	// Tags name the image (at least one); each gets an image record.
	Tags []string
	// Snapshotter receives the unpacked image; "" is overlayfs.
	Snapshotter string
	// Solve is the build: frontend options, local mounts, session
	// attachables, cache imports and exports. Its Exports must be empty.
	Solve bkclient.SolveOpt
	// Progress is the progress mode, as for buildctl.
	Progress string
}

// Build runs the commit frontend on opt.Solve and lands the image in
// containerd's image store under every tag, unpacked, as `nerdctl build -t`
// does: under a lease, the record written last.
func Build(ctx context.Context, opt BuildOptions) (_ *Result, retErr error) {
	if len(opt.Tags) == 0 {
		return nil, errors.New("a build into containerd's image store needs a tag")
	}
	if len(opt.Solve.Exports) > 0 {
		return nil, errors.New("a build into containerd's image store has no other output")
	}
	names := make([]string, 0, len(opt.Tags))
	for _, t := range opt.Tags {
		n, err := imageName(t)
		if err != nil {
			return nil, errors.Wrap(err, "--tag")
		}
		names = append(names, n)
	}
	snapshotter := opt.Snapshotter
	if snapshotter == "" {
		snapshotter = "overlayfs"
	}
	cc := opt.Containerd
	if _, err := cc.Version(ctx); err != nil {
		return nil, errors.Wrap(err, "containerd does not answer")
	}
	l, err := newLanding(ctx, cc, opt.Namespace, opt.Buildkit)
	if err != nil {
		return nil, err
	}
	defer l.release(&retErr)
	// buildkitd writes the export through the session and reads nothing
	// of the namespace.
	sessionStore, err := exporter.Confine(l.ctx, l.store)
	if err != nil {
		return nil, err
	}
	so := opt.Solve
	var direct bool
	// Layers are gzipped on their way into containerd when the result is
	// one image manifest that no attestation names.
	fo, err := frontend.ParseOptions(so.FrontendAttrs)
	if err != nil {
		return nil, err
	}
	gzipLayers := !strings.Contains(fo.Platform, ",") && !fo.Attested()
	if so.Exports, direct, err = l.exports(ctx, exportOpt{name: names[0], snapshotter: snapshotter, sessionStore: sessionStore, gzipLayers: gzipLayers}); err != nil {
		return nil, err
	}
	resp, err := solve.Run(ctx, opt.Buildkit, so, opt.Progress)
	if err != nil {
		return nil, err
	}
	res := &Result{ExporterResponse: resp.ExporterResponse, ImageID: digest.Digest(resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey])}
	if err := l.land(resp.ExporterResponse, direct, names[0], snapshotter, res); err != nil {
		return nil, err
	}
	is := cc.ImageService()
	for _, n := range names[1:] {
		img := images.Image{Name: n, Target: res.Manifest}
		if _, err := is.Create(l.ctx, img); err != nil {
			if !errdefs.IsAlreadyExists(err) {
				return nil, errors.Wrapf(err, "creating image %s", n)
			}
			if _, err := is.Update(l.ctx, img, "target"); err != nil {
				return nil, errors.Wrapf(err, "updating image %s", n)
			}
		}
	}
	return res, nil
}
