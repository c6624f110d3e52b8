// Package commit is the flow of a commit, top to bottom: find the container
// and its base (package container), lock and pause it while its change set
// is read (package changeset), solve the commit frontend on BuildKit
// (packages frontend and internal/solve), and land the image in
// containerd's image store or any BuildKit output (package exporter). It
// fills the role of moby's CommitImage and, for builders, of its
// CommitBuildStep; Build lands any build of the frontend in the store.
package commit

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
	"github.com/commit-frontend/commit-frontend/container"
	"github.com/commit-frontend/commit-frontend/exporter"
	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	"github.com/commit-frontend/commit-frontend/internal/solve"
	bkclient "github.com/moby/buildkit/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// Options describe one commit.
type Options struct {
	// Container is the container: its containerd ID, k8s://NAMESPACE/POD[/CONTAINER],
	// or with Docker a docker name, ID or unique ID prefix.
	Container string
	// Snapshotter, Snapshot and Base name the snapshotter, the snapshot key
	// and the base image directly, for a container without a containerd
	// record (a stopped docker container); each overrides the record.
	Snapshotter, Snapshot, Base string
	// Docker tells that Container is a container of the Client's Docker
	// Engine: the image config is the one docker commit writes.
	Docker bool

	// Ref is REPOSITORY[:TAG] for the image record; empty for a dangling image.
	Ref string
	// Author and Message go into the history entry.
	Author, Message string
	// Changes are `docker commit --change` instructions.
	Changes []string
	// Pause pauses a running container while its filesystem is read.
	Pause bool
	// PauseBrief, with Pause, reads the changes of a running container
	// while it runs, copying its files aside, and pauses it only to read
	// again what changed since: the inodes, sizes or ctimes that moved,
	// and the files the container maps writable (whose writes need not
	// move a ctime). The image is the container at the pause.
	PauseBrief bool
	// Layer is how the new layer is written: compression, level,
	// file times clamped to SourceDateEpoch.
	Layer exporter.Layer
	// Outputs, when set, send the image there (buildctl's --output forms)
	// instead of into containerd's image store.
	Outputs []bkclient.ExportEntry
	// SquashSince, when set, names an image in the store whose layers are
	// the first layers of the container's image: they stay, and everything
	// above them plus the container's changes becomes one layer. The
	// squashed history entries stay, marked empty_layer.
	SquashSince string
	// Squash squashes the whole filesystem into one layer.
	Squash bool
	// Provenance, when set ("mode=min" or "mode=max"), attaches BuildKit's
	// SLSA provenance attestation to the image.
	Provenance string
	// Exclude are .dockerignore-style patterns on container paths: what
	// matches is neither added nor removed by the commit.
	Exclude []string
	// SourceDateEpoch, when set, is the time of the image and its new
	// history entry (SOURCE_DATE_EPOCH).
	SourceDateEpoch *time.Time
	// UnsetEnv and UnsetLabels are name patterns (AWS_*, io.kubernetes.*)
	// of environment variables and labels the image's config leaves out.
	UnsetEnv, UnsetLabels []string
	// Annotations go on the image manifest.
	Annotations map[string]string
	// OmitHistory leaves the image's history one blank entry per layer.
	OmitHistory bool
	// SecretScan is what a credential found in the change set does:
	// SecretScanWarn (also ""), SecretScanFail or SecretScanOff.
	SecretScan string
	// MaxLayers, when above 0, bounds the image's layers: when the
	// container's image has MaxLayers or more, the layers above its first
	// base (the image of the namespace with the fewest layers that are its
	// first ones), or else above its first MaxLayers/2, are squashed into
	// one with the changes, as SquashSince would squash them; the commits
	// after it have room again (DefaultMaxLayers keeps docker able to run
	// the image).
	MaxLayers int
	// IncludeVolumes commits the data of the container's volumes and bind
	// mounts at their mount points, and drops their VOLUME declarations
	// from the config: AllVolumes ("*") for every volume (never a bind
	// mount of a host path), or the mount points to include, binds too.
	IncludeVolumes []string
	// MaxLayerSize, above 0, splits the changes into layers of at most
	// that many bytes of file contents each (a larger file is a layer of
	// its own); the first layer's history entry carries the author and
	// message, the others say they are its parts.
	MaxLayerSize int64
}

// AllVolumes as Options.IncludeVolumes includes every volume.
const AllVolumes = "*"

// DefaultMaxLayers is the most layers the commit command lets an image
// have: moby refuses to register an image of more (its layer store's
// maxLayerDepth, "max depth exceeded").
const DefaultMaxLayers = 125

// The values of Options.SecretScan.
const (
	// SecretScanWarn names each credential found on stderr (Client.Warnf)
	// and in Result.Secrets, and commits.
	SecretScanWarn = "warn"
	// SecretScanFail refuses the commit, naming each credential found,
	// before anything is written.
	SecretScanFail = "fail"
	// SecretScanOff reads no file to look.
	SecretScanOff = "off"
)

// check refuses bad options before anything is paused or written.
func (opt *Options) check() error {
	if strings.TrimSpace(opt.Container) == "" {
		return errors.Errorf("the container name is empty (%q): name a container by its ID, or k8s://NAMESPACE/POD[/CONTAINER]", opt.Container)
	}
	if _, err := commitfile.ParseChangeFlags(opt.Changes); err != nil {
		return err
	}
	if err := opt.Layer.Validate(opt.Outputs); err != nil {
		return err
	}
	if err := (&changeset.Writer{}).Exclude(opt.Exclude); err != nil {
		return err
	}
	if opt.Layer.RewriteTimestamp && opt.SourceDateEpoch == nil {
		return errors.New("--rewrite-timestamp needs --source-date-epoch (or SOURCE_DATE_EPOCH)")
	}
	if opt.MaxLayerSize < 0 {
		return errors.Errorf("--max-layer-size %d: want a size in bytes", opt.MaxLayerSize)
	}
	if opt.MaxLayerSize > 0 && (opt.Squash || opt.SquashSince != "") {
		return errors.New("--max-layer-size and --squash/--squash-since exclude each other: a squash makes one layer")
	}
	if opt.MaxLayers < 0 {
		return errors.Errorf("--max-layers %d: want a number of layers, or 0 for no bound", opt.MaxLayers)
	}
	if opt.Squash && opt.SquashSince != "" {
		return errors.New("--squash and --squash-since exclude each other")
	}
	switch opt.SecretScan {
	case "", SecretScanWarn, SecretScanFail, SecretScanOff:
	default:
		return errors.Errorf("--secret-scan=%s: want warn, fail or off", opt.SecretScan)
	}
	if err := imageconfig.CheckPatterns("--unset-env", opt.UnsetEnv); err != nil {
		return err
	}
	if err := imageconfig.CheckPatterns("--unset-label", opt.UnsetLabels); err != nil {
		return err
	}
	for k := range opt.Annotations {
		if err := frontend.CheckAnnotation(k); err != nil {
			return errors.Wrap(err, "--annotation")
		}
	}
	switch opt.Provenance {
	case "", "mode=min", "mode=max":
	default:
		return errors.Errorf("--provenance=%s: want mode=min or mode=max", opt.Provenance)
	}
	return nil
}

// Result is what a commit made.
type Result struct {
	// ImageID is the digest of the image config, docker's image ID.
	ImageID digest.Digest
	// Manifest is the image manifest's descriptor.
	Manifest ocispecs.Descriptor
	// Name is the image record's name in containerd ("" with Outputs).
	Name string
	// ChangeSet describes what crossed the session.
	ChangeSet changeset.Manifest
	// Exported is the number of bytes the export wrote into containerd's
	// content store: new blobs only, never the base's layers.
	Exported int64
	// Fetched is the part of Exported read straight from buildkitd's
	// content store (blobs of exporter.DirectMin bytes or more) instead of
	// received through the session.
	Fetched int64
	// ExporterResponse is BuildKit's exporter response.
	ExporterResponse map[string]string
	// Paused is how long the container was paused.
	Paused time.Duration
	// Transfer is how the change set crossed the session: "tree" (the
	// entries themselves, whiteouts for removals) or "tar" (a tar BuildKit
	// extracts); or how the engine in this process wrote it in place:
	// "link" (hard links to the container's files) or "staged" (from the
	// commit's own copy of a container that went on running); "" without
	// a change set.
	Transfer string
	// Secrets are the credentials the scan found in the change set.
	Secrets []changeset.Secret
}

// land fills in what the landing made.
func (r *Result) land(l *exporter.Landed) {
	r.Manifest, r.Name, r.Exported, r.Fetched = l.Manifest, l.Name, l.Written, l.Fetched
}

// Commit commits a container.
func (c *Client) Commit(ctx context.Context, opt Options) (*Result, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	if err := opt.check(); err != nil {
		return nil, err
	}
	name, err := exporter.ImageName(opt.Ref)
	if err != nil {
		return nil, err
	}
	if err := solve.CheckProgress(c.Progress); err != nil {
		return nil, err
	}
	// Find the container and its base.
	fo := &frontend.Options{
		Changes: opt.Changes, Author: opt.Author, Message: opt.Message, Provenance: opt.Provenance,
		UnsetEnv: opt.UnsetEnv, UnsetLabels: opt.UnsetLabels, Annotations: opt.Annotations, OmitHistory: opt.OmitHistory,
	}
	var tg *container.Target
	if opt.Docker {
		if c.Docker == nil {
			return nil, errors.New("a commit of a docker container needs the Docker Engine's client")
		}
		var cfg *dockerspec.DockerOCIImageConfig
		if tg, cfg, err = container.FindDocker(ctx, c.Docker, c.Containerd, opt.Container, opt.Snapshotter, opt.Changes); err != nil {
			return nil, err
		}
		// The changes are in the config already. The layer is computed
		// by the walking differ, docker commit's.
		fo.Changes, fo.ImageConfig = nil, cfg
		fo.LayerDiffer = frontend.DifferWalking
	} else {
		ref := container.Ref{ID: opt.Container, Snapshotter: opt.Snapshotter, Snapshot: opt.Snapshot, Base: opt.Base}
		if tg, err = container.Find(ctx, c.Containerd, c.Namespace, ref, c.Warnf); err != nil {
			return nil, err
		}
	}
	fo.CreatedBy = tg.CreatedBy
	var squashRoot ocispecs.Descriptor
	squashKeep := 0
	switch {
	case opt.Squash:
		fo.SquashSince = frontend.SquashScratch
	case opt.SquashSince != "":
		name, err := exporter.ImageName(opt.SquashSince)
		if err != nil {
			return nil, errors.Wrap(err, "--squash-since")
		}
		if squashRoot, err = container.SquashBase(ctx, c.Containerd, opt.SquashSince, name, tg); err != nil {
			return nil, err
		}
		fo.SquashSince, fo.SquashSinceName = squashContext, name
	case opt.MaxLayers > 0 && tg.Manifest.Digest != "":
		n, err := container.Layers(ctx, c.Containerd.ContentStore(), tg.Manifest)
		if err != nil {
			return nil, errors.Wrapf(err, "the layers of %s", tg.Image.Name)
		}
		if n < opt.MaxLayers {
			break
		}
		if tg.Remote != "" {
			c.warnf("the image would have %d layers, more than --max-layers %d, but its base's layers were discarded after unpacking: nothing is squashed", n+1, opt.MaxLayers)
			break
		}
		if opt.MaxLayerSize > 0 {
			c.warnf("--max-layer-size does not apply to this commit: --max-layers squashes its changes into one layer")
		}
		// Everything above the base the chain started from becomes one
		// layer: the next commits have room again. Without such a base,
		// or with one too deep, the first half of the layers stays (the
		// first N-1 at most).
		baseName, baseManifest, keep, err := container.FirstBase(ctx, c.Containerd, tg)
		if err != nil {
			return nil, errors.Wrap(err, "--max-layers")
		}
		if keep > 0 && keep < opt.MaxLayers-1 {
			c.warnf("the image would have %d layers, more than --max-layers %d: the %d above its first base %s are squashed into one with the changes", n+1, opt.MaxLayers, n-keep, baseName)
			squashRoot = baseManifest
			fo.SquashSince, fo.SquashSinceName = squashContext, baseName
			break
		}
		keep = max(opt.MaxLayers/2, 1)
		if opt.MaxLayers == 1 {
			keep = 0
		}
		c.warnf("the image would have %d layers, more than --max-layers %d: the %d above the first %d are squashed into one with the changes", n+1, opt.MaxLayers, n-keep, keep)
		if keep == 0 {
			fo.SquashSince = frontend.SquashScratch
			break
		}
		squashKeep = keep
		fo.SquashSince, fo.SquashSinceName = squashContext, fmt.Sprintf("the first %d (--max-layers %d)", keep, opt.MaxLayers)
	}
	volumes, err := includedMounts(tg.Mounts, opt.IncludeVolumes, opt.Container)
	if err != nil {
		return nil, err
	}
	for _, m := range volumes {
		fo.UnsetVolumes = append(fo.UnsetVolumes, m.Destination)
	}
	if opt.SourceDateEpoch != nil {
		fo.BuildArgs = map[string]string{"SOURCE_DATE_EPOCH": strconv.FormatInt(opt.SourceDateEpoch.Unix(), 10)}
	}
	j := &job{
		Client: c, container: opt.Container, target: tg, pause: opt.Pause, name: name,
		opts: fo, outputs: opt.Outputs, layer: opt.Layer,
		exclude: opt.Exclude, squashRoot: squashRoot, squashKeep: squashKeep, secretScan: opt.SecretScan,
		volumes: volumes, maxLayerSize: opt.MaxLayerSize, brief: opt.Pause && opt.PauseBrief,
	}
	if j.secretScan == "" {
		j.secretScan = SecretScanWarn
	}
	return j.run(ctx)
}

// includedMounts are the mounts of the container that include names: every
// volume for AllVolumes, else the mounts at the paths named.
func includedMounts(mounts []container.Mount, include []string, ctr string) ([]container.Mount, error) {
	if len(include) == 0 {
		return nil, nil
	}
	if slices.Contains(include, AllVolumes) {
		var out []container.Mount
		for _, m := range mounts {
			if m.Volume {
				out = append(out, m)
			}
		}
		return out, nil
	}
	var out []container.Mount
	for _, p := range include {
		dest := path.Clean("/" + strings.TrimSpace(p))
		i := slices.IndexFunc(mounts, func(m container.Mount) bool { return m.Destination == dest })
		if i < 0 {
			have := "none"
			for i, m := range mounts {
				if i == 0 {
					have = m.Destination
				} else {
					have += ", " + m.Destination
				}
			}
			return nil, errors.Errorf("--include-volumes %s: container %s has no volume or bind mount there (its mounts: %s)", p, ctr, have)
		}
		out = append(out, mounts[i])
	}
	return out, nil
}
