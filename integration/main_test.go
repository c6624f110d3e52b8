// Package integration tests commit-frontend against real daemons: a registry
// on 127.0.0.1, buildkitd with the OCI worker and runc, containerd, buildx.
// TestMain starts them once for the whole package.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/commit-frontend/commit-frontend/internal/testenv"
	"github.com/moby/buildkit/client"
)

// env is the environment shared by all tests.
var env struct {
	dir       string
	reg       *testenv.Registry
	authReg   *testenv.Registry // wants authUser and authPassword
	bk        *testenv.Buildkitd
	ctrd      *testenv.Containerd
	base      *testenv.BaseImage
	cli       string // the commit-frontend binary
	bkc       *client.Client
	frontend  string // the frontend image in the registry
	feOnce    sync.Once
	feErr     error
	repoRoot  string
	bkBinDir  string
	buildxCfg string

	ctrdWorker     *testenv.Buildkitd
	ctrdWorkerOnce sync.Once
	ctrdWorkerErr  error
}

// The credentials the password-protected registry takes.
const (
	authUser     = "ci-user"
	authPassword = "s3cret-pass"
)

// containerdWorker starts, once, a buildkitd whose containerd worker shares
// the test containerd.
func containerdWorker(t *testing.T) *testenv.Buildkitd {
	t.Helper()
	env.ctrdWorkerOnce.Do(func() {
		env.ctrdWorker, env.ctrdWorkerErr = testenv.StartBuildkitd(context.Background(), env.dir, testenv.BuildkitdOpt{
			Name:               "buildkitd-containerd",
			InsecureRegistries: []string{env.reg.Host},
			ContainerdAddr:     env.ctrd.Addr,
		})
	})
	if env.ctrdWorkerErr != nil {
		t.Fatalf("buildkitd with the containerd worker: %v", env.ctrdWorkerErr)
	}
	return env.ctrdWorker
}

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration setup:", err)
		code = 1
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cf-integration-")
	if err != nil {
		return 1, err
	}
	env.dir = dir
	defer func() {
		if os.Getenv("CF_KEEP_TESTDIR") == "" {
			_ = os.RemoveAll(dir)
		}
	}()
	_, file, _, _ := runtime.Caller(0)
	env.repoRoot = filepath.Dir(filepath.Dir(file))
	env.bkBinDir = testenv.BinDir()

	if env.reg, err = testenv.StartRegistry(dir); err != nil {
		return 1, err
	}
	defer env.reg.Stop()
	if env.authReg, err = testenv.StartRegistryWith(dir, testenv.RegistryOpt{Name: "registry-auth", User: authUser, Password: authPassword}); err != nil {
		return 1, err
	}
	defer env.authReg.Stop()
	if env.ctrd, err = testenv.StartContainerd(ctx, dir); err != nil {
		return 1, err
	}
	defer func() { env.ctrd.Stop() }()
	if env.bk, err = testenv.StartBuildkitd(ctx, dir, testenv.BuildkitdOpt{InsecureRegistries: []string{env.reg.Host, env.authReg.Host}}); err != nil {
		return 1, err
	}
	defer env.bk.Stop()
	if env.bkc, err = solve.Connect(ctx, env.bk.Addr); err != nil {
		return 1, err
	}
	defer env.bkc.Close()
	if env.base, err = testenv.BuildBusybox(ctx, env.bkc, dir, env.reg.Host); err != nil {
		return 1, err
	}
	env.cli = filepath.Join(dir, "bin", "commit-frontend")
	if cli := os.Getenv("CF_TEST_CLI"); cli != "" {
		// Another build of the CLI (a release, an older commit), to hold
		// it against the same tests.
		env.cli = cli
	} else {
		build := exec.Command("go", "build", "-trimpath", "-o", env.cli, "./cmd/commit-frontend")
		build.Dir = env.repoRoot
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("building commit-frontend: %v\n%s", err, out)
		}
	}
	env.buildxCfg = filepath.Join(dir, "buildx")
	code := m.Run()
	if env.ctrdWorker != nil {
		env.ctrdWorker.Stop()
	}
	stopDockerd()
	if tlsEnv.bk != nil {
		tlsEnv.bk.Stop()
	}
	return code, nil
}
