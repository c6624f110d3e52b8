package commit

import (
	"context"

	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	dockercontainer "github.com/moby/moby/api/types/container"
	dockerclient "github.com/moby/moby/client"
	digest "github.com/opencontainers/go-digest"
	"github.com/pkg/errors"
)

// DockerStep is what moby's classic builder hands its backend's
// CommitBuildStep for one step (moby's backend.CommitConfig).
type DockerStep struct {
	// Author and Comment go into the history entry.
	Author, Comment string
	// Config is the image config after the step.
	Config *dockercontainer.Config
	// ContainerConfig is the step container's config; its Cmd is the
	// step's created_by: ["/bin/sh", "-c", "make"] for a RUN, ["/bin/sh",
	// "-c", "#(nop) ", "LABEL a=b"] for a metadata-only step.
	ContainerConfig *dockercontainer.Config
	// ContainerID is the step container; empty for a metadata-only step,
	// which adds a history entry and no layer.
	ContainerID string
	// ParentImageID is the parent image's docker ID; empty for scratch.
	ParentImageID string
}

// DockerBuilder commits classic-builder steps into a Docker Engine's
// containerd image store, in the role of moby's CommitBuildStep: each step
// becomes the image docker's own builder would make of it.
type DockerBuilder struct {
	// Client needs Docker (the Engine whose containers the steps run in)
	// and Containerd (dockerd's containerd, in its Namespace). Without
	// Buildkit, dockerd's own BuildKit computes the layers and its
	// exporter lands each image.
	Client
}

// CommitBuildStep commits one step and returns docker's ID of the new
// image (its manifest digest), an untagged image as the classic builder
// leaves its intermediate images.
func (b *DockerBuilder) CommitBuildStep(ctx context.Context, s DockerStep) (digest.Digest, error) {
	if b.Docker == nil {
		return "", errors.New("a docker builder step needs the Docker Engine's client")
	}
	c := b.Client
	if c.Buildkit == nil {
		bk, err := solve.ConnectDocker(ctx, b.Docker)
		if err != nil {
			return "", errors.Wrap(err, "dockerd's BuildKit")
		}
		defer bk.Close()
		c.Buildkit, c.BuildkitIsDocker = bk, true
	}
	opt := StepOptions{Author: s.Author, Comment: s.Comment}
	if s.ContainerConfig != nil {
		opt.CreatedBy = s.ContainerConfig.Cmd
	}
	cfg, err := container.DockerCommitConfig(s.Config, nil)
	if err != nil {
		return "", err
	}
	opt.Config = *cfg
	if s.ParentImageID != "" {
		imgs, err := c.Containerd.ImageService().List(ctx, "target.digest=="+s.ParentImageID)
		if err != nil {
			return "", errors.Wrapf(err, "parent image %s", s.ParentImageID)
		}
		if len(imgs) == 0 {
			return "", errors.Errorf("parent image %s is not in containerd's namespace %s", s.ParentImageID, c.Namespace)
		}
		opt.Parent = imgs[0].Name
	}
	if s.ContainerID != "" {
		info, err := b.Docker.Info(ctx, dockerclient.InfoOptions{})
		if err != nil {
			return "", errors.Wrap(err, "docker info")
		}
		opt.Snapshotter, opt.Snapshot = info.Info.Driver, s.ContainerID
	}
	res, err := c.CommitBuildStep(ctx, opt)
	if err != nil {
		return "", err
	}
	return res.Manifest.Digest, nil
}
