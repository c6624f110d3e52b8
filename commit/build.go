package commit

import (
	"context"
	"strings"

	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/session"
	digest "github.com/opencontainers/go-digest"
	"github.com/pkg/errors"
)

// BuildOptions are the inputs of Build.
type BuildOptions struct {
	// Tags name the image (at least one); each gets an image record.
	Tags []string
	// Snapshotter receives the unpacked image; "" is overlayfs.
	Snapshotter string
	// Solve is the build: frontend options, local mounts, session
	// attachables (the Client's are added), cache imports and exports. Its
	// Exports must be empty.
	Solve bkclient.SolveOpt
}

// Build runs the commit frontend on opt.Solve and lands the image in
// containerd's image store under every tag, unpacked, as `nerdctl build -t`
// does: under a lease, the records written last.
func (c *Client) Build(ctx context.Context, opt BuildOptions) (_ *Result, retErr error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if len(opt.Tags) == 0 {
		return nil, errors.New("a build into containerd's image store needs a tag")
	}
	if len(opt.Solve.Exports) > 0 {
		return nil, errors.New("a build into containerd's image store has no other output")
	}
	names := make([]string, 0, len(opt.Tags))
	for _, t := range opt.Tags {
		n, err := exporter.ImageName(t)
		if err != nil {
			return nil, errors.Wrap(err, "--tag")
		}
		names = append(names, n)
	}
	snapshotter := opt.Snapshotter
	if snapshotter == "" {
		snapshotter = container.DefaultSnapshotter
	}
	if _, err := c.Containerd.Version(ctx); err != nil {
		return nil, errors.Wrap(err, "containerd does not answer")
	}
	l, err := exporter.Begin(ctx, c.Containerd, c.Namespace, c.Buildkit)
	if err != nil {
		return nil, err
	}
	defer l.End(&retErr)
	// buildkitd writes the export through the session and reads nothing
	// of the namespace.
	sessionStore, err := l.SessionStore()
	if err != nil {
		return nil, err
	}
	so := opt.Solve
	so.Session = append(append([]session.Attachable{}, c.Session...), so.Session...)
	// Layers are gzipped on their way into containerd when the result is
	// one image manifest that no attestation names.
	fo, err := frontend.ParseOptions(so.FrontendAttrs)
	if err != nil {
		return nil, err
	}
	so.Exports, err = l.Exports(ctx, exporter.ExportOpt{
		Name: names[0], Snapshotter: snapshotter, Docker: c.BuildkitIsDocker, SessionStore: sessionStore,
		OneManifest: !strings.Contains(fo.Platform, ",") && !fo.Attested(),
		GzipFirst:   c.BuildkitInProcess,
	})
	if err != nil {
		return nil, err
	}
	resp, err := solve.Run(ctx, c.Buildkit, so, c.Progress)
	if err != nil {
		return nil, err
	}
	res := &Result{ExporterResponse: resp.ExporterResponse, ImageID: digest.Digest(resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey])}
	landed, err := l.Land(resp.ExporterResponse, names, snapshotter)
	if err != nil {
		return nil, err
	}
	res.land(landed)
	return res, nil
}
