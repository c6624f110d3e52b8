package commit

import (
	"context"
	"github.com/commit-frontend/commit-frontend/engine"
	containerd "github.com/containerd/containerd/v2/client"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	dockerclient "github.com/moby/moby/client"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Client holds the connections every commit, build and builder step goes
// through; what differs from call to call is in the call's options.
type Client struct {
	// Containerd is a client of the containerd holding the containers and
	// the image store, with Namespace as its default namespace.
	Containerd *containerd.Client
	// Namespace is the containerd namespace (for labels and messages).
	Namespace string
	// Buildkit is a client of the buildkitd that computes the layers.
	Buildkit *bkclient.Client
	// BuildkitIsDocker tells that Buildkit is dockerd's own BuildKit
	// (solve.ConnectDocker): images land through its exporter, straight
	// into docker's image store.
	BuildkitIsDocker bool
	// BuildkitInProcess tells that Buildkit is BuildKit's engine in this
	// process (package engine): a gzip layer is then compressed on its way
	// into containerd rather than by BuildKit's own exporter.
	BuildkitInProcess bool
	// Trees, when set, is that engine (package engine): a streamed change
	// set is then written as its tree straight into a snapshot of the
	// engine's, its files hard-linked to the container's, with no session
	// transfer; on the base image's own layers where the engine can read
	// them, so that the tree is the new layer as it stands.
	Trees interface {
		OfferTree(fill engine.Fill, base ocispecs.Descriptor) (ident string, withdraw func())
		// TakeBase has the engine hold the base manifest on containerd's
		// own snapshot of it, for a change set not written in place.
		TakeBase(ctx context.Context, manifest ocispecs.Descriptor) error
	}
	// BuildkitReady, when set, waits until Buildkit serves (an engine
	// still starting in this process, engine.StartBackground) and tells
	// why it cannot. A commit waits for it before its first call to
	// BuildKit, and so before it reads (and pauses) the container: finding
	// the container and preparing the landing overlap the engine's start.
	BuildkitReady func() error
	// Docker is the Engine API of the Docker Engine whose containers are
	// committed with Options.Docker; Containerd is then dockerd's
	// containerd, in its namespace.
	Docker *dockerclient.Client
	// Session holds what the BuildKit session offers besides the change
	// set and the images read: registry credentials (solve.DockerAuth),
	// for a base pulled from a registry or a pushed output.
	Session []session.Attachable
	// Progress is the progress display mode, as buildctl's --progress;
	// "" and "quiet" show nothing.
	Progress string
	// Warnf, when set, is told what the user should know that is not an
	// error: a wait for another commit, a moved tag, a left-out path.
	Warnf func(format string, args ...any)
}

func (c *Client) check() error {
	if c.Containerd == nil || c.Buildkit == nil {
		return errors.New("commit needs a containerd and a buildkitd client")
	}
	return nil
}

func (c *Client) warnf(format string, args ...any) {
	if c.Warnf != nil {
		c.Warnf(format, args...)
	}
}
