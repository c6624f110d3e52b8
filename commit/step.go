package commit

import (
	"context"
	"strings"

	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// StepOptions describe one builder step, the role of moby's
// CommitBuildStep: a parent image, the step container's snapshot and the
// step's container config.
type StepOptions struct {
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
}

// CommitBuildStep commits one builder step as an image whose history is
// the parent's plus one entry for the step.
func (c *Client) CommitBuildStep(ctx context.Context, opt StepOptions) (*Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	name, err := exporter.ImageName(opt.Ref)
	if err != nil {
		return nil, err
	}
	createdBy := strings.Join(opt.CreatedBy, " ")
	if createdBy == "" {
		return nil, errors.New("a build step needs its command (CreatedBy) for the history")
	}
	tg, err := container.FindStep(ctx, c.Containerd, opt.Parent, opt.Snapshotter, opt.Snapshot)
	if err != nil {
		return nil, err
	}
	j := &job{
		Client: c, container: "snapshot " + opt.Snapshot, target: tg, name: name,
		opts: &frontend.Options{Author: opt.Author, Message: opt.Comment, CreatedBy: createdBy, ImageConfig: &opt.Config},
	}
	return j.run(ctx)
}
