# Pinned versions of the real components the tests and the demo run against.
BUILDKIT_VERSION=v0.34.2
CONTAINERD_VERSION=v2.4.2
REGISTRY_VERSION=v3.1.2
BUILDX_VERSION=v0.38.2
MOBY_VERSION=v28.5.2+incompatible
DOCKER_CLI_VERSION=v28.5.2+incompatible
NERDCTL_VERSION=v2.2.0
