// Command commit-frontend is the commit frontend: run with no arguments by
// BuildKit's gateway it serves the frontend; `build` runs it in-process
// against a buildkitd, `commit` commits a containerd container.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/moby/buildkit/frontend/gateway/grpcclient"
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
	ctx := appcontext.Context()
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "commit-frontend: %v\n", err)
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if ctxErr := context.Cause(appcontext.Context()); ctxErr != nil {
		return 130
	}
	return 1
}
