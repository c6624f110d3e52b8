#!/usr/bin/env bash
# The main job on a self-contained default: installs what it runs (runc,
# busybox-static, containerd), starts a private containerd under a temp dir,
# makes the busybox base image offline with BuildKit's engine in process,
# creates a real container from that image, changes it, commits it with
# commit-frontend — no buildkitd named, so BuildKit's engine runs inside the
# CLI on that containerd — shows the new image's history and runs it. Needs
# root.
set -euo pipefail
cd "$(dirname "$0")/.."
CF_BIN=$(bash hack/install-deps.sh containerd | tail -n 1)
export CF_BIN PATH="$CF_BIN:$PATH"
work=$(mktemp -d /tmp/commit-frontend-demo.XXXXXX)
echo "+ building commit-frontend" >&2
CGO_ENABLED=0 go build -o "$work/commit-frontend" ./cmd/commit-frontend
go build -o "$work/devenv" ./hack/devenv

"$work/devenv" -containerd-only -dir "$work/env" >"$work/devenv.log" 2>&1 &
devenv=$!
ctr_() { ctr --address "$CONTAINERD_ADDRESS" --namespace default "$@" 2> >(grep -v 'cgroup v1' >&2); }
cleanup() {
  if [ -n "${CONTAINERD_ADDRESS:-}" ]; then
    ctr_ tasks kill -s KILL demo >/dev/null 2>&1 || true
    sleep 0.5
    ctr_ tasks rm -f demo >/dev/null 2>&1 || true
    ctr_ containers rm demo >/dev/null 2>&1 || true
  fi
  kill "$devenv" 2>/dev/null || true
  wait "$devenv" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "+ starting a private containerd in $work/env (the base image made by BuildKit's engine in process)" >&2
for _ in $(seq 1 300); do
  [ -f "$work/env/env" ] && break
  kill -0 "$devenv" 2>/dev/null || { cat "$work/devenv.log" >&2; exit 1; }
  sleep 0.2
done
set -a; . "$work/env/env"; set +a

echo "+ ctr images import busybox (made offline from Debian's busybox-static)" >&2
ctr_ images import --base-name docker.io/library/busybox "$CF_BASE_TAR" >/dev/null
echo "+ ctr run -d busybox demo: a container that changes its filesystem" >&2
ctr_ run -d docker.io/library/busybox:latest demo sh -c \
  'echo "hello from a committed container" > /hello.txt; rm /bin/vi; mkdir /data; chown 1000:1000 /data; touch /ready; exec sleep 3600' >/dev/null
for _ in $(seq 1 100); do
  pid=$(ctr_ tasks ls | awk '$1=="demo"{print $2}')
  [ -n "$pid" ] && [ -e "/proc/$pid/root/ready" ] && break
  sleep 0.1
done

echo "+ commit-frontend commit -a ... -m ... -c 'CMD [\"cat\", \"/hello.txt\"]' demo demo/hello:v1" >&2
echo "  (no --addr, no BUILDKIT_HOST: BuildKit's engine runs in the CLI, on containerd alone)" >&2
id=$(env -u BUILDKIT_HOST COMMIT_FRONTEND_ENGINE_ROOT="$work/engine" "$work/commit-frontend" commit --progress plain \
  -a "Demo <demo@example.com>" -m "first commit" \
  -c 'CMD ["cat", "/hello.txt"]' -c 'LABEL org.example.demo=yes' \
  demo demo/hello:v1)
echo "new image: $id"
echo
echo "+ commit-frontend history demo/hello:v1" >&2
"$work/commit-frontend" history demo/hello:v1
echo
echo "+ ctr run --rm demo/hello:v1 (no pull, no unpack: it is already in the snapshotter)" >&2
ctr_ run --rm docker.io/demo/hello:v1 demo-run
