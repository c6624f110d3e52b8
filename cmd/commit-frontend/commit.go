package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/commit"
	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/engine"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	containerd "github.com/containerd/containerd/v2/client"
	units "github.com/docker/go-units"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/cmd/buildctl/build"
	"github.com/moby/buildkit/session"
	dockerclient "github.com/moby/moby/client"
	"github.com/pkg/errors"
	"github.com/spf13/cobra"
)

// defaultContainerdAddress is containerd's default socket.
const defaultContainerdAddress = "/run/containerd/containerd.sock"

type commitFlags struct {
	author, message  string
	changes          []string
	pause            pauseFlag
	address          string
	namespace        string
	bk               solve.ConnectOpt
	compression      string
	compressionLevel int
	outputs          []string
	iidfile          string
	metadataFile     string
	progress         string
	snapshotter      string
	snapshot         string
	base             string
	docker           bool
	noPause          bool
	excludes         []string
	sourceDateEpoch  string
	rewriteTimestamp bool
	squash           bool
	squashSince      string
	provenance       string
	share            shareFlags
	secretScan       string
	maxLayers        int
	includeVolumes   []string
	maxLayerSize     string
}

func newCommitCommand() *cobra.Command {
	var f commitFlags
	cmd := &cobra.Command{
		Use:   "commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
		Short: "Commit a containerd container into the containerd image store, through BuildKit",
		Long: `Commit a container's filesystem changes as a new image, like docker commit.

The change set of the container's snapshot is sent to buildkitd, which computes
the layer; the image lands in containerd's image store in the container's
namespace (or goes to --output). The new image ID is printed on stdout.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := ""
			if len(args) == 2 {
				ref = args[1]
			}
			return runCommit(cmd, f, args[0], ref)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.author, "author", "a", "", `author (e.g., "John Hannibal Smith <hannibal@a-team.com>")`)
	fl.StringVarP(&f.message, "message", "m", "", "commit message")
	fl.StringArrayVarP(&f.changes, "change", "c", nil, "apply a Dockerfile instruction to the image (CMD ENTRYPOINT ENV EXPOSE HEALTHCHECK LABEL ONBUILD STOPSIGNAL USER VOLUME WORKDIR)")
	f.pause = pauseFlag{pause: true}
	fl.VarP(&f.pause, "pause", "p", "pause the container while its changes are read: true, false, or brief (read them while it runs, then pause it only to read again what changed since)")
	fl.Lookup("pause").NoOptDefVal = "true"
	fl.BoolVar(&f.noPause, "no-pause", false, "do not pause the container (docker v29's spelling of --pause=false)")
	fl.StringArrayVar(&f.excludes, "exclude", nil, "leave out container paths matching this .dockerignore-style pattern (repeatable): neither added nor removed")
	fl.StringVar(&f.sourceDateEpoch, "source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "time of the image and its history entry, in seconds since 1970 ($SOURCE_DATE_EPOCH)")
	fl.BoolVar(&f.rewriteTimestamp, "rewrite-timestamp", false, "clamp the new layer's file times to --source-date-epoch")
	fl.StringVar(&f.provenance, "provenance", "", "attach a SLSA provenance attestation: mode=min or mode=max")
	fl.Lookup("provenance").NoOptDefVal = "mode=min"
	fl.BoolVar(&f.squash, "squash", false, "one layer holding the whole filesystem; the history stays, its entries marked empty_layer")
	fl.StringVar(&f.squashSince, "squash-since", "", "keep IMAGE's layers and squash everything above them, with the container's changes, into one layer")
	fl.StringVar(&f.address, "address", envOr("CONTAINERD_ADDRESS", defaultContainerdAddress), "containerd address ($CONTAINERD_ADDRESS)")
	fl.StringVarP(&f.namespace, "namespace", "n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace ($CONTAINERD_NAMESPACE): moby for docker, default for nerdctl, k8s.io for Kubernetes")
	addBuildkitFlags(fl, &f.bk)
	fl.StringVar(&f.compression, "compression", "", "new layer compression: gzip, zstd, estargz, uncompressed (default gzip)")
	fl.IntVar(&f.compressionLevel, "compression-level", 0, "compression level")
	fl.StringArrayVarP(&f.outputs, "output", "o", nil, "send the image elsewhere instead of the image store, in buildctl syntax (type=oci,dest=out.tar; type=image,name=REF,push=true)")
	fl.StringVar(&f.iidfile, "iidfile", "", "write the image ID to this file")
	fl.StringVar(&f.metadataFile, "metadata-file", "", "write the build result metadata to this file")
	fl.StringVar(&f.progress, "progress", "quiet", "progress output on stderr: auto, plain, tty, quiet, rawjson")
	fl.StringVar(&f.snapshotter, "snapshotter", "", "snapshotter of the container's snapshot (default: the container's, else overlayfs)")
	fl.StringVar(&f.snapshot, "snapshot", "", "snapshot key, for a container without a containerd record (docker keeps it under the container ID)")
	fl.StringVar(&f.base, "base", "", "base image, for a container without a containerd record")
	addShareFlags(fl, &f.share)
	fl.StringSliceVar(&f.includeVolumes, "include-volumes", nil, "commit the data of the container's volumes at their mount points, and drop their VOLUME declarations; =DEST,... names the mount points, bind mounts of host paths too (without a list only volumes are read)")
	fl.Lookup("include-volumes").NoOptDefVal = commit.AllVolumes
	fl.StringVar(&f.maxLayerSize, "max-layer-size", "", "split the changes into layers of at most SIZE of file contents each (e.g. 2GiB, 256MiB); a larger file is a layer of its own")
	fl.IntVar(&f.maxLayers, "max-layers", commit.DefaultMaxLayers, "when the image would have more layers, squash those above its first base (else above its first N/2) into one with the changes, history kept as with --squash-since (0: no bound; docker refuses images of more than 125)")
	fl.StringVar(&f.secretScan, "secret-scan", commit.SecretScanWarn, "credential files in the changes (SSH, PGP and PEM private keys, registry, git, cloud, npm and PyPI credentials, shell histories): warn names each on stderr, fail refuses the commit, off does not look")
	fl.BoolVar(&f.docker, "docker", false, "CONTAINER is a Docker Engine container (name, ID or unique ID prefix) at $DOCKER_HOST; the image is what docker commit makes, through dockerd's own BuildKit unless --addr or $BUILDKIT_HOST names another")
	return cmd
}

func runCommit(cmd *cobra.Command, f commitFlags, ctr, ref string) error {
	ctx := cmd.Context()
	if f.noPause {
		if cmd.Flags().Changed("pause") && f.pause.pause {
			return errors.Errorf("--no-pause and --pause=%s contradict each other", f.pause.String())
		}
		f.pause = pauseFlag{}
	}
	var epoch *time.Time
	if f.sourceDateEpoch != "" {
		sec, err := strconv.ParseInt(f.sourceDateEpoch, 10, 64)
		if err != nil || sec < 0 {
			return errors.Errorf("--source-date-epoch=%s: want a number of seconds since 1970", f.sourceDateEpoch)
		}
		t := time.Unix(sec, 0).UTC()
		epoch = &t
	}
	outputs, err := build.ParseOutput(f.outputs)
	if err != nil {
		return errors.Wrap(err, "--output")
	}
	annotations, err := f.share.parse()
	if err != nil {
		return err
	}
	var maxLayerSize int64
	if f.maxLayerSize != "" {
		if maxLayerSize, err = units.RAMInBytes(f.maxLayerSize); err != nil || maxLayerSize <= 0 {
			return errors.Errorf("--max-layer-size %q: want a size such as 2GiB or 256MiB", f.maxLayerSize)
		}
	}
	// A level given is honoured, 0 too (gzip's "store"); none given is
	// the compression's default.
	var level *int
	if cmd.Flags().Changed("compression-level") {
		level = &f.compressionLevel
	}
	var dc *dockerclient.Client
	if f.docker {
		if dc, err = dockerClient(); err != nil {
			return errors.Wrap(err, "docker client")
		}
		defer dc.Close()
		dcd, err := container.CheckDockerStore(ctx, dc)
		if err != nil {
			return err
		}
		// dockerd says where its containerd and namespace are, unless
		// the user said otherwise.
		if !cmd.Flags().Changed("namespace") && os.Getenv("CONTAINERD_NAMESPACE") == "" {
			f.namespace = dcd.Namespace
		}
		if !cmd.Flags().Changed("address") && os.Getenv("CONTAINERD_ADDRESS") == "" && dcd.Address != "" {
			f.address = dcd.Address
		}
		if f.snapshotter == "" {
			f.snapshotter = dcd.Snapshotter
		}
	}
	cc, err := containerd.New(f.address, containerd.WithDefaultNamespace(f.namespace))
	if err != nil {
		return errors.Wrapf(err, "connecting to containerd at %s", f.address)
	}
	defer cc.Close()
	if _, err := cc.Version(ctx); err != nil {
		return containerdUnanswered(f.address, err)
	}
	warnf := warnTo(cmd)
	var bk *bkclient.Client
	var eng *engine.Engine
	// A docker container with no buildkitd named is committed through
	// dockerd's own BuildKit, or, where dockerRouteEnv says so, by the
	// engine in this process on dockerd's containerd.
	dockerRoute := f.docker && f.bk.Addr == "" && os.Getenv("BUILDKIT_HOST") == ""
	dockerEngine := dockerRoute && os.Getenv(dockerRouteEnv) == dockerRouteEngine
	dockerExport := dockerRoute && !dockerEngine
	switch {
	case dockerExport:
		if bk, err = solve.ConnectDocker(ctx, dc); err != nil {
			return errors.Wrapf(err, "connecting to dockerd's BuildKit at %s", dc.DaemonHost())
		}
		defer bk.Close()
	case dockerEngine:
		if eng, err = startEngine(ctx, f.address, f.namespace, f.snapshotter, false, warnf); err != nil {
			return errors.Wrapf(err, "%s=%s: BuildKit's engine could not start in this process on docker's containerd", dockerRouteEnv, dockerRouteEngine)
		}
		bk = eng.Client()
		defer eng.Close()
	default:
		var done func() error
		if bk, done, eng, err = connectBuildkit(ctx, f.bk, f.address, f.namespace, f.snapshotter, true, warnf); err != nil {
			return err
		}
		defer done()
	}
	c := &commit.Client{
		Containerd:        cc,
		Namespace:         f.namespace,
		Buildkit:          bk,
		BuildkitIsDocker:  dockerExport,
		BuildkitInProcess: eng != nil,
		Docker:            dc,
		Session:           []session.Attachable{solve.DockerAuth()},
		Progress:          f.progress,
		Warnf:             warnf,
	}
	if eng != nil {
		c.Trees = eng
		c.BuildkitReady = func() error { return engineReady(eng) }
	}
	res, err := c.Commit(ctx, commit.Options{
		Container:       ctr,
		Snapshotter:     f.snapshotter,
		Snapshot:        f.snapshot,
		Base:            f.base,
		Docker:          f.docker,
		Ref:             ref,
		Author:          f.author,
		Message:         f.message,
		Changes:         f.changes,
		Pause:           f.pause.pause,
		PauseBrief:      f.pause.brief,
		Layer:           exporter.Layer{Compression: f.compression, Level: level, RewriteTimestamp: f.rewriteTimestamp},
		Outputs:         outputs,
		Exclude:         f.excludes,
		Squash:          f.squash,
		Provenance:      f.provenance,
		SquashSince:     f.squashSince,
		SourceDateEpoch: epoch,
		UnsetEnv:        f.share.unsetEnv,
		UnsetLabels:     f.share.unsetLabels,
		Annotations:     annotations,
		OmitHistory:     f.share.omitHistory,
		SecretScan:      f.secretScan,
		MaxLayers:       f.maxLayers,
		IncludeVolumes:  f.includeVolumes,
		MaxLayerSize:    maxLayerSize,
	})
	if err != nil {
		return err
	}
	if f.metadataFile != "" {
		md := maps.Clone(res.ExporterResponse)
		if dt, err := json.Marshal(res.ChangeSet); err == nil {
			md["commit-frontend.changeset"] = base64.StdEncoding.EncodeToString(dt)
		}
		md["commit-frontend.exported-bytes"] = strconv.FormatInt(res.Exported, 10)
		md["commit-frontend.fetched-bytes"] = strconv.FormatInt(res.Fetched, 10)
		md["commit-frontend.sockets-skipped"] = strconv.Itoa(res.ChangeSet.Sockets)
		md["commit-frontend.excluded"] = strconv.Itoa(res.ChangeSet.Excluded)
		md["commit-frontend.whiteout-names-skipped"] = strconv.Itoa(res.ChangeSet.WhiteoutNames)
		md["commit-frontend.paused"] = res.Paused.String()
		md["commit-frontend.transfer"] = res.Transfer
		md["commit-frontend.secrets-found"] = strconv.Itoa(len(res.Secrets))
		if err := solve.WriteMetadata(f.metadataFile, md); err != nil {
			return err
		}
	}
	id := res.ImageID
	if f.docker && res.Manifest.Digest != "" {
		// docker's image ID in its containerd image store is the
		// manifest's digest: what docker commit prints and docker images
		// shows.
		id = res.Manifest.Digest
	}
	if f.iidfile != "" {
		if err := os.WriteFile(f.iidfile, []byte(id.String()), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintln(cmd.OutOrStdout(), id)
	return nil
}

// dockerRouteEnv set to dockerRouteEngine commits docker containers with
// BuildKit's engine in this process, on dockerd's containerd, instead of
// through dockerd's own BuildKit: the same image (TestDockerCommit), faster
// for large changes (docs/benchmarks.md), but docker then reports no image
// events of its own (dockerd's BuildKit reports create and tag, as docker
// commit does).
const (
	dockerRouteEnv    = "COMMIT_FRONTEND_DOCKER_ROUTE"
	dockerRouteEngine = "engine"
)

func envOr(k, def string) string {
	if v := strings.TrimSpace(os.Getenv(k)); v != "" {
		return v
	}
	return def
}

// pauseFlag is --pause: true, false or brief.
type pauseFlag struct{ pause, brief bool }

func (p *pauseFlag) String() string {
	if p.brief {
		return "brief"
	}
	return strconv.FormatBool(p.pause)
}

func (p *pauseFlag) Set(s string) error {
	if s == "brief" {
		p.pause, p.brief = true, true
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return errors.Errorf("%q: want true, false or brief", s)
	}
	p.pause, p.brief = b, false
	return nil
}

func (p *pauseFlag) Type() string { return "true|false|brief" }
