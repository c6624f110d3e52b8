// Package testenv starts the real components the integration tests and the
// demo run against — buildkitd (OCI worker with runc, or containerd worker),
// containerd, a registry on 127.0.0.1 — on private sockets and roots under one
// directory, and stops them again.
package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/buildkit/client"
	"github.com/pkg/errors"
	"golang.org/x/crypto/bcrypt"
)

// BinDir is where hack/install-deps.sh puts the daemons.
func BinDir() string {
	if v := os.Getenv("CF_BIN"); v != "" {
		return v
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "commit-frontend", "bin")
}

// Bin returns the path of a daemon binary, or an error telling how to get it.
func Bin(name string) (string, error) {
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		return "", errors.Errorf("%s not found in %s: run hack/install-deps.sh", name, BinDir())
	}
	return p, nil
}

// Proc is a daemon started by the environment.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string
	done chan struct{}
}

// Stop stops the daemon: SIGTERM, then SIGKILL after a grace period.
func (p *Proc) Stop() {
	if p == nil || p.Cmd.Process == nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
}

// Kill kills the daemon at once, as a crash would.
func (p *Proc) Kill() {
	if p == nil || p.Cmd.Process == nil {
		return
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Running reports whether the daemon has not exited.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Tail returns the last n bytes of the daemon's log.
func (p *Proc) Tail(n int) string {
	dt, _ := os.ReadFile(p.Log)
	if len(dt) > n {
		dt = dt[len(dt)-n:]
	}
	return string(dt)
}

func start(dir, name string, bin string, args ...string) (*Proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "PATH="+BinDir()+":"+os.Getenv("PATH"))
	return startCmd(dir, name, cmd)
}

// startCmd starts cmd as a daemon named name, its output in dir/name.log.
func startCmd(dir, name string, cmd *exec.Cmd) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, errors.Wrapf(err, "starting %s", name)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// waitFor polls check until it succeeds, the daemon exits or the timeout passes.
func waitFor(p *Proc, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if !p.Running() {
			return errors.Errorf("%s exited during start:\n%s", p.Name, p.Tail(4000))
		}
		if last = check(); last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.Errorf("%s did not become ready in %s: %v\n%s", p.Name, timeout, last, p.Tail(4000))
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Registry is a registry on 127.0.0.1.
type Registry struct {
	*Proc
	// Host is HOST:PORT.
	Host string
}

// StartRegistry starts a registry on a free port of 127.0.0.1.
func StartRegistry(dir string) (*Registry, error) {
	return StartRegistryWith(dir, RegistryOpt{})
}

// RegistryOpt configures a registry.
type RegistryOpt struct {
	// Name names its directory and log (default "registry").
	Name string
	// User and Password, when set, are the only credentials it takes
	// (htpasswd auth): without them it answers 401.
	User, Password string
}

// StartRegistryWith starts a registry on 127.0.0.1 as opt says.
func StartRegistryWith(dir string, opt RegistryOpt) (*Registry, error) {
	bin, err := Bin("registry")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	host := "127.0.0.1:" + strconv.Itoa(port)
	if opt.Name == "" {
		opt.Name = "registry"
	}
	root := filepath.Join(dir, opt.Name)
	auth := ""
	if opt.User != "" {
		hash, err := bcrypt.GenerateFromPassword([]byte(opt.Password), bcrypt.DefaultCost)
		if err != nil {
			return nil, err
		}
		htpasswd := filepath.Join(dir, opt.Name+".htpasswd")
		if err := os.WriteFile(htpasswd, []byte(opt.User+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: %s\n    path: %s\n", opt.Name, htpasswd)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
%s`, root, host, auth)
	cfgPath := filepath.Join(dir, opt.Name+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	p, err := start(dir, opt.Name, bin, "serve", cfgPath)
	if err != nil {
		return nil, err
	}
	if err := waitFor(p, 30*time.Second, func() error {
		c, err := net.Dial("tcp", host)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		p.Stop()
		return nil, err
	}
	return &Registry{Proc: p, Host: host}, nil
}

// Buildkitd is a running buildkitd.
type Buildkitd struct {
	*Proc
	// Addr is its unix:// address.
	Addr string
	// Root is its state directory.
	Root string
	// TCPAddr is its tcp:// address with TLS, when it has one.
	TCPAddr string
}

// BuildkitdOpt configures a buildkitd.
type BuildkitdOpt struct {
	// Name names its directory and log.
	Name string
	// InsecureRegistries are HOST:PORT registries reached over plain HTTP.
	InsecureRegistries []string
	// ContainerdAddr selects the containerd worker on this containerd.
	ContainerdAddr string
	// ContainerdNamespace is the containerd worker's namespace.
	ContainerdNamespace string
	// DebugAddr, when set, serves pprof on this TCP address.
	DebugAddr string
	// TLS, when set, makes it listen on 127.0.0.1 over TCP too, with
	// these certificates, and ask clients for theirs.
	TLS *Certs
}

// StartBuildkitd starts buildkitd with the OCI worker (runc), or with the
// containerd worker when opt.ContainerdAddr is set.
func StartBuildkitd(ctx context.Context, dir string, opt BuildkitdOpt) (*Buildkitd, error) {
	bin, err := Bin("buildkitd")
	if err != nil {
		return nil, err
	}
	if opt.Name == "" {
		opt.Name = "buildkitd"
	}
	root := filepath.Join(dir, opt.Name)
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, err
	}
	sock := filepath.Join(root, "buildkitd.sock")
	var cfg bytes.Buffer
	fmt.Fprintf(&cfg, "root = %q\n", filepath.Join(root, "state"))
	for _, r := range opt.InsecureRegistries {
		fmt.Fprintf(&cfg, "[registry.%q]\n  http = true\n  insecure = true\n", r)
	}
	cfgPath := filepath.Join(root, "buildkitd.toml")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o644); err != nil {
		return nil, err
	}
	args := []string{"--config", cfgPath, "--addr", "unix://" + sock}
	if opt.DebugAddr != "" {
		args = append(args, "--debugaddr", opt.DebugAddr)
	}
	tcpAddr := ""
	if opt.TLS != nil {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		tcpAddr = "tcp://127.0.0.1:" + strconv.Itoa(port)
		args = append(args, "--addr", tcpAddr, "--tlscert", opt.TLS.ServerCert, "--tlskey", opt.TLS.ServerKey, "--tlscacert", opt.TLS.CA)
	}
	if opt.ContainerdAddr != "" {
		ns := opt.ContainerdNamespace
		if ns == "" {
			ns = "buildkit"
		}
		args = append(args, "--oci-worker=false", "--containerd-worker=true",
			"--containerd-worker-addr", opt.ContainerdAddr, "--containerd-worker-namespace", ns)
	} else {
		args = append(args, "--oci-worker=true", "--containerd-worker=false", "--oci-worker-snapshotter=overlayfs")
	}
	p, err := start(dir, opt.Name, bin, args...)
	if err != nil {
		return nil, err
	}
	addr := "unix://" + sock
	if err := waitFor(p, 60*time.Second, func() error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		c, err := client.New(cctx, addr)
		if err != nil {
			return err
		}
		defer c.Close()
		ws, err := c.ListWorkers(cctx)
		if err != nil {
			return err
		}
		if len(ws) == 0 {
			return errors.New("no workers yet")
		}
		return nil
	}); err != nil {
		p.Stop()
		return nil, err
	}
	return &Buildkitd{Proc: p, Addr: addr, Root: root, TCPAddr: tcpAddr}, nil
}

// Certs are the files of a CA, a server certificate it signed for
// 127.0.0.1 and a name, and a client certificate it signed.
type Certs struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	// ServerName is the name in the server certificate besides 127.0.0.1.
	ServerName string
}

// MakeCerts writes a fresh CA and the server and client certificates it
// signs into dir.
func MakeCerts(dir, serverName string) (*Certs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	newKey := func() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }
	write := func(name, typ string, der []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	caKey, err := newKey()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "commit-frontend test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	c := &Certs{ServerName: serverName}
	if c.CA, err = write("ca.pem", "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, certName, keyName string) (string, string, error) {
		key, err := newKey()
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{serverName}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		cp, err := write(certName, "CERTIFICATE", der)
		if err != nil {
			return "", "", err
		}
		kp, err := write(keyName, "PRIVATE KEY", kder)
		return cp, kp, err
	}
	if c.ServerCert, c.ServerKey, err = leaf(2, serverName, x509.ExtKeyUsageServerAuth, "server.pem", "server-key.pem"); err != nil {
		return nil, err
	}
	if c.ClientCert, c.ClientKey, err = leaf(3, "client", x509.ExtKeyUsageClientAuth, "client.pem", "client-key.pem"); err != nil {
		return nil, err
	}
	return c, nil
}

// Containerd is a running containerd.
type Containerd struct {
	*Proc
	// Addr is its socket path.
	Addr string
	// Root and State are its directories.
	Root, State string
	config      string
	dir         string
}

// StartContainerd starts containerd with its own root, state and socket.
func StartContainerd(ctx context.Context, dir string) (*Containerd, error) {
	return StartContainerdWith(ctx, dir, "")
}

// StartContainerdWith is StartContainerd with more of containerd's
// configuration (TOML, appended to the test configuration).
func StartContainerdWith(ctx context.Context, dir, extraConfig string) (*Containerd, error) {
	base := filepath.Join(dir, "containerd")
	c := &Containerd{
		Addr:   filepath.Join(base, "containerd.sock"),
		Root:   filepath.Join(base, "root"),
		State:  filepath.Join(base, "state"),
		config: filepath.Join(base, "config.toml"),
		dir:    dir,
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs", "io.containerd.differ.v1.erofs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[debug]
  level = "warn"
`, c.Root, c.State, c.Addr, c.Addr+".ttrpc") + extraConfig
	if err := os.WriteFile(c.config, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts (or restarts) the containerd process.
func (c *Containerd) Start(ctx context.Context) error {
	bin, err := Bin("containerd")
	if err != nil {
		return err
	}
	p, err := start(c.dir, "containerd", bin, "--config", c.config)
	if err != nil {
		return err
	}
	ctr, err := Bin("ctr")
	if err != nil {
		return err
	}
	if err := waitFor(p, 60*time.Second, func() error {
		out, err := exec.CommandContext(ctx, ctr, "--address", c.Addr, "version").CombinedOutput()
		if err != nil {
			return errors.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}); err != nil {
		p.Stop()
		return err
	}
	c.Proc = p
	return nil
}

// Ctr runs ctr against this containerd in namespace ns and returns its output.
func (c *Containerd) Ctr(ctx context.Context, ns string, args ...string) (string, error) {
	bin, err := Bin("ctr")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"--address", c.Addr, "--namespace", ns}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+BinDir()+":"+os.Getenv("PATH"))
	var out, stderr bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), errors.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out.String(), nil
}

// Dockerd is a running Docker Engine with the containerd image store, on
// a containerd of the environment.
type Dockerd struct {
	*Proc
	// Host is its DOCKER_HOST (unix://).
	Host string
	// Root is its data root.
	Root string
}

// StartDockerd starts dockerd with the containerd image store on the
// containerd at containerdAddr, with no network of its own (no bridge, no
// iptables), its state under dir. With snapshotter false it runs with
// docker's own graph drivers instead, as docker did before the containerd
// image store.
func StartDockerd(ctx context.Context, dir, containerdAddr string, containerdStore bool) (*Dockerd, error) {
	bin, err := Bin("dockerd")
	if err != nil {
		return nil, err
	}
	name, ns := "dockerd", "moby"
	if !containerdStore {
		// Beside the other on the same containerd.
		name, ns = "dockerd-graph", "moby-graph"
	}
	base := filepath.Join(dir, name)
	if err := os.MkdirAll(base, 0o700); err != nil {
		return nil, err
	}
	cfg := map[string]any{
		"features":                     map[string]bool{"containerd-snapshotter": containerdStore},
		"containerd-namespace":         ns,
		"containerd-plugins-namespace": ns + "-plugins",
		"iptables":                     false,
		"ip6tables":                    false,
		"bridge":                       "none",
		"userland-proxy":               false,
	}
	dt, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(base, "daemon.json")
	if err := os.WriteFile(cfgPath, dt, 0o644); err != nil {
		return nil, err
	}
	sock := filepath.Join(base, "docker.sock")
	// exec-root holds sockets: keep its path short.
	execRoot, err := os.MkdirTemp("", "cfd")
	if err != nil {
		return nil, err
	}
	p, err := start(dir, name, bin, "--config-file", cfgPath, "--containerd", containerdAddr,
		"--data-root", filepath.Join(base, "root"), "--exec-root", execRoot,
		"--pidfile", filepath.Join(base, "docker.pid"), "-H", "unix://"+sock)
	if err != nil {
		return nil, err
	}
	if err := waitFor(p, 90*time.Second, func() error {
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("GET /_ping HTTP/1.0\r\n\r\n")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		if !bytes.Contains(buf[:n], []byte(" 200 ")) {
			return errors.Errorf("ping: %q", buf[:n])
		}
		return nil
	}); err != nil {
		p.Stop()
		return nil, err
	}
	return &Dockerd{Proc: p, Host: "unix://" + sock, Root: filepath.Join(base, "root")}, nil
}

// Docker runs the docker CLI against the daemon.
func (d *Dockerd) Docker(ctx context.Context, args ...string) (string, error) {
	bin := "docker"
	if p, err := Bin("docker"); err == nil {
		bin = p
	}
	cmd := exec.CommandContext(ctx, bin, append([]string{"-H", d.Host}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(filepath.Dir(d.Root), "config"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.Errorf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}
