package main

import (
	"context"
	"net"
	"os"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/engine"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	bkclient "github.com/moby/buildkit/client"
	"github.com/pkg/errors"
	"github.com/spf13/pflag"

	// The connection helpers buildctl registers: docker-container://,
	// kube-pod://, nerdctl-container://, podman-container://, ssh://.
	_ "github.com/moby/buildkit/client/connhelper/dockercontainer"
	_ "github.com/moby/buildkit/client/connhelper/kubepod"
	_ "github.com/moby/buildkit/client/connhelper/nerdctlcontainer"
	_ "github.com/moby/buildkit/client/connhelper/podmancontainer"
	_ "github.com/moby/buildkit/client/connhelper/ssh"
)

// addBuildkitFlags adds buildctl's flags for reaching buildkitd.
func addBuildkitFlags(fl *pflag.FlagSet, o *solve.ConnectOpt) {
	fl.StringVar(&o.Addr, "addr", "", "buildkitd address: unix://, tcp://, docker-container://, kube-pod://, ssh://... (default $BUILDKIT_HOST or "+solve.DefaultAddr+")")
	fl.StringVar(&o.TLSCACert, "tlscacert", "", "CA certificate for validating buildkitd's certificate (tcp://)")
	fl.StringVar(&o.TLSCert, "tlscert", "", "client certificate for buildkitd (tcp://)")
	fl.StringVar(&o.TLSKey, "tlskey", "", "client key for buildkitd (tcp://)")
	fl.StringVar(&o.TLSServerName, "tlsservername", "", "server name buildkitd's certificate must carry (default: the address's host)")
	fl.StringVar(&o.TLSDir, "tlsdir", "", "directory holding ca.pem, cert.pem and key.pem")
}

// connectOpt fills in the address from the environment.
func connectOpt(o solve.ConnectOpt) solve.ConnectOpt {
	o.Addr = solve.Addr(o.Addr)
	return o
}

// connectBuildkit connects to the buildkitd the flags or BUILDKIT_HOST name;
// with neither, to the one at BuildKit's default socket when one answers
// there, else it starts BuildKit's engine in this process, on containerd
// at address in namespace ns (package engine), and returns it (nil for a
// buildkitd). With background the engine goes on starting as the caller
// goes on (its Ready, through engineReady, says when it serves). done
// closes the client, and stops the engine.
func connectBuildkit(ctx context.Context, o solve.ConnectOpt, address, ns, snapshotter string, background bool, warnf func(string, ...any)) (_ *bkclient.Client, done func() error, _ *engine.Engine, _ error) {
	if o.Addr != "" || os.Getenv("BUILDKIT_HOST") != "" || defaultBuildkitdAnswers() {
		c, err := solve.ConnectWith(ctx, connectOpt(o))
		if err != nil {
			return nil, nil, nil, err
		}
		return c, c.Close, nil, nil
	}
	e, err := startEngine(ctx, address, ns, snapshotter, background, warnf)
	if err != nil {
		return nil, nil, nil, engineStartError(err)
	}
	return e.Client(), e.Close, e, nil
}

// engineReady waits until e serves.
func engineReady(e *engine.Engine) error {
	if err := e.Ready(); err != nil {
		return engineStartError(err)
	}
	return nil
}

func engineStartError(err error) error {
	return errors.Wrapf(err, "no buildkitd is named (--addr, BUILDKIT_HOST) or listens at %s, and BuildKit's engine could not start in this process", solve.DefaultAddr)
}

// startEngine starts BuildKit's engine in this process, on the containerd
// at address, in namespace ns; in the background, or waiting until it
// serves.
func startEngine(ctx context.Context, address, ns, snapshotter string, background bool, warnf func(string, ...any)) (*engine.Engine, error) {
	root, err := engine.DefaultRoot()
	if err != nil {
		return nil, err
	}
	opt := engine.Options{Root: root, Address: address, Namespace: ns, Snapshotter: snapshotter, Warnf: warnf}
	if background {
		return engine.StartBackground(ctx, opt)
	}
	return engine.Start(ctx, opt)
}

// defaultBuildkitdAnswers tells whether something accepts connections at
// buildkitd's default socket.
func defaultBuildkitdAnswers() bool {
	conn, err := net.DialTimeout("unix", strings.TrimPrefix(solve.DefaultAddr, "unix://"), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
