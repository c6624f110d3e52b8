package exporter

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	"github.com/pkg/errors"
)

// Lease labels that tie a lease to the process that made it.
const (
	leasePIDLabel   = "commit-frontend/pid"
	leaseStartLabel = "commit-frontend/start"
	leaseBootLabel  = "commit-frontend/boot"
	leasePIDNSLabel = "commit-frontend/pidns"
)

// leaseLabels names this process: its pid and its start time, so that a
// pid used again later is not taken for it.
func leaseLabels() map[string]string {
	pid := os.Getpid()
	return map[string]string{leasePIDLabel: strconv.Itoa(pid), leaseStartLabel: procStart(pid), leaseBootLabel: bootID(), leasePIDNSLabel: pidNamespace()}
}

// pidNamespace names this process's PID namespace ("pid:[INODE]"): a pid is
// only comparable with pids of the same namespace.
func pidNamespace() string {
	ns, _ := os.Readlink("/proc/self/ns/pid")
	return ns
}

// bootID names this boot of this machine: a lease of another machine
// sharing the containerd is never taken for one of a dead local process.
func bootID() string {
	dt, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(dt))
}

// procStart is a process's start time in clock ticks since boot, or "".
func procStart(pid int) string {
	dt, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(dt)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		if f := strings.Fields(s[i+1:]); len(f) > 19 {
			return f[19]
		}
	}
	return ""
}

// removeStaleLeases deletes the leases of commits whose process is gone (a
// commit killed with SIGKILL cannot end its own): those of this boot and
// PID namespace whose pid no longer runs the process that made them.
func removeStaleLeases(ctx context.Context, cc *containerd.Client) error {
	lm := cc.LeasesService()
	ls, err := lm.List(ctx, `labels."`+leasePIDLabel+`"`)
	if err != nil {
		return errors.Wrap(err, "listing leases")
	}
	boot, pidns := bootID(), pidNamespace()
	for _, l := range ls {
		// Only a lease of this boot and this PID namespace names a pid
		// this process can look up; any other (a commit in a pod beside
		// the node's) is left to its expiry.
		if l.Labels[leaseBootLabel] != boot || pidns == "" || l.Labels[leasePIDNSLabel] != pidns {
			continue
		}
		pid, err := strconv.Atoi(l.Labels[leasePIDLabel])
		if err != nil || (pid > 0 && procStart(pid) == l.Labels[leaseStartLabel] && procStart(pid) != "") {
			continue
		}
		if err := lm.Delete(ctx, leases.Lease{ID: l.ID}); err != nil && !errdefs.IsNotFound(err) {
			return errors.Wrapf(err, "removing the lease %s of a commit that did not finish", l.ID)
		}
	}
	return nil
}
