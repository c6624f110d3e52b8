package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/commit-frontend/commit-frontend/commit"
	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/internal/buildopt"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/cmd/buildctl/build"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/sshforward/sshprovider"
	"github.com/pkg/errors"
	"github.com/spf13/cobra"
	"github.com/tonistiigi/fsutil"
)

type buildFlags struct {
	share        shareFlags
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
	tags         []string
	address      string
	namespace    string
	snapshotter  string
	secrets      []string
	ssh          []string
	cacheFrom    []string
	cacheTo      []string
	allow        []string
	network      string
	addHosts     []string
}

func newBuildCommand() *cobra.Command {
	var f buildFlags
	cmd := &cobra.Command{
		Use:   "build [OPTIONS] PATH",
		Short: "Build a Commitfile with the commit frontend run in-process against a buildkitd",
		Long: `Build a Commitfile (a Dockerfile plus COMMIT) with the commit frontend run
in-process against any buildkitd.

With -t the image lands in containerd's image store (--address, -n), unpacked,
as nerdctl build -t does, and its ID is printed on stdout; with --output it goes
wherever buildctl would send it.`,
		Args: cobra.ExactArgs(1),
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
	fl.StringArrayVarP(&f.tags, "tag", "t", nil, "name the image and land it in containerd's image store (repeatable)")
	fl.StringVar(&f.address, "address", envOr("CONTAINERD_ADDRESS", defaultContainerdAddress), "containerd socket, for --tag")
	fl.StringVarP(&f.namespace, "namespace", "n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace, for --tag")
	fl.StringVar(&f.snapshotter, "snapshotter", "overlayfs", "snapshotter the image is unpacked into, for --tag")
	fl.StringArrayVar(&f.secrets, "secret", nil, "secret for RUN --mount=type=secret: id=ID,src=PATH or id=ID,env=VAR (buildctl syntax)")
	fl.StringArrayVar(&f.ssh, "ssh", nil, "ssh agent socket or keys for RUN --mount=type=ssh: default|ID[=SOCKET|KEY,...] (buildctl syntax)")
	fl.StringArrayVar(&f.cacheFrom, "cache-from", nil, "import build cache, e.g. type=registry,ref=REF (buildctl --import-cache syntax)")
	fl.StringArrayVar(&f.cacheTo, "cache-to", nil, "export build cache, e.g. type=registry,ref=REF,mode=max (buildctl --export-cache syntax)")
	fl.StringArrayVar(&f.allow, "allow", nil, "allow an entitlement: network.host, security.insecure")
	fl.StringVar(&f.network, "network", "", "network mode of RUN steps: default, none or host")
	fl.StringArrayVar(&f.addHosts, "add-host", nil, "add a host-to-IP mapping to RUN steps (HOST:IP)")
	addShareFlags(fl, &f.share)
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
	raw, err := build.ParseOpt(f.opts)
	if err != nil {
		return err
	}
	o, err := frontend.ParseOptions(raw)
	if err != nil {
		return errors.Wrap(err, "--opt")
	}
	for _, a := range f.buildArgs {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			v, ok = os.LookupEnv(k)
			if !ok {
				continue
			}
		}
		if o.BuildArgs == nil {
			o.BuildArgs = map[string]string{}
		}
		o.BuildArgs[k] = v
	}
	if len(f.platforms) > 0 {
		o.Platform = strings.Join(f.platforms, ",")
	}
	if f.target != "" {
		o.Target = f.target
	}
	if f.noCache {
		every := ""
		o.NoCache = &every
	}
	// The dockerui options buildx passes for the same flags.
	if f.network != "" {
		o.NetworkMode = f.network
	}
	if len(f.addHosts) > 0 {
		o.AddHosts = f.addHosts
	}
	if err := f.share.apply(o); err != nil {
		return err
	}
	if len(f.tags) > 0 && len(f.outputs) > 0 {
		return errors.New("--tag lands the image in containerd's image store; --output sends it elsewhere: give one of them")
	}
	ctxFS, err := fsutil.NewFS(path)
	if err != nil {
		return err
	}
	fileDir := path
	if f.file != "" {
		fileDir = filepath.Dir(f.file)
		o.Filename = filepath.Base(f.file)
	}
	fileFS, err := fsutil.NewFS(fileDir)
	if err != nil {
		return err
	}
	exports, err := build.ParseOutput(f.outputs)
	if err != nil {
		return err
	}
	attachables := []session.Attachable{solve.DockerAuth()}
	if len(f.secrets) > 0 {
		sp, err := build.ParseSecret(f.secrets)
		if err != nil {
			return errors.Wrap(err, "--secret")
		}
		attachables = append(attachables, sp)
	}
	if len(f.ssh) > 0 {
		configs, err := build.ParseSSH(f.ssh)
		if err != nil {
			return errors.Wrap(err, "--ssh")
		}
		sp, err := sshprovider.NewSSHAgentProvider(configs)
		if err != nil {
			return errors.Wrap(err, "--ssh")
		}
		attachables = append(attachables, sp)
	}
	if err := build.ValidateAllow(f.allow); err != nil {
		return errors.Wrap(err, "--allow")
	}
	cacheImports, err := build.ParseImportCache(f.cacheFrom)
	if err != nil {
		return errors.Wrap(err, "--cache-from")
	}
	cacheExports, err := build.ParseExportCache(f.cacheTo)
	if err != nil {
		return errors.Wrap(err, "--cache-to")
	}
	opt := client.SolveOpt{
		Exports:             exports,
		LocalMounts:         map[string]fsutil.FS{dockerui.DefaultLocalNameContext: ctxFS, dockerui.DefaultLocalNameDockerfile: fileFS},
		Session:             attachables,
		CacheImports:        cacheImports,
		CacheExports:        cacheExports,
		AllowedEntitlements: f.allow,
	}
	if err := buildopt.AddContexts(&opt, o, f.contexts); err != nil {
		return err
	}
	// On the engine, FROM finds images in containerd's image store first:
	// BuildKit's containerd worker looks there before any registry.
	c, done, eng, err := connectBuildkit(ctx, f.bk, f.address, f.namespace, f.snapshotter, false, warnTo(cmd))
	if err != nil {
		return err
	}
	defer done()
	if opt.FrontendAttrs, err = o.Attrs(); err != nil {
		return err
	}
	if len(f.tags) > 0 {
		return buildToStore(cmd, f, c, eng != nil, opt)
	}
	resp, err := solve.Run(ctx, c, opt, f.progress)
	if err != nil {
		return err
	}
	return writeResults(resp, f.metadataFile, f.iidfile)
}

// buildToStore lands the build in containerd's image store and prints the
// image ID.
func buildToStore(cmd *cobra.Command, f buildFlags, bk *client.Client, inProcess bool, opt client.SolveOpt) error {
	ctx := cmd.Context()
	cc, err := containerd.New(f.address, containerd.WithDefaultNamespace(f.namespace))
	if err != nil {
		return errors.Wrapf(err, "connecting to containerd at %s", f.address)
	}
	defer cc.Close()
	c := &commit.Client{Containerd: cc, Namespace: f.namespace, Buildkit: bk, BuildkitInProcess: inProcess, Progress: f.progress}
	res, err := c.Build(ctx, commit.BuildOptions{Tags: f.tags, Snapshotter: f.snapshotter, Solve: opt})
	if err != nil {
		return err
	}
	if err := writeResults(&client.SolveResponse{ExporterResponse: res.ExporterResponse}, f.metadataFile, f.iidfile); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), res.ImageID)
	return nil
}

func writeResults(resp *client.SolveResponse, metadataFile, iidfile string) error {
	if metadataFile != "" {
		if err := solve.WriteMetadata(metadataFile, resp.ExporterResponse); err != nil {
			return err
		}
	}
	if iidfile != "" {
		id := resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey]
		if err := os.WriteFile(iidfile, []byte(id), 0o644); err != nil {
			return err
		}
	}
	return nil
}
