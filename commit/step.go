package commit

import (
	"context"
	"strings"

	"github.com/commit-frontend/commit-frontend/frontend"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/platforms"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// StepOptions describe one builder step, the role of moby's
// CommitBuildStep: a parent image, the step container's snapshot and the
// step's container config.
type StepOptions struct {
	// Containerd is a client of the containerd holding the snapshot, with
	// Namespace as its default namespace.
	Containerd *containerd.Client
	// Namespace is the containerd namespace.
	Namespace string
	// Buildkit is a client of the buildkitd that computes the layer.
	Buildkit *bkclient.Client

	// Parent is the parent image's name in the image store; empty for scratch.
	Parent string
	// Snapshotter and Snapshot hold the step container's filesystem. An
	// empty Snapshot is a metadata-only step: a history entry, no layer.
	Snapshotter, Snapshot string
	// Config is the step's container config; it becomes the image config.
	Config dockerspec.DockerOCIImageConfig
	// CreatedBy is the step's command (the container config's Cmd). The
	// history entry's created_by joins it with spaces, as moby's classic
	// builder does: ["/bin/sh", "-c", "#(nop) ", "CMD [\"sh\"]"] for a
	// metadata-only step, ["/bin/sh", "-c", "make"] for a RUN step.
	CreatedBy []string
	// Author and Comment go into the history entry.
	Author, Comment string
	// Ref names the image record; empty for a dangling image.
	Ref string
	// Progress is the progress display mode; "quiet" shows nothing.
	Progress string
	// Session holds what the session offers besides the snapshot and the
	// parent: registry credentials (solve.DockerAuth).
	Session []session.Attachable
	// DockerExport tells that Buildkit is dockerd's own BuildKit: the image
	// lands through its exporter, straight into docker's image store.
	DockerExport bool
}

// CommitBuildStep commits one builder step as an image whose history is
// the parent's plus one entry for the step.
func CommitBuildStep(ctx context.Context, opt StepOptions) (*Result, error) {
	if opt.Containerd == nil || opt.Buildkit == nil {
		return nil, errors.New("commit needs a containerd and a buildkitd client")
	}
	name, err := imageName(opt.Ref)
	if err != nil {
		return nil, err
	}
	tg := &target{snapshotter: opt.Snapshotter, snapshot: opt.Snapshot, platform: platforms.Normalize(platforms.DefaultSpec())}
	if tg.snapshotter == "" {
		tg.snapshotter = "overlayfs"
	}
	// The parent is checked against the layers the step's snapshot
	// stands on, as a commit's base is; a step without a snapshot is on
	// the parent as named.
	var hints []images.Image
	if opt.Parent != "" {
		img, err := opt.Containerd.ImageService().Get(ctx, opt.Parent)
		if err != nil {
			return nil, errors.Wrapf(err, "parent image %s", opt.Parent)
		}
		hints = append(hints, img)
	}
	switch {
	case tg.snapshot != "":
		chain, err := parentChain(ctx, opt.Containerd, tg.snapshotter, tg.snapshot)
		if err != nil {
			return nil, err
		}
		if chain != "" || opt.Parent != "" {
			b, _, err := findBase(ctx, opt.Containerd, chain, hints, "step snapshot "+tg.snapshot)
			if err != nil {
				return nil, err
			}
			tg.image, tg.manifest, tg.platform = b.image, b.manifest, b.platform
		}
	case opt.Parent != "":
		if tg.manifest, tg.platform, err = platformManifest(ctx, opt.Containerd, hints[0].Target); err != nil {
			return nil, errors.Wrapf(err, "parent image %s", opt.Parent)
		}
	}
	createdBy := strings.Join(opt.CreatedBy, " ")
	if createdBy == "" {
		return nil, errors.New("a build step needs its command (CreatedBy) for the history")
	}
	j := &job{
		cc: opt.Containerd, ns: opt.Namespace, bk: opt.Buildkit,
		container: "snapshot " + opt.Snapshot, target: tg, name: name,
		opts:     &frontend.Options{Author: opt.Author, Message: opt.Comment, CreatedBy: createdBy, ImageConfig: &opt.Config},
		progress: opt.Progress, dockerExport: opt.DockerExport, session: opt.Session,
	}
	return j.run(ctx)
}
