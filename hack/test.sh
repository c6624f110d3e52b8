#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian machine: installs what the tests
# need (Debian packages, daemons built from pinned Go modules), then runs vet,
# the unit tests and the integration tests against real daemons that the tests
# start themselves. Needs root (buildkitd, containerd and runc do).
set -euo pipefail
cd "$(dirname "$0")/.."
CF_BIN=$(bash hack/install-deps.sh | tail -n 1)
export CF_BIN
echo "daemons in $CF_BIN" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "not gofmt-formatted:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
# The daemon-free packages under the race detector, then everything.
go test -race -count=1 ./changeset/ ./llb/ ./frontend/... ./exporter/ ./commit/ ./container/ ./internal/solve/ ./internal/buildopt/ ./internal/flock/ ./engine/ ./cmd/...
go test -count=1 -timeout 40m "$@" ./...
# A short run of each fuzz target; FUZZTIME=2000000x for a long one. A count,
# not a duration: Go 1.26's fuzz coordinator can fail a duration run at its
# deadline with "context deadline exceeded" and no crasher (go.dev/issue/75804).
for target in "FuzzParse ./frontend/commitfile" "FuzzParseChanges ./frontend/commitfile" \
              "FuzzParseWhiteouts ./changeset" "FuzzFromUpperdir ./changeset"; do
  set -- $target
  go test -run '^$' -fuzz "^$1\$" -fuzztime "${FUZZTIME:-5000x}" "$2"
done
