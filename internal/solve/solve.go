// Package solve is the solve stage: it connects to a buildkitd (an address
// with buildctl's helpers and TLS, or dockerd's own BuildKit), runs one
// solve with BuildKit's progress display, writes the metadata file, and
// prunes a commit's own records from BuildKit's cache.
package solve

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/docker/cli/cli/config"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/auth/authprovider"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/pkg/errors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// DefaultAddr is buildkitd's default address.
const DefaultAddr = "unix:///run/buildkit/buildkitd.sock"

// Addr returns the buildkitd address: the flag, else BUILDKIT_HOST, else the default.
func Addr(flag string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv("BUILDKIT_HOST"); v != "" {
		return v
	}
	return DefaultAddr
}

// ConnectOpt says how to reach buildkitd: its address (unix://, tcp://,
// or a connection helper's scheme: docker-container://, kube-pod://,
// ssh://, ...) and, for tcp://, the TLS files as buildctl takes them.
type ConnectOpt struct {
	Addr                                              string
	TLSCACert, TLSCert, TLSKey, TLSServerName, TLSDir string
}

// Connect opens a client to buildkitd and checks that it answers.
func Connect(ctx context.Context, addr string) (*client.Client, error) {
	return ConnectWith(ctx, ConnectOpt{Addr: addr})
}

// keepaliveTime is how often the client pings buildkitd on a connection
// that carries a call: no more often than buildkitd's gRPC server allows
// (its default enforcement policy wants five minutes between pings).
const keepaliveTime = 5*time.Minute + 10*time.Second

// ConnectWith opens a client to buildkitd as opt says and checks that it
// answers.
func ConnectWith(ctx context.Context, opt ConnectOpt) (*client.Client, error) {
	addr := opt.Addr
	caCert, cert, key := opt.TLSCACert, opt.TLSCert, opt.TLSKey
	if opt.TLSDir != "" {
		if caCert != "" || cert != "" || key != "" {
			return nil, errors.New("--tlsdir and --tlscacert/--tlscert/--tlskey exclude each other")
		}
		caCert, cert, key = filepath.Join(opt.TLSDir, "ca.pem"), filepath.Join(opt.TLSDir, "cert.pem"), filepath.Join(opt.TLSDir, "key.pem")
	}
	opts := []client.ClientOpt{client.WithGRPCDialOption(grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: keepaliveTime, Timeout: 20 * time.Second,
	}))}
	if caCert != "" {
		serverName := opt.TLSServerName
		if serverName == "" {
			if u, err := url.Parse(addr); err == nil {
				serverName = u.Hostname()
			}
		}
		opts = append(opts, client.WithServerConfig(serverName, caCert))
	}
	if cert != "" || key != "" {
		opts = append(opts, client.WithCredentials(cert, key))
	}
	c, err := client.New(ctx, addr, opts...)
	if err != nil {
		return nil, errors.Wrapf(err, "connecting to buildkitd at %s", addr)
	}
	cctx, cancel := context.WithTimeout(ctx, answerTimeout)
	defer cancel()
	if _, err := c.Info(cctx); err != nil {
		c.Close()
		return nil, errors.Wrapf(err, "buildkitd at %s does not answer", addr)
	}
	return c, nil
}

// answerTimeout bounds each call that checks buildkitd is there.
const answerTimeout = 20 * time.Second

// watchAnswers checks, while a solve runs, that buildkitd still answers: a network
// that silently stops carrying the connection fails the solve within about
// twice answerTimeout, not when the kernel gives up.
func watchAnswers(ctx context.Context, c *client.Client, cancel context.CancelCauseFunc) {
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
		cctx, done := context.WithTimeout(ctx, answerTimeout)
		_, err := c.Info(cctx)
		done()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			continue
		}
		if failures++; failures >= 2 {
			cancel(errors.Wrapf(err, "buildkitd stopped answering (no answer in %s, twice): the connection to it is gone or stalled", answerTimeout))
			return
		}
	}
}

// Run solves with the commit frontend in-process, showing progress on stderr
// in the given mode ("auto", "plain", "tty", "quiet", "rawjson").
func Run(ctx context.Context, c *client.Client, opt client.SolveOpt, progress string) (*client.SolveResponse, error) {
	return RunWatching(ctx, c, opt, progress, nil)
}

// ExportedLayers is the progress status BuildKit's image and OCI exporters
// complete once every layer blob of the export is computed.
const ExportedLayers = "exporting layers"

// RunWatching is Run that also shows each progress update to watch, before
// the display.
func RunWatching(ctx context.Context, c *client.Client, opt client.SolveOpt, progress string, watch func(*client.SolveStatus)) (*client.SolveResponse, error) {
	mode := progressui.DisplayMode(progress)
	d, err := progressui.NewDisplay(os.Stderr, mode)
	if err != nil {
		return nil, errors.Wrapf(err, "--progress=%s", progress)
	}
	ch := make(chan *client.SolveStatus)
	shown := ch
	if watch != nil {
		shown = make(chan *client.SolveStatus)
	}
	var resp *client.SolveResponse
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go watchAnswers(wctx, c, cancel)
	eg, ectx := errgroup.WithContext(wctx)
	eg.Go(func() error {
		var err error
		resp, err = c.Build(ectx, opt, "", frontend.Build, ch)
		return err
	})
	if watch != nil {
		go func() {
			defer close(shown)
			for s := range ch {
				watch(s)
				shown <- s
			}
		}()
	}
	eg.Go(func() error {
		_, err := d.UpdateFrom(context.WithoutCancel(ectx), shown)
		return err
	})
	if err := eg.Wait(); err != nil {
		if cause := context.Cause(wctx); cause != nil && ctx.Err() == nil {
			return nil, cause
		}
		// A registry's refusal reaches the client as text only: a gRPC
		// status of code Unknown with no typed detail (BuildKit v0.34).
		if strings.Contains(err.Error(), "401 Unauthorized") {
			return nil, errors.Wrap(err, "a registry wants credentials: log in with docker login REGISTRY (they are read from docker's config file, $DOCKER_CONFIG or ~/.docker/config.json)")
		}
		return nil, err
	}
	return resp, nil
}

// WriteMetadata writes the exporter response as buildctl's --metadata-file
// does: values that are base64-encoded JSON are decoded in place.
func WriteMetadata(path string, resp map[string]string) error {
	out := make(map[string]any, len(resp))
	for k, v := range resp {
		out[k] = v
		if dt, err := base64.StdEncoding.DecodeString(v); err == nil {
			var j any
			if json.Unmarshal(dt, &j) == nil {
				out[k] = j
			}
		}
	}
	dt, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, dt, 0o644)
}

// CheckProgress refuses a progress mode that the display would refuse, so
// that the mistake is found before anything is paused or read.
func CheckProgress(mode string) error {
	switch progressui.DisplayMode(mode) {
	case "", progressui.AutoMode, progressui.QuietMode, progressui.TtyMode, progressui.PlainMode, progressui.RawJSONMode:
		return nil
	}
	return errors.Errorf("--progress=%s: want auto, plain, tty, quiet or rawjson", mode)
}

// DockerAuth is the session's registry auth, read from docker's config file
// (DOCKER_CONFIG, credential helpers included), as buildctl and buildx
// attach it.
func DockerAuth() session.Attachable {
	cfg := config.LoadDefaultConfigFile(os.Stderr)
	return authprovider.NewDockerAuthProvider(authprovider.DockerAuthProviderConfig{
		AuthConfigProvider: authprovider.LoadAuthConfig(cfg),
	})
}
