package container

import (
	"context"
	"path"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	dockercontainer "github.com/moby/moby/api/types/container"
	dockerclient "github.com/moby/moby/client"
	"github.com/pkg/errors"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
)

// DockerNamespace is the containerd namespace of Docker Engine's images,
// containers and snapshots.
const DockerNamespace = "moby"

// DockerContainerd is where a Docker Engine keeps its containers and
// images in containerd.
type DockerContainerd struct {
	// Address is the containerd socket dockerd uses.
	Address string
	// Namespace is dockerd's containerd namespace (DockerNamespace unless
	// dockerd was told otherwise).
	Namespace string
	// Snapshotter is the containerd snapshotter of docker's images and
	// containers.
	Snapshotter string
}

// CheckDockerStore fails unless dockerd keeps its images in containerd (the
// containerd image store), which is what a commit lands in, and tells
// which containerd and namespace it uses.
func CheckDockerStore(ctx context.Context, dc *dockerclient.Client) (DockerContainerd, error) {
	info, err := dc.Info(ctx, dockerclient.InfoOptions{})
	if err != nil {
		return DockerContainerd{}, errors.Wrapf(err, "asking docker at %s for its storage", dc.DaemonHost())
	}
	dcd := DockerContainerd{Namespace: DockerNamespace}
	if c := info.Info.Containerd; c != nil {
		dcd.Address = c.Address
		if c.Namespaces.Containers != "" {
			dcd.Namespace = c.Namespaces.Containers
		}
	}
	for _, kv := range info.Info.DriverStatus {
		if kv[0] == "driver-type" && kv[1] == "io.containerd.snapshotter.v1" {
			dcd.Snapshotter = info.Info.Driver
			return dcd, nil
		}
	}
	return dcd, errors.Errorf(`docker at %s keeps its images with the %q storage driver, not in containerd: turn on the containerd image store (in /etc/docker/daemon.json: {"features": {"containerd-snapshotter": true}}, then restart dockerd; Docker Desktop: Settings, General, "Use containerd for pulling and storing images")`, dc.DaemonHost(), info.Info.Driver)
}

// dockerPauser pauses a container through docker, so that docker's own
// view (docker ps) stays right.
type dockerPauser struct {
	dc *dockerclient.Client
	// cc is dockerd's containerd, in its namespace: its task lists the
	// container's processes.
	cc *containerd.Client
	id string
}

func (p *dockerPauser) State(ctx context.Context) (containerd.ProcessStatus, error) {
	r, err := p.dc.ContainerInspect(ctx, p.id, dockerclient.ContainerInspectOptions{})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return containerd.Stopped, nil
		}
		return "", err
	}
	switch st := r.Container.State; {
	case st == nil:
		return containerd.Unknown, nil
	case st.Paused:
		return containerd.Paused, nil
	case st.Running:
		return containerd.Running, nil
	}
	return containerd.Stopped, nil
}

func (p *dockerPauser) Pause(ctx context.Context) error {
	_, err := p.dc.ContainerPause(ctx, p.id, dockerclient.ContainerPauseOptions{})
	return err
}

func (p *dockerPauser) Pids(ctx context.Context) ([]int, error) {
	c, err := p.cc.LoadContainer(ctx, p.id)
	if err != nil {
		return nil, errors.Wrapf(err, "docker container %s in containerd", p.id)
	}
	t, err := c.Task(ctx, nil)
	if err != nil {
		return nil, errors.Wrapf(err, "docker container %s in containerd", p.id)
	}
	return taskPids(ctx, t)
}

func (p *dockerPauser) Resume(ctx context.Context) error {
	_, err := p.dc.ContainerUnpause(ctx, p.id, dockerclient.ContainerUnpauseOptions{})
	return err
}

// FindDocker finds a docker container by name, ID or unique ID prefix:
// its snapshot (keyed by its ID; docker's init layer below it stays out of
// the commit), its image in containerd, and the image config docker commit
// would write (the container's config with the changes applied).
func FindDocker(ctx context.Context, dc *dockerclient.Client, cc *containerd.Client, id, snapshotter string, changes []string) (*Target, *dockerspec.DockerOCIImageConfig, error) {
	r, err := dc.ContainerInspect(ctx, id, dockerclient.ContainerInspectOptions{})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, nil, errors.Errorf("no such docker container: %s (docker at %s)", id, dc.DaemonHost())
		}
		return nil, nil, errors.Wrapf(err, "docker container %s", id)
	}
	ct := r.Container
	info, err := dc.Info(ctx, dockerclient.InfoOptions{})
	if err != nil {
		return nil, nil, errors.Wrap(err, "docker info")
	}
	tg := &Target{Snapshotter: info.Info.Driver, Snapshot: ct.ID, Pauser: &dockerPauser{dc: dc, cc: cc, id: ct.ID}}
	if snapshotter != "" {
		tg.Snapshotter = snapshotter
	}
	if ct.Config != nil {
		tg.CreatedBy = strings.Join(ct.Config.Cmd, " ")
	}
	for _, m := range ct.Mounts {
		if (m.Type == "volume" || m.Type == "bind") && m.Source != "" {
			tg.Mounts = append(tg.Mounts, Mount{Destination: path.Clean(m.Destination), Source: m.Source, Volume: m.Type == "volume"})
		}
	}
	imgs, err := cc.ImageService().List(ctx, "target.digest=="+ct.Image)
	if err != nil {
		return nil, nil, errors.Wrapf(err, "finding image %s of container %s", ct.Image, id)
	}
	chain, err := parentChain(ctx, cc, tg.Snapshotter, tg.Snapshot)
	if err != nil {
		return nil, nil, errors.Wrapf(err, "docker container %s", id)
	}
	b, _, err := findBase(ctx, cc, chain, imgs, "docker container "+id)
	if err != nil {
		return nil, nil, err
	}
	tg.Image, tg.Manifest, tg.Platform = b.image, b.manifest, b.platform
	cfg, err := DockerCommitConfig(ct.Config, changes)
	if err != nil {
		return nil, nil, err
	}
	return tg, cfg, nil
}

// DockerCommitConfig is the image config docker commit writes: the
// container's config converted as moby's containerd image store converts
// it, with the changes applied by docker's rules.
func DockerCommitConfig(c *dockercontainer.Config, changes []string) (*dockerspec.DockerOCIImageConfig, error) {
	img := &dockerspec.DockerOCIImage{}
	if c != nil {
		cfg := &img.Config
		cfg.User, cfg.Env, cfg.Entrypoint, cfg.Cmd = c.User, c.Env, c.Entrypoint, c.Cmd
		cfg.Volumes, cfg.WorkingDir, cfg.Labels, cfg.StopSignal = c.Volumes, c.WorkingDir, c.Labels, c.StopSignal
		cfg.ArgsEscaped = c.ArgsEscaped //nolint:staticcheck // docker keeps it in the image
		if len(c.ExposedPorts) > 0 {
			cfg.ExposedPorts = map[string]struct{}{}
			for p := range c.ExposedPorts {
				cfg.ExposedPorts[p.String()] = struct{}{}
			}
		}
		if h := c.Healthcheck; h != nil {
			cfg.Healthcheck = &dockerspec.HealthcheckConfig{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, StartInterval: h.StartInterval, Retries: h.Retries}
		}
		cfg.OnBuild, cfg.Shell = c.OnBuild, c.Shell
	}
	cmds, err := commitfile.ParseChangeFlags(changes)
	if err != nil {
		return nil, err
	}
	out, err := imageconfig.Change(img, cmds)
	if err != nil {
		return nil, errors.Wrap(err, "--change")
	}
	return &out.Config, nil
}
