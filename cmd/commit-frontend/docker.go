package main

import (
	"os"

	"github.com/docker/cli/cli/config"
	dockercontext "github.com/docker/cli/cli/context/docker"
	"github.com/docker/cli/cli/context/store"
	dockerclient "github.com/moby/moby/client"
	"github.com/pkg/errors"
)

// dockerClient connects to the Docker Engine as the docker CLI would:
// $DOCKER_HOST (with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH), else the
// context $DOCKER_CONTEXT or the config file's current context names, else
// the default socket. Contexts are read with docker's own context store.
func dockerClient() (*dockerclient.Client, error) {
	opts := []dockerclient.Opt{dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation()}
	name := os.Getenv("DOCKER_CONTEXT")
	if name == "" {
		name = config.LoadDefaultConfigFile(os.Stderr).CurrentContext
	}
	if os.Getenv("DOCKER_HOST") == "" && name != "" && name != "default" {
		s := store.New(config.ContextStoreDir(), store.NewConfig(
			func() any { return &map[string]any{} },
			store.EndpointTypeGetter(dockercontext.DockerEndpoint, func() any { return &dockercontext.EndpointMeta{} }),
		))
		md, err := s.GetMetadata(name)
		if err != nil {
			return nil, errors.Wrapf(err, "docker context %q", name)
		}
		meta, err := dockercontext.EndpointFromContext(md)
		if err != nil {
			return nil, errors.Wrapf(err, "docker context %q", name)
		}
		ep, err := dockercontext.WithTLSData(s, name, meta)
		if err != nil {
			return nil, errors.Wrapf(err, "docker context %q", name)
		}
		copts, err := ep.ClientOpts()
		if err != nil {
			return nil, errors.Wrapf(err, "docker context %q", name)
		}
		opts = append(opts, copts...)
	}
	return dockerclient.New(opts...)
}
