package integration

// Kubernetes nodes, registries that want a password, and remote buildkitds.

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/internal/testenv"
	containerd "github.com/containerd/containerd/v2/client"
)

// startLabelled runs script in a busybox container with labels, as the CRI
// plugin labels kubelet's containers.
func startLabelled(t *testing.T, ns, id string, labels map[string]string, script string) *container {
	t.Helper()
	return startContainerWith(t, ns, "overlayfs", baseName, id, labels, script, false)
}

func podLabels(pod, name, kind string) map[string]string {
	l := map[string]string{
		"io.kubernetes.pod.namespace": "shop",
		"io.kubernetes.pod.name":      pod,
		"io.cri-containerd.kind":      kind,
	}
	if name != "" {
		l["io.kubernetes.container.name"] = name
	}
	return l
}

// TestK8sNames names containers by their pod, as the kubelet labels them.
func TestK8sNames(t *testing.T) {
	const ns = "k8s.io"
	startLabelled(t, ns, "web-sandbox", podLabels("web-7d9", "", "sandbox"), "echo sandbox > /who; touch /ready; exec sleep 3600")
	startLabelled(t, ns, "web-app", podLabels("web-7d9", "app", "container"), "echo app > /who; touch /ready; exec sleep 3600")
	startLabelled(t, ns, "web-sidecar", podLabels("web-7d9", "sidecar", "container"), "echo sidecar > /who; touch /ready; exec sleep 3600")
	startLabelled(t, ns, "solo-sandbox", podLabels("solo", "", "sandbox"), "echo sandbox > /who; touch /ready; exec sleep 3600")
	solo := startLabelled(t, ns, "solo-main", podLabels("solo", "main", "container"), "echo main > /who; touch /ready; exec sleep 3600")

	who := func(t *testing.T, spec string) string {
		t.Helper()
		img, _ := commitOCI(t, ns, spec)
		return string(layerEntries(t, img.Layers[len(img.Layers)-1])["who"].Data)
	}
	if got := who(t, "k8s://shop/web-7d9/sidecar"); got != "sidecar\n" {
		t.Errorf("k8s://shop/web-7d9/sidecar committed %q", got)
	}
	if got := who(t, "k8s://shop/solo"); got != "main\n" {
		t.Errorf("k8s://shop/solo committed %q", got)
	}
	if st := solo.status(t); st != containerd.Running {
		t.Errorf("container %s", st)
	}
	for _, tc := range []struct{ spec, want string }{
		{"k8s://shop/web-7d9", "has several containers, name one (k8s://shop/web-7d9/CONTAINER): app, sidecar"},
		{"k8s://shop/nope", "no pod nope in Kubernetes namespace shop; its pods here: solo, web-7d9"},
		{"k8s://shop/web-7d9/db", "has no container db; its containers: app, sidecar"},
		{"k8s://elsewhere/web-7d9", "Kubernetes namespace elsewhere has no containers here"},
		{"k8s://shop", "want k8s://NAMESPACE/POD[/CONTAINER]"},
	} {
		r := cfFail(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), tc.spec)...)
		if !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: stderr lacks %q:\n%s", tc.spec, tc.want, r.stderr)
		}
	}
}

// TestDiscardedBaseLayers: on a node that discards a base image's layer
// blobs once unpacked (EKS, GKE), the commit fetches the base from its
// registry, and the image lands and runs from the snapshots there.
func TestDiscardedBaseLayers(t *testing.T) {
	const ns = "discard"
	ctx := context.Background()
	ctrd(t, ns)
	if _, err := env.ctrd.Ctr(ctx, ns, "images", "pull", "--plain-http", env.base.Ref); err != nil {
		t.Fatal(err)
	}
	if _, err := env.ctrd.Ctr(ctx, ns, "images", "tag", env.base.Ref, "127.0.0.1:1/gone/busybox:latest"); err != nil {
		t.Fatal(err)
	}
	discard := func() {
		for _, l := range readOCITar(t, env.base.Tar).Manifest.Layers {
			// Gone already, or written back by an earlier commit.
			_, _ = env.ctrd.Ctr(ctx, ns, "content", "rm", l.Digest.String())
			if _, err := ctrd(t, ns).ContentStore().Info(ctx, l.Digest); err == nil {
				t.Fatalf("layer %s is still there", l.Digest)
			}
		}
		if out, err := exec.Command(tool("buildctl"), "--addr", env.bk.Addr, "prune", "--all").CombinedOutput(); err != nil {
			t.Fatalf("buildctl prune: %v\n%s", err, out)
		}
	}
	startContainerFrom(t, ns, "overlayfs", env.base.Ref, "discarded", "echo kept > /kept; touch /ready; exec sleep 3600", false)
	startContainerFrom(t, ns, "overlayfs", "127.0.0.1:1/gone/busybox:latest", "discarded-gone", "touch /ready; exec sleep 3600", false)
	discard()

	cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "discarded", "example.com/discarded:1")...)
	out, err := env.ctrd.Ctr(ctx, ns, "run", "--rm", "example.com/discarded:1", "discarded-run", "cat", "/kept")
	if err != nil || strings.TrimSpace(out) != "kept" {
		t.Errorf("run of the commit: %q %v", out, err)
	}

	// buildkitd now caches the base the first commit fetched: empty it.
	discard()
	r := cfFail(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), "discarded-gone", "example.com/discarded:2")...)
	if !strings.Contains(r.stderr, "discarded after unpacking") || !strings.Contains(r.stderr, "127.0.0.1:1/gone/busybox@sha256:") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
}

// dockerConfig writes a docker config file holding the auth registry's
// credentials and returns its directory.
func dockerConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(authUser + ":" + authPassword))
	writeFiles(t, dir, map[string]string{"config.json": fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, env.authReg.Host, auth)})
	return dir
}

// runEnv runs the CLI with extra environment.
func runEnv(t *testing.T, envs []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, env.cli, args...)
	cmd.Env = append(append(os.Environ(), "BUILDKIT_HOST="+env.bk.Addr, "CONTAINERD_ADDRESS="+env.ctrd.Addr), envs...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{stdout.String(), stderr.String(), err}
}

// TestRegistryAuth: docker's config file gives the session its registry
// credentials, for a pushed output and for a private base.
func TestRegistryAuth(t *testing.T) {
	const ns = "default"
	const id = "auth-push"
	ct := startContainer(t, ns, "overlayfs", id, "echo private > /private; touch /ready; exec sleep 3600", false)
	ref := env.authReg.Host + "/private:1"
	args := append(append([]string{"commit"}, ctrArgs(ns)...), "--output", "type=image,name="+ref+",push=true,registry.insecure=true", id)

	r := runEnv(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, args...)
	if r.err == nil {
		t.Fatalf("a push without credentials succeeded")
	}
	if !strings.Contains(r.stderr, env.authReg.Host) || !strings.Contains(r.stderr, "401 Unauthorized") || !strings.Contains(r.stderr, "wants credentials") {
		t.Errorf("the error does not name the registry and its refusal:\n%s", r.stderr)
	}
	checkNothingLeft(t, ct, ref)

	cfgDir := dockerConfig(t)
	if r := runEnv(t, []string{"DOCKER_CONFIG=" + cfgDir}, args...); r.err != nil {
		t.Fatalf("push with credentials: %v\n%s", r.err, r.stderr)
	}
	req, _ := http.NewRequest("GET", "http://"+env.authReg.Host+"/v2/private/manifests/1", nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	req.SetBasicAuth(authUser, authPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("the pushed manifest: %s", resp.Status)
	}

	// A private base for `build`.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"Commitfile": "FROM " + ref + "\nRUN cat /private > /copied\n"})
	out := filepath.Join(t.TempDir(), "out.tar")
	r = runEnv(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "build", "--progress", "plain", "--output", "type=oci,dest="+out, dir)
	if r.err == nil || !strings.Contains(r.stderr, "401") {
		t.Errorf("a private base without credentials: %v\n%s", r.err, r.stderr)
	}
	if r := runEnv(t, []string{"DOCKER_CONFIG=" + cfgDir}, "build", "--progress", "plain", "--output", "type=oci,dest="+out, dir); r.err != nil {
		t.Fatalf("build from a private base: %v\n%s", r.err, r.stderr)
	}
	img := readOCITar(t, out)
	if e := layerEntries(t, img.Layers[len(img.Layers)-1])["copied"]; string(e.Data) != "private\n" {
		t.Errorf("copied: %q", e.Data)
	}
}

var tlsEnv struct {
	once  sync.Once
	bk    *testenv.Buildkitd
	certs *testenv.Certs
	err   error
}

// tlsBuildkitd starts, once, a buildkitd listening on 127.0.0.1 over TCP
// with TLS and client certificates.
func tlsBuildkitd(t *testing.T) (*testenv.Buildkitd, *testenv.Certs) {
	t.Helper()
	tlsEnv.once.Do(func() {
		if tlsEnv.certs, tlsEnv.err = testenv.MakeCerts(filepath.Join(env.dir, "certs"), "buildkitd.test"); tlsEnv.err != nil {
			return
		}
		tlsEnv.bk, tlsEnv.err = testenv.StartBuildkitd(context.Background(), env.dir, testenv.BuildkitdOpt{
			Name: "buildkitd-tls", InsecureRegistries: []string{env.reg.Host}, TLS: tlsEnv.certs,
		})
	})
	if tlsEnv.err != nil {
		t.Fatalf("buildkitd with TLS: %v", tlsEnv.err)
	}
	return tlsEnv.bk, tlsEnv.certs
}

func tlsArgs(c *testenv.Certs) []string {
	return []string{"--tlscacert", c.CA, "--tlscert", c.ClientCert, "--tlskey", c.ClientKey, "--tlsservername", c.ServerName}
}

// TestRemoteBuildkitdTLS commits through a buildkitd over TCP with TLS.
func TestRemoteBuildkitdTLS(t *testing.T) {
	const ns = "default"
	const id = "remote-tls"
	bk, certs := tlsBuildkitd(t)
	startContainer(t, ns, "overlayfs", id, "echo remote > /remote; touch /ready; exec sleep 3600", false)
	args := append([]string{"commit", "--addr", bk.TCPAddr}, ctrArgs(ns)...)
	if r := cfFail(t, "", append(args, id)...); !strings.Contains(r.stderr, bk.TCPAddr) {
		t.Errorf("without certificates: %s", r.stderr)
	}
	cf(t, "", append(append(args, tlsArgs(certs)...), id, "example.com/remote:1")...)
	out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/remote:1", "remote-run", "cat", "/remote")
	if err != nil || strings.TrimSpace(out) != "remote" {
		t.Errorf("run: %q %v", out, err)
	}
	// BUILDKIT_HOST names it as well.
	r := runEnv(t, []string{"BUILDKIT_HOST=" + bk.TCPAddr}, append(append(append([]string{"commit"}, ctrArgs(ns)...), tlsArgs(certs)...), id)...)
	if r.err != nil {
		t.Errorf("through BUILDKIT_HOST: %v\n%s", r.err, r.stderr)
	}
}

// stallProxy forwards TCP connections until stalled, then keeps them open
// and carries nothing: a network that silently stops.
type stallProxy struct {
	addr    string
	mu      sync.Mutex
	stalled bool
}

func startStallProxy(t *testing.T, target string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: "tcp://" + ln.Addr().String()}
	var conns []net.Conn
	var cmu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
	})
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			for p.isStalled() {
				time.Sleep(50 * time.Millisecond)
			}
			if n > 0 {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if err == io.EOF {
					_ = dst.(*net.TCPConn).CloseWrite()
				}
				return
			}
		}
	}
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", strings.TrimPrefix(target, "tcp://"))
			if err != nil {
				in.Close()
				continue
			}
			cmu.Lock()
			conns = append(conns, in, out)
			cmu.Unlock()
			go pipe(out, in)
			go pipe(in, out)
		}
	}()
	return p
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	p.stalled = true
	p.mu.Unlock()
}

func (p *stallProxy) isStalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stalled
}

// TestFaultNetworkStalls: the network to a remote buildkitd stops carrying
// anything mid-commit; the commit fails in bounded time, saying so, with the
// container running and nothing left behind.
func TestFaultNetworkStalls(t *testing.T) {
	const ns = "default"
	const id = "network-stall"
	bk, certs := tlsBuildkitd(t)
	proxy := startStallProxy(t, bk.TCPAddr)
	ct := startContainer(t, ns, "overlayfs", id, bigChange, false)
	ref := "example.com/stalled:1"
	cmd, _, stderr := startCommit(t, append(append(append(ctrArgs(ns), "--addr", proxy.addr), tlsArgs(certs)...), id, ref)...)
	waitForOutput(t, stderr, "COMMIT rootfs")
	proxy.stall()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("the commit succeeded over a stalled network")
		}
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the commit still waits %s after the network stalled:\n%s", time.Since(start), stderr)
	}
	t.Logf("failed %s after the stall", time.Since(start).Round(time.Second))
	if !strings.Contains(stderr.String(), "stopped answering") {
		t.Errorf("stderr does not say buildkitd stopped answering:\n%s", lastLines(stderr.String(), 5))
	}
	checkNothingLeft(t, ct, ref)
}
