package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/commit-frontend/commit-frontend/internal/buildopt"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/cmd/buildctl/build"
	"github.com/moby/buildkit/session"
	"github.com/pkg/errors"
	"github.com/spf13/cobra"
	"github.com/tonistiigi/fsutil"
)

type buildFlags struct {
	bk           solve.ConnectOpt
	file         string
	contexts     []string
	buildArgs    []string
	opts         []string
	platforms    []string
	outputs      []string
	progress     string
	metadataFile string
	iidfile      string
	target       string
	noCache      bool
}

func newBuildCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build [OPTIONS] PATH",
		Short: "Build a Commitfile with the commit frontend run in-process against a buildkitd",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runBuild(cmd, f, args[0])
		},
	}
	fl := cmd.Flags()
	addBuildkitFlags(fl, &f.bk)
	fl.StringVarP(&f.file, "file", "f", "", "Commitfile to build (default PATH/Commitfile)")
	fl.StringArrayVar(&f.contexts, "build-context", nil, "named context NAME=PATH|docker-image://REF|oci-layout://PATH[:TAG]")
	fl.StringArrayVar(&f.buildArgs, "build-arg", nil, "build argument NAME=VALUE")
	fl.StringArrayVar(&f.opts, "opt", nil, "frontend option KEY=VALUE")
	fl.StringArrayVar(&f.platforms, "platform", nil, "target platform")
	fl.StringArrayVarP(&f.outputs, "output", "o", nil, "output in buildctl syntax, e.g. type=oci,dest=out.tar")
	fl.StringVar(&f.progress, "progress", "auto", "progress output: auto, plain, tty, quiet, rawjson")
	fl.StringVar(&f.metadataFile, "metadata-file", "", "write the build result metadata to this file")
	fl.StringVar(&f.iidfile, "iidfile", "", "write the image ID to this file")
	fl.StringVar(&f.target, "target", "", "stage to build")
	fl.BoolVar(&f.noCache, "no-cache", false, "do not use the build cache")
	return cmd
}

func runBuild(cmd *cobra.Command, f buildFlags, path string) error {
	ctx := cmd.Context()
	st, err := os.Stat(path)
	if err != nil {
		return errors.Wrap(err, "build context")
	}
	if !st.IsDir() {
		return errors.Errorf("build context %s is not a directory", path)
	}
	attrs, err := build.ParseOpt(f.opts)
	if err != nil {
		return err
	}
	for _, a := range f.buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			v, ok = os.LookupEnv(k)
			if !ok {
				continue
			}
		}
		attrs["build-arg:"+k] = v
	}
	if len(f.platforms) > 0 {
		attrs["platform"] = strings.Join(f.platforms, ",")
	}
	if f.target != "" {
		attrs["target"] = f.target
	}
	if f.noCache {
		attrs["no-cache"] = ""
	}
	ctxFS, err := fsutil.NewFS(path)
	if err != nil {
		return err
	}
	fileDir := path
	if f.file != "" {
		fileDir = filepath.Dir(f.file)
		attrs["filename"] = filepath.Base(f.file)
	}
	fileFS, err := fsutil.NewFS(fileDir)
	if err != nil {
		return err
	}
	exports, err := build.ParseOutput(f.outputs)
	if err != nil {
		return err
	}
	opt := client.SolveOpt{
		Exports:       exports,
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": fileFS},
		Session:       []session.Attachable{solve.DockerAuth()},
	}
	if err := buildopt.AddContexts(&opt, f.contexts); err != nil {
		return err
	}
	c, err := solve.ConnectWith(ctx, connectOpt(f.bk))
	if err != nil {
		return err
	}
	defer c.Close()
	resp, err := solve.Run(ctx, c, opt, f.progress)
	if err != nil {
		return err
	}
	return writeResults(resp, f.metadataFile, f.iidfile)
}

func writeResults(resp *client.SolveResponse, metadataFile, iidfile string) error {
	if metadataFile != "" {
		if err := solve.WriteMetadata(metadataFile, resp.ExporterResponse); err != nil {
			return err
		}
	}
	if iidfile != "" {
		id := resp.ExporterResponse["containerimage.config.digest"]
		if err := os.WriteFile(iidfile, []byte(id), 0o644); err != nil {
			return err
		}
	}
	return nil
}
