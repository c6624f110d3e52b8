#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine:
# Debian packages (runc, busybox-static, rootlesskit, slirp4netns, uidmap) and the daemons built from pinned Go
# modules (buildkitd, buildctl, containerd, ctr, the runc shim, a registry, buildx, dockerd, and the docker CLI where the machine has none).
# Binaries are cached under $CF_BIN (default ~/.cache/commit-frontend/bin) by version,
# so a second run costs nothing. Prints the bin directory on its last line.
#
#   bash hack/install-deps.sh             # everything the tests and benchmarks run
#   bash hack/install-deps.sh containerd  # what the demo runs: runc, busybox-static, containerd
set -euo pipefail
only=${1:-}
case "$only" in
  ""|containerd) ;;
  *) echo "install-deps.sh: unknown set $only (want containerd, or nothing for everything)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
CF_BIN=${CF_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/commit-frontend/bin}
mkdir -p "$CF_BIN"

need_pkgs=()
command -v runc >/dev/null 2>&1 || need_pkgs+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ -z "$only" ]; then
  # Rootless containerd, as nerdctl's containerd-rootless.sh runs it.
  command -v rootlesskit >/dev/null 2>&1 || need_pkgs+=(rootlesskit)
  command -v slirp4netns >/dev/null 2>&1 || need_pkgs+=(slirp4netns)
  command -v newuidmap >/dev/null 2>&1 || need_pkgs+=(uidmap)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q "${need_pkgs[@]}" >&2
fi

# build MODULE VERSION STAMP TAGS PKGS...
build() {
  local mod=$1 ver=$2 stamp=$3 tags=$4; shift 4
  if [ -f "$CF_BIN/.$stamp-$ver" ]; then return 0; fi
  echo "building $mod@$ver ($*)" >&2
  local dir
  dir=$(go mod download -json "$mod@$ver" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "cannot download $mod@$ver" >&2; return 1; }
  local work
  work=$(mktemp -d)
  cp -r "$dir/." "$work/"
  chmod -R u+w "$work"
  local flags=-buildvcs=false
  if [ ! -f "$work/go.mod" ] && [ -f "$work/vendor.mod" ]; then
    # moby and docker/cli keep their module files as vendor.mod.
    mv "$work/vendor.mod" "$work/go.mod"
    mv "$work/vendor.sum" "$work/go.sum"
    rm -rf "$work/vendor"
    flags="-mod=mod -buildvcs=false"
  fi
  (cd "$work" && CGO_ENABLED=0 GOFLAGS="$flags" go build -trimpath -tags "$tags" -o "$CF_BIN/" "$@") >&2
  rm -rf "$work"
  touch "$CF_BIN/.$stamp-$ver"
}

if [ "$only" = containerd ]; then
  build github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" containerd "no_btrfs no_devmapper no_zfs" \
    ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2
  echo "$CF_BIN"
  exit 0
fi
build github.com/containerd/containerd/v2 "$CONTAINERD_VERSION" containerd "no_btrfs no_devmapper no_zfs" \
  ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2 &
p1=$!
build github.com/distribution/distribution/v3 "$REGISTRY_VERSION" registry "" ./cmd/registry &
p2=$!
wait $p1 $p2
build github.com/moby/buildkit "$BUILDKIT_VERSION" buildkit "" ./cmd/buildkitd ./cmd/buildctl
build github.com/docker/buildx "$BUILDX_VERSION" buildx "" ./cmd/buildx
build github.com/docker/docker "$MOBY_VERSION" dockerd "" ./cmd/dockerd
if ! command -v docker >/dev/null 2>&1 && [ ! -x "$CF_BIN/docker" ]; then
  build github.com/docker/cli "$DOCKER_CLI_VERSION" docker-cli "" ./cmd/docker
fi
# nerdctl, a peer in the benchmarks only (WITH_NERDCTL=1, as hack/bench.sh
# sets it). Its module's zip lacks the nested test module
# (mod/tigron) that one test helper of cmd/nerdctl imports: that file and
# the requirement are dropped from the copy built.
if [ "${WITH_NERDCTL:-}" = 1 ] && [ ! -f "$CF_BIN/.nerdctl-$NERDCTL_VERSION" ]; then
  echo "building github.com/containerd/nerdctl/v2@$NERDCTL_VERSION" >&2
  dir=$(go mod download -json "github.com/containerd/nerdctl/v2@$NERDCTL_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  work=$(mktemp -d)
  cp -r "$dir/." "$work/"
  chmod -R u+w "$work"
  rm -f "$work/cmd/nerdctl/helpers/testing_linux.go"
  (cd "$work" && go mod edit -dropreplace github.com/containerd/nerdctl/mod/tigron -droprequire github.com/containerd/nerdctl/mod/tigron &&
    CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -o "$CF_BIN/" ./cmd/nerdctl) >&2
  rm -rf "$work"
  touch "$CF_BIN/.nerdctl-$NERDCTL_VERSION"
fi
echo "$CF_BIN"
