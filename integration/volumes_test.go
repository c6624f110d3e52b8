package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerIncludeVolumes commits a docker container that wrote into a
// named volume and a bind mount: with --include-volumes the volume's data
// is in the image at its mount point, owners and modes as the container
// left them, the bind mount of a host path is not (it is read only when
// named), and `docker run` of the image shows the data with no volume
// declared; naming the bind's mount point includes it too.
func TestDockerIncludeVolumes(t *testing.T) {
	name := "docker-volumes"
	bind := t.TempDir()
	docker(t, "volume", "create", "cf-test-data")
	t.Cleanup(func() { _, _ = dockerd(t).Docker(context.Background(), "volume", "rm", "-f", "cf-test-data") })
	dockerRun(t, name, []string{"-v", "cf-test-data:/var/lib/data", "-v", bind + ":/srv/bind"},
		"mkdir -p /var/lib/data/db && echo row > /var/lib/data/db/rows && chown -R 70:70 /var/lib/data/db && chmod 700 /var/lib/data/db && "+
			"echo host > /srv/bind/from-host && echo rootfs > /in-rootfs && touch /ready && exec sleep 3600")
	r := cfDocker(t, "-c", "VOLUME /var/lib/data", "--include-volumes", name, "example.com/volumes:1")
	if r.err != nil {
		t.Fatalf("commit --docker --include-volumes: %v\n%s", r.err, r.stderr)
	}
	img := dockerImage(t, "example.com/volumes:1")
	if _, ok := img.Config.Volumes["/var/lib/data"]; ok {
		t.Errorf("the image still declares the included volume: %v", img.Config.Volumes)
	}
	out := docker(t, "run", "--rm", "--network", "none", "example.com/volumes:1", "sh", "-c",
		"cat /var/lib/data/db/rows /in-rootfs; stat -c '%u:%g %a' /var/lib/data/db; ls /srv/bind")
	if want := "row\nrootfs\n70:70 700"; out != want {
		t.Errorf("docker run of the image: %q, want %q (the bind mount left out)", out, want)
	}

	r = cfDocker(t, "--include-volumes=/srv/bind,/var/lib/data", name, "example.com/volumes:2")
	if r.err != nil {
		t.Fatalf("commit --docker --include-volumes=...: %v\n%s", r.err, r.stderr)
	}
	if out := docker(t, "run", "--rm", "--network", "none", "example.com/volumes:2", "cat", "/srv/bind/from-host", "/var/lib/data/db/rows"); out != "host\nrow" {
		t.Errorf("docker run of the image with the bind named: %q", out)
	}

	r = cfDocker(t, "--include-volumes=/nowhere", name, "example.com/volumes:3")
	if r.err == nil || !strings.Contains(r.stderr, "--include-volumes /nowhere: container docker-volumes has no volume or bind mount there (its mounts: ") {
		t.Errorf("a mount point that is none: %v\n%s", r.err, r.stderr)
	}
}

// TestCommitIncludeVolumes: a containerd container with a volume-store
// bind mount and a bind of a host path, on an image that declares the
// volume: --include-volumes commits the volume's data, what the container
// sees there and not the base's files under the mount point, and drops the
// declaration; the host path is committed only when named; the runtime's
// own mounts never are.
func TestCommitIncludeVolumes(t *testing.T) {
	const ns = "volumes"
	store := filepath.Join(t.TempDir(), "volumes", ns, "data", "_data")
	host := t.TempDir()
	for _, d := range []string{store, host} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	base := startContainer(t, ns, "overlayfs", "vol-base", "mkdir /data && echo from-image > /data/hidden-by-the-mount", true)
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "-c", "VOLUME /data", base.id, "example.com/vol-base:1")...)
	if _, err := env.ctrd.Ctr(ctx, ns, "run", "-d", "--snapshotter", "overlayfs",
		"--mount", "type=bind,src="+store+",dst=/data,options=rbind:rw", "--mount", "type=bind,src="+host+",dst=/host,options=rbind:rw",
		"example.com/vol-base:1", "vol-1", "sh", "-c", "echo kept > /data/kept && echo host > /host/h && touch /ready && exec sleep 3600"); err != nil {
		t.Fatal(err)
	}
	ct := &container{ns: ns, id: "vol-1", c: ctrd(t, ns)}
	t.Cleanup(func() {
		_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "kill", "-s", "KILL", "vol-1")
		_, _ = env.ctrd.Ctr(ctx, ns, "tasks", "rm", "-f", "vol-1")
		_, _ = env.ctrd.Ctr(ctx, ns, "containers", "rm", "vol-1")
	})
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join(store, "kept")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--include-volumes", "vol-1", "example.com/vol:1")...)
	tree := imageTree(t, ct.c, "example.com/vol:1", "overlayfs")
	if _, ok := tree["data/kept"]; !ok {
		t.Error("the volume's data is not in the image")
	}
	if _, ok := tree["data/hidden-by-the-mount"]; ok {
		t.Error("the image's file under the mount point, which the container does not see, is in the image")
	}
	for p := range tree {
		if strings.HasPrefix(p, "host/") || p == "etc/hosts" || strings.HasPrefix(p, "proc/") {
			t.Errorf("%s is in the image", p)
		}
	}
	if cfg := imageConfig(t, ct.c, mustImage(t, ct.c, "example.com/vol:1")); len(cfg.Config.Volumes) != 0 {
		t.Errorf("volumes still declared: %v", cfg.Config.Volumes)
	}
	// Through the engine, the same.
	if r := runEngine(t, t.TempDir(), "commit", "--namespace", ns, "--include-volumes", "vol-1", "example.com/vol:engine"); r.err != nil {
		t.Fatalf("%v\n%s", r.err, r.stderr)
	}
	diffTrees(t, "through the engine vs through buildkitd", tree, imageTree(t, ct.c, "example.com/vol:engine", "overlayfs"))
	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "--include-volumes=/host", "vol-1", "example.com/vol:2")...)
	tree = imageTree(t, ct.c, "example.com/vol:2", "overlayfs")
	if _, ok := tree["host/h"]; !ok {
		t.Error("the named bind mount's data is not in the image")
	}
	if _, ok := tree["data/kept"]; ok {
		t.Error("a volume not named is in the image")
	}
}
