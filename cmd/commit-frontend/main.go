// Command commit-frontend is the commit frontend: run with no arguments by
// BuildKit's gateway it serves the frontend; `build` runs it in-process
// against a buildkitd, `commit` commits a containerd container.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/moby/buildkit/frontend/gateway/grpcclient"
	"github.com/moby/buildkit/solver/errdefs"
	"github.com/moby/buildkit/util/appcontext"
	"github.com/moby/buildkit/util/stack"
)

func main() {
	if len(os.Args) == 1 && os.Getenv("BUILDKIT_SESSION_ID") != "" {
		if err := grpcclient.RunFromEnvironment(appcontext.Context(), frontend.Build); err != nil {
			fmt.Fprintf(os.Stderr, "error: %+v\n", stack.Formatter(err))
			os.Exit(1)
		}
		return
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// A large commit moves its bytes through 4 MiB messages that are
		// garbage at once: a soft limit makes the collector return them
		// rather than let the heap double.
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx := signalContext()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		printError(os.Stderr, err)
		os.Exit(exitCode(ctx))
	}
}

// memoryLimit is the CLI's soft memory limit (GOMEMLIMIT overrides it).
const memoryLimit = 96 << 20

// printError prints err and, when it points into a Commitfile, the file and
// line it points at, followed by the lines around it.
func printError(w io.Writer, err error) {
	srcs := errdefs.Sources(err)
	prefix := ""
	if len(srcs) > 0 && srcs[0].Info != nil && len(srcs[0].Ranges) > 0 {
		prefix = fmt.Sprintf("%s:%d: ", oneLine(srcs[0].Info.Filename), srcs[0].Ranges[0].Start.Line)
	}
	fmt.Fprintf(w, "commit-frontend: %s%s\n", prefix, printable(err.Error()))
	// The source lines come from buildkitd: escaped like the rest.
	var b strings.Builder
	for _, s := range srcs {
		_ = s.Print(&b)
	}
	fmt.Fprint(w, printable(b.String()))
}

// exitCode is 130 for a run ended by a signal, as shells report SIGINT.
func exitCode(ctx context.Context) int {
	if context.Cause(ctx) != nil {
		return 130
	}
	return 1
}
