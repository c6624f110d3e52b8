package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/engine"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
)

// The docker peers: `docker commit` on a dockerd with the containerd image
// store, on the benchmark's containerd (namespace moby), against
// `commit-frontend commit --docker` of the same kind of container, which
// makes the same image through dockerd's own BuildKit. docker commit
// writes gzip only, so they run in the gzip cells.

// loadDocker loads the base image's tarball into dockerd as name.
func loadDocker(ctx context.Context, d *testenv.Dockerd, tar, name string) error {
	out, err := d.Docker(ctx, "load", "-i", tar)
	if err != nil {
		return err
	}
	id := ""
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Loaded image ID: "); ok {
			id = v
		} else if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Loaded image: "); ok {
			id = v
		}
	}
	if id == "" {
		return fmt.Errorf("docker load %s: no image in %q", tar, out)
	}
	_, err = d.Docker(ctx, "tag", id, name)
	return err
}

// benchDocker times `docker commit` (impl docker-commit) or
// `commit-frontend commit --docker` (impl commit-frontend-docker; through
// the engine in the CLI, commit-frontend-docker-engine) of a
// fresh docker container changed by ch; it returns the client's and the
// daemons' CPU time, and how long commit-frontend paused the container.
func benchDocker(b *testing.B, base string, ch change, cold bool, impl string) (client, daemons, paused time.Duration) {
	ctx := context.Background()
	d := env.dockerd
	id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	if _, err := d.Docker(ctx, "run", "-d", "--name", id, "--network", "none", base, "sleep", "3600"); err != nil {
		b.Fatal(err)
	}
	ref := "bench/out:" + id
	defer func() {
		_, _ = d.Docker(ctx, "rm", "-f", id)
		_, _ = d.Docker(ctx, "rmi", "-f", ref)
	}()
	pid, err := d.Docker(ctx, "inspect", "-f", "{{.State.Pid}}", id)
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.apply(filepath.Join("/proc", strings.TrimSpace(pid), "root")); err != nil {
		b.Fatal(err)
	}
	if cold {
		dropCaches(b)
	}
	bin, err := testenv.Bin("docker")
	if err != nil {
		bin = "docker"
	}
	var cmd *exec.Cmd
	md := ""
	if impl == "docker-commit" {
		cmd = exec.Command(bin, "-H", d.Host, "commit", id, ref)
		cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.Root), "config"))
	} else {
		md = filepath.Join(env.dir, id+".json")
		cmd = exec.Command(env.cli, "commit", "--docker", "--metadata-file", md, id, ref)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.Host)
		if impl == "commit-frontend-docker-engine" {
			// BuildKit's engine in the CLI on dockerd's containerd,
			// its state directory kept for the whole run.
			cmd.Env = append(cmd.Env, "COMMIT_FRONTEND_DOCKER_ROUTE=engine", engine.RootEnv+"="+filepath.Join(env.dir, "docker-engine"))
		}
	}
	daemons0 := daemonCPU()
	b.StartTimer()
	out, err := cmd.CombinedOutput()
	b.StopTimer()
	if err != nil {
		b.Fatalf("%s: %v: %s", impl, err, out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if md != "" {
		_, paused = changeSetSize(b, md)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), daemonCPU() - daemons0, paused
}
