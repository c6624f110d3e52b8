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
)

// podman is the second peer: Debian's podman, with its own private storage
// (overlay driver) under the benchmark's directory. It commits by diffing the
// container's overlay upper directory into an uncompressed layer in its
// local storage, so it runs in the uncompressed cells only. `podman run`
// cannot set its rlimits on these machines, so its containers are created,
// mounted and changed through the mount, never started.
type podman struct {
	bin  string
	args []string
}

// newPodman returns nil when podman is not installed.
func newPodman(dir string) *podman {
	bin, err := exec.LookPath("podman")
	if err != nil {
		return nil
	}
	return &podman{bin: bin, args: []string{
		"--root", filepath.Join(dir, "podman", "root"),
		"--runroot", filepath.Join(dir, "podman", "run"),
		"--tmpdir", filepath.Join(dir, "podman", "tmp"),
		"--storage-driver", "overlay",
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "file",
	}}
}

func (p *podman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, p.bin, append(append([]string{}, p.args...), args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF=/dev/null", "CONTAINERS_REGISTRIES_CONF=/dev/null")
	return cmd
}

func (p *podman) run(ctx context.Context, args ...string) (string, error) {
	out, err := p.cmd(ctx, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// load loads an OCI archive made by BuildKit and names it.
func (p *podman) load(ctx context.Context, tar, name string) error {
	out, err := p.run(ctx, "load", "-q", "-i", tar)
	if err != nil {
		return err
	}
	// "Loaded image: NAME" (or "Loaded image(s): ..."), perhaps after
	// warnings on stderr.
	i := strings.Index(out, "Loaded image")
	_, loaded, ok := strings.Cut(out[max(i, 0):], ": ")
	if i < 0 || !ok {
		return fmt.Errorf("podman load %s: no image in %q", tar, out)
	}
	_, err = p.run(ctx, "tag", strings.TrimSpace(loaded), name)
	return err
}

// benchPodman times `podman commit` of a fresh container changed by ch;
// it returns the commit's CPU time.
func benchPodman(b *testing.B, base string, ch change, cold bool) time.Duration {
	ctx := context.Background()
	p := env.podman
	id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	if _, err := p.run(ctx, "create", "--name", id, base, "sleep", "3600"); err != nil {
		b.Fatal(err)
	}
	ref := "localhost/bench/out:" + id
	defer func() {
		_, _ = p.run(ctx, "rm", "-f", id)
		_, _ = p.run(ctx, "rmi", "-f", ref)
	}()
	root, err := p.run(ctx, "mount", id)
	if err != nil {
		b.Fatal(err)
	}
	if err := ch.apply(root); err != nil {
		b.Fatal(err)
	}
	if _, err := p.run(ctx, "unmount", id); err != nil {
		b.Fatal(err)
	}
	if cold {
		dropCaches(b)
	}
	cmd := p.cmd(ctx, "commit", "-q", id, ref)
	b.StartTimer()
	out, err := cmd.CombinedOutput()
	b.StopTimer()
	if err != nil {
		b.Fatalf("podman commit: %v: %s", err, out)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
