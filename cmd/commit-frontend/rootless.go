package main

import (
	"os"
	"strings"

	"github.com/containerd/nerdctl/v2/pkg/rootlessutil"
	"github.com/pkg/errors"
	"github.com/spf13/cobra"
)

// enterRootless runs the command again inside rootless containerd's user
// and mount namespaces (RootlessKit's child), as nerdctl does, when a user
// who is not root runs it and rootless containerd runs
// ($ROOTLESSKIT_STATE_DIR, or containerd-rootless.sh's
// $XDG_RUNTIME_DIR/containerd-rootless): only there are the container's
// files, the snapshots and containerd's socket (/run/containerd) what the
// commit must see. It returns only where nothing is to be entered; a
// commit of a docker container stays where it is.
func enterRootless(cmd *cobra.Command) error {
	if !rootlessutil.IsRootlessParent() {
		return nil
	}
	if f := cmd.Flags().Lookup("docker"); f != nil && f.Value.String() == "true" {
		return nil
	}
	if _, err := rootlessutil.RootlessKitStateDir(); err != nil {
		// No rootless containerd: the command runs as it is (a
		// buildkitd or a containerd the user may reach).
		return nil
	}
	// The host gateway is for nerdctl's containers' /etc/hosts: none here.
	err := rootlessutil.ParentMain("")
	return errors.Wrapf(err, "entering rootless containerd's namespaces (as user %d)", os.Geteuid())
}

// containerdUnanswered is the error of a containerd at address that did
// not answer; a user who is not root and may not reach its socket is told
// what to run instead.
func containerdUnanswered(address string, err error) error {
	if os.Geteuid() != 0 && strings.Contains(err.Error(), "permission denied") {
		return errors.Errorf("containerd at %s does not answer user %d (%v): commit as root, or run rootless containerd (containerd-rootless-setuptool.sh install), whose namespaces commit-frontend enters as nerdctl does", address, os.Geteuid(), err)
	}
	return errors.Wrapf(err, "containerd at %s does not answer", address)
}
