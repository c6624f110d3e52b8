// Package container finds what a commit reads: the container (a containerd
// record, a docker container, a Kubernetes pod's container by its CRI
// labels, or a bare snapshot), the snapshot holding its filesystem and the
// image its snapshot stands on; and it locks and pauses the container while
// it is read.
package container

import (
	"context"
	"path"
	"slices"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/pkg/errors"
)

// Target is what a commit reads from containerd.
type Target struct {
	// Snapshotter and Snapshot hold the container's filesystem; an empty
	// Snapshot is a step without one (a history entry, no layer).
	Snapshotter, Snapshot string
	// Image, Manifest and Platform are the base: an image of the store
	// and its manifest whose layers the snapshot stands on; an empty
	// manifest digest is scratch.
	Image    images.Image
	Manifest ocispecs.Descriptor
	Platform ocispecs.Platform
	// CreatedBy is the container's command, for the history entry.
	CreatedBy string
	// Remote, when set, is the base image by digest in its registry: its
	// layer blobs are not in containerd's content store.
	Remote string
	// Pauser pauses the container; nil for one without a task.
	Pauser Pauser
	// Mounts are the data mounted into the container from outside its
	// snapshot: volumes and bind mounts, the runtime's own left out.
	Mounts []Mount
}

// A Mount is data mounted into a container from outside its snapshot.
type Mount struct {
	// Destination is the container path, Source the host path.
	Destination, Source string
	// Volume tells a volume (docker's named and anonymous volumes, a
	// volume store's directory) from a bind mount of a host path.
	Volume bool
}

// runtimeMounts are the destinations the runtime mounts itself.
var runtimeMounts = []string{"/proc", "/dev", "/sys", "/run/secrets", "/var/run/secrets", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}

// specMounts are the bind mounts of a container's OCI spec that are not
// the runtime's own.
func specMounts(spec *specs.Spec) []Mount {
	var out []Mount
	for _, m := range spec.Mounts {
		bind := m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
		if !bind || m.Source == "" || runtimeMount(m.Destination) {
			continue
		}
		out = append(out, Mount{
			Destination: path.Clean(m.Destination), Source: m.Source,
			// nerdctl's volume store and kubelet's pod volumes.
			Volume: strings.Contains(m.Source, "/volumes/"),
		})
	}
	return out
}

func runtimeMount(dest string) bool {
	dest = path.Clean("/" + dest)
	for _, r := range runtimeMounts {
		if dest == r || strings.HasPrefix(dest, r+"/") {
			return true
		}
	}
	return false
}

// Ref names a container of a containerd namespace, and what overrides its
// record.
type Ref struct {
	// ID is the container ID, or K8sPrefix NAMESPACE/POD[/CONTAINER].
	ID string
	// Snapshotter, Snapshot and Base name the snapshotter, the snapshot key
	// and the base image directly, for a container without a containerd
	// record (a stopped docker container); each overrides the record.
	Snapshotter, Snapshot, Base string
}

// Find reads the container record (or the overrides) of r in cc's default
// namespace ns, and finds its base. warnf, when set, is told when the
// record's image name no longer names the base.
func Find(ctx context.Context, cc *containerd.Client, ns string, r Ref, warnf func(string, ...any)) (*Target, error) {
	tg := &Target{Snapshotter: r.Snapshotter, Snapshot: r.Snapshot}
	imageRef := r.Base
	if strings.HasPrefix(r.ID, K8sPrefix) {
		id, err := k8sContainer(ctx, cc, r.ID)
		if err != nil {
			return nil, err
		}
		r.ID = id
	}
	c, err := cc.LoadContainer(ctx, r.ID)
	switch {
	case err == nil:
		info, err := c.Info(ctx)
		if err != nil {
			return nil, errors.Wrapf(err, "container %s", r.ID)
		}
		if tg.Snapshotter == "" {
			tg.Snapshotter = info.Snapshotter
		}
		if tg.Snapshot == "" {
			tg.Snapshot = info.SnapshotKey
		}
		if imageRef == "" {
			imageRef = info.Image
		}
		if spec, err := c.Spec(ctx); err == nil {
			if spec.Process != nil {
				tg.CreatedBy = strings.Join(spec.Process.Args, " ")
			}
			tg.Mounts = specMounts(spec)
		}
		if t, err := c.Task(ctx, nil); err == nil {
			tg.Pauser = taskPauser{t}
		} else if !errdefs.IsNotFound(err) {
			return nil, errors.Wrapf(err, "container %s: task", r.ID)
		}
	case errdefs.IsNotFound(err):
		if r.Snapshot == "" || r.Base == "" {
			return nil, errors.Errorf("no such container: %s (namespace %s); for a container without a containerd record give --snapshot and --base", r.ID, ns)
		}
	default:
		return nil, errors.Wrapf(err, "loading container %s", r.ID)
	}
	if tg.Snapshotter == "" {
		tg.Snapshotter = DefaultSnapshotter
	}
	if tg.Snapshot == "" {
		return nil, errors.Errorf("container %s has no snapshot", r.ID)
	}
	chain, err := parentChain(ctx, cc, tg.Snapshotter, tg.Snapshot)
	if err != nil {
		return nil, err
	}
	var hints []images.Image
	if imageRef != "" {
		img, err := cc.ImageService().Get(ctx, imageRef)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, errors.Wrapf(err, "image %s of container %s", imageRef, r.ID)
		}
		switch {
		case err == nil:
			hints = append(hints, img)
		case r.Base != "":
			// A base the user names must be there.
			return nil, errors.Wrapf(err, "--base %s", r.Base)
		default:
			hints = append(hints, images.Image{Name: imageRef})
		}
	}
	b, moved, err := findBase(ctx, cc, chain, hints, "container "+r.ID)
	if err != nil {
		return nil, err
	}
	if moved && warnf != nil {
		warnf("the name %s no longer names the image container %s was made from; committing on %s, which has its layers", imageRef, r.ID, b.image.Name)
	}
	tg.Image, tg.Manifest, tg.Platform = b.image, b.manifest, b.platform
	if tg.Remote, err = discardedBase(ctx, cc, tg.Image, tg.Manifest); err != nil {
		return nil, err
	}
	return tg, nil
}

// DefaultSnapshotter is the snapshotter of a container that names none,
// containerd's default.
const DefaultSnapshotter = "overlayfs"

// FindStep finds the base of a builder step's snapshot (empty: a step
// without a layer) whose parent image is named parent (empty: scratch).
// The parent is checked against the layers the snapshot stands on, as a
// container's base is; a step without a snapshot is on the parent as
// named.
func FindStep(ctx context.Context, cc *containerd.Client, parent, snapshotter, snapshot string) (*Target, error) {
	tg := &Target{Snapshotter: snapshotter, Snapshot: snapshot, Platform: platforms.Normalize(platforms.DefaultSpec())}
	if tg.Snapshotter == "" {
		tg.Snapshotter = DefaultSnapshotter
	}
	var hints []images.Image
	if parent != "" {
		img, err := cc.ImageService().Get(ctx, parent)
		if err != nil {
			return nil, errors.Wrapf(err, "parent image %s", parent)
		}
		hints = append(hints, img)
	}
	switch {
	case snapshot != "":
		chain, err := parentChain(ctx, cc, tg.Snapshotter, snapshot)
		if err != nil {
			return nil, err
		}
		if chain != "" || parent != "" {
			b, _, err := findBase(ctx, cc, chain, hints, "step snapshot "+snapshot)
			if err != nil {
				return nil, err
			}
			tg.Image, tg.Manifest, tg.Platform = b.image, b.manifest, b.platform
		}
	case parent != "":
		var err error
		if tg.Manifest, tg.Platform, err = PlatformManifest(ctx, cc.ContentStore(), hints[0].Target, platforms.DefaultSpec()); err != nil {
			return nil, errors.Wrapf(err, "parent image %s", parent)
		}
	}
	return tg, nil
}

// Sanitize turns s into a name of lower-case letters, digits and dashes,
// for a lock file, a store or a local source named after a container.
func Sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// discardedBase returns, when a layer blob of the base manifest m is not in
// containerd's content store (containerd's discard_unpacked_layers, as on
// EKS and GKE nodes, drops them once unpacked), the image's reference by
// digest in its registry, from where BuildKit fetches them instead; "" when
// all are there.
func discardedBase(ctx context.Context, cc *containerd.Client, img images.Image, m ocispecs.Descriptor) (string, error) {
	man, err := images.Manifest(ctx, cc.ContentStore(), m, platforms.All)
	if err != nil {
		return "", errors.Wrapf(err, "image %s", img.Name)
	}
	missing := ""
	for _, l := range man.Layers {
		if _, err := cc.ContentStore().Info(ctx, l.Digest); errdefs.IsNotFound(err) {
			missing = l.Digest.String()
			break
		} else if err != nil {
			return "", errors.Wrapf(err, "layer %s of image %s", l.Digest, img.Name)
		}
	}
	if missing == "" {
		return "", nil
	}
	named, err := reference.ParseNormalizedNamed(img.Name)
	if err != nil {
		return "", errors.Errorf("image %s: its layer %s is not in containerd's content store (discarded after unpacking?), and its name names no registry to fetch it from", img.Name, missing)
	}
	withDigest, err := reference.WithDigest(reference.TrimNamed(named), m.Digest)
	if err != nil {
		return "", err
	}
	return withDigest.String(), nil
}

// SquashBase resolves --squash-since ref (normalised: name): an image in
// the store whose layers are the first layers of tg's base.
func SquashBase(ctx context.Context, cc *containerd.Client, ref, name string, tg *Target) (ocispecs.Descriptor, error) {
	img, err := cc.ImageService().Get(ctx, name)
	if err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "--squash-since %s", ref)
	}
	m, _, err := PlatformManifest(ctx, cc.ContentStore(), img.Target, platforms.DefaultSpec())
	if err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "--squash-since %s", ref)
	}
	since, err := diffIDs(ctx, cc, m)
	if err != nil {
		return ocispecs.Descriptor{}, errors.Wrapf(err, "--squash-since %s", ref)
	}
	var of []digest.Digest
	if tg.Manifest.Digest != "" {
		if of, err = diffIDs(ctx, cc, tg.Manifest); err != nil {
			return ocispecs.Descriptor{}, err
		}
	}
	if len(since) > len(of) || !slices.Equal(since, of[:len(since)]) {
		return ocispecs.Descriptor{}, errors.Errorf("--squash-since %s: it is not an ancestor of the container's image %s (its %d layers are not the first layers of the image's %d)", ref, tg.Image.Name, len(since), len(of))
	}
	return m, nil
}

// diffIDs are the layers of the image whose manifest is m.
func diffIDs(ctx context.Context, cc *containerd.Client, m ocispecs.Descriptor) ([]digest.Digest, error) {
	_, ids, err := configOf(ctx, cc.ContentStore(), m)
	return ids, err
}
