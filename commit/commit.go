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
}

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
	// extracts); "" without a change set.
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
	}
	if opt.SourceDateEpoch != nil {
		fo.BuildArgs = map[string]string{"SOURCE_DATE_EPOCH": strconv.FormatInt(opt.SourceDateEpoch.Unix(), 10)}
	}
	j := &job{
		Client: c, container: opt.Container, target: tg, pause: opt.Pause, name: name,
		opts: fo, outputs: opt.Outputs, layer: opt.Layer,
		exclude: opt.Exclude, squashRoot: squashRoot, secretScan: opt.SecretScan,
	}
	if j.secretScan == "" {
		j.secretScan = SecretScanWarn
	}
	return j.run(ctx)
}
