package commit

import (
	"context"

	containerd "github.com/containerd/containerd/v2/client"
	bkclient "github.com/moby/buildkit/client"
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
	// Docker is the Engine API of the docker whose containers the steps run in.
	Docker *dockerclient.Client
	// Containerd is a client of dockerd's containerd, in its namespace.
	Containerd *containerd.Client
	// Namespace is dockerd's containerd namespace.
	Namespace string
	// Buildkit, when set, is the buildkitd that computes the layers; nil
	// for dockerd's own, whose exporter then lands each image.
	Buildkit *bkclient.Client
}

// CommitBuildStep commits one step and returns docker's ID of the new
// image (its manifest digest), an untagged image as the classic builder
// leaves its intermediate images.
func (b *DockerBuilder) CommitBuildStep(ctx context.Context, s DockerStep) (digest.Digest, error) {
	opt := StepOptions{
		Containerd: b.Containerd, Namespace: b.Namespace, Buildkit: b.Buildkit,
		Author: s.Author, Comment: s.Comment,
	}
	if opt.Buildkit == nil {
		bk, err := DockerBuildkit(ctx, b.Docker)
		if err != nil {
			return "", errors.Wrap(err, "dockerd's BuildKit")
		}
		defer bk.Close()
		opt.Buildkit, opt.DockerExport = bk, true
	}
	if s.ContainerConfig != nil {
		opt.CreatedBy = s.ContainerConfig.Cmd
	}
	cfg, err := dockerCommitConfig(s.Config, nil)
	if err != nil {
		return "", err
	}
	opt.Config = *cfg
	if s.ParentImageID != "" {
		imgs, err := b.Containerd.ImageService().List(ctx, "target.digest=="+s.ParentImageID)
		if err != nil {
			return "", errors.Wrapf(err, "parent image %s", s.ParentImageID)
		}
		if len(imgs) == 0 {
			return "", errors.Errorf("parent image %s is not in containerd's namespace %s", s.ParentImageID, b.Namespace)
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
	res, err := CommitBuildStep(ctx, opt)
	if err != nil {
		return "", err
	}
	return res.Manifest.Digest, nil
}
