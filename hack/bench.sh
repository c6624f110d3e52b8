#!/usr/bin/env bash
# Runs the commit benchmarks: real containerd and buildkitd, real containers,
# commit-frontend against nerdctl commit, podman commit and the
# containerd-native commit in the same run, and
# prints the markdown table for docs/benchmarks.md. Needs root (the cold-cache
# cells drop the page cache).
#
#   bash hack/bench.sh                       # the full matrix, 3 runs a cell
#   BENCH='BenchmarkCommit/rootfs=50MB/change=1KiB' ROOTFS=50MB BENCHTIME=1x bash hack/bench.sh  # a subset
#   BENCH_ARGS=-bench.containerd-worker bash hack/bench.sh  # also through buildkitd's containerd worker
#   BENCH_ARGS=-bench.images=500 bash hack/bench.sh  # on image stores that hold 500 more images
set -euo pipefail
cd "$(dirname "$0")/.."
CF_BIN=$(WITH_NERDCTL=1 bash hack/install-deps.sh | tail -n 1)
export CF_BIN
# The second peer, where Debian has it.
if ! command -v podman >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman >&2 ||
    echo "podman could not be installed: the podman peer is left out" >&2
fi
out=${BENCH_OUT:-bench-results.txt}
go test -run '^$' -bench "${BENCH:-BenchmarkCommit}" -benchtime "${BENCHTIME:-3x}" -timeout 6h \
  ./bench -args -bench.rootfs "${ROOTFS:-50MB,2GB}" ${BENCH_ARGS:-} 2>&1 | grep --line-buffered -v 'cgroup v1\|fsverity' | tee "$out"
go run ./hack/benchtable < "$out"
