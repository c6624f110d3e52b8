package main

import (
	"github.com/commit-frontend/commit-frontend/internal/solve"
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
