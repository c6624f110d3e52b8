package commit

import (
	"context"
	"os"
	"slices"
	"strings"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/worker/label"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"

	"github.com/commit-frontend/commit-frontend/exporter"
)

// target is what the commit reads from containerd.
type target struct {
	snapshotter string
	snapshot    string
	image       images.Image
	manifest    ocispecs.Descriptor
	platform    ocispecs.Platform
	createdBy   string
	// remote, when set, is the base image by digest in its registry: its
	// layer blobs are not in containerd's content store.
	remote string
	// pauser pauses the container; nil for one without a task.
	pauser pauser
}

// resolve reads the container record (or the overrides) and its image.
func resolve(ctx context.Context, opt Options) (*target, error) {
	cc := opt.Containerd
	tg := &target{snapshotter: opt.Snapshotter, snapshot: opt.Snapshot}
	imageRef := opt.Base
	if strings.HasPrefix(opt.Container, K8sPrefix) {
		id, err := k8sContainer(ctx, cc, opt.Container)
		if err != nil {
			return nil, err
		}
		opt.Container = id
	}
	c, err := cc.LoadContainer(ctx, opt.Container)
	switch {
	case err == nil:
		info, err := c.Info(ctx)
		if err != nil {
			return nil, errors.Wrapf(err, "container %s", opt.Container)
		}
		if tg.snapshotter == "" {
			tg.snapshotter = info.Snapshotter
		}
		if tg.snapshot == "" {
			tg.snapshot = info.SnapshotKey
		}
		if imageRef == "" {
			imageRef = info.Image
		}
		if spec, err := c.Spec(ctx); err == nil && spec.Process != nil {
			tg.createdBy = strings.Join(spec.Process.Args, " ")
		}
		if t, err := c.Task(ctx, nil); err == nil {
			tg.pauser = taskPauser{t}
		} else if !errdefs.IsNotFound(err) {
			return nil, errors.Wrapf(err, "container %s: task", opt.Container)
		}
	case errdefs.IsNotFound(err):
		if opt.Snapshot == "" || opt.Base == "" {
			return nil, errors.Errorf("no such container: %s (namespace %s); for a container without a containerd record give --snapshot and --base", opt.Container, opt.Namespace)
		}
	default:
		return nil, errors.Wrapf(err, "loading container %s", opt.Container)
	}
	if tg.snapshotter == "" {
		tg.snapshotter = "overlayfs"
	}
	if tg.snapshot == "" {
		return nil, errors.Errorf("container %s has no snapshot", opt.Container)
	}
	chain, err := parentChain(ctx, cc, tg.snapshotter, tg.snapshot)
	if err != nil {
		return nil, err
	}
	var hints []images.Image
	if imageRef != "" {
		img, err := cc.ImageService().Get(ctx, imageRef)
		if err != nil && !errdefs.IsNotFound(err) {
			return nil, errors.Wrapf(err, "image %s of container %s", imageRef, opt.Container)
		}
		switch {
		case err == nil:
			hints = append(hints, img)
		case opt.Base != "":
			// A base the user names must be there.
			return nil, errors.Wrapf(err, "--base %s", opt.Base)
		default:
			hints = append(hints, images.Image{Name: imageRef})
		}
	}
	what := "container " + opt.Container
	b, moved, err := findBase(ctx, cc, chain, hints, what)
	if err != nil {
		return nil, err
	}
	if moved && opt.Warnf != nil {
		opt.Warnf("the name %s no longer names the image container %s was made from; committing on %s, which has its layers", imageRef, opt.Container, b.image.Name)
	}
	tg.image, tg.manifest, tg.platform = b.image, b.manifest, b.platform
	if tg.remote, err = discardedBase(ctx, cc, tg.image, tg.manifest); err != nil {
		return nil, err
	}
	return tg, nil
}

// imageName normalises REPOSITORY[:TAG] as docker and nerdctl store it.
func imageName(ref string) (string, error) {
	if ref == "" {
		return "", nil
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", errors.Wrapf(err, "invalid reference %q", ref)
	}
	if _, ok := named.(reference.Digested); ok {
		return "", errors.Errorf("invalid reference %q: a commit cannot be named by digest", ref)
	}
	return reference.TagNameOnly(named).String(), nil
}

func sanitizeID(s string) string {
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

// platformManifest picks the manifest of target for this machine's platform.
func platformManifest(ctx context.Context, cc *containerd.Client, target ocispecs.Descriptor) (ocispecs.Descriptor, ocispecs.Platform, error) {
	return exporter.PlatformManifest(ctx, cc.ContentStore(), target, platforms.Default())
}

// workerLabels returns the labels of buildkitd's default worker.
func workerLabels(ctx context.Context, bk *bkclient.Client) (map[string]string, error) {
	ws, err := bk.ListWorkers(ctx)
	if err != nil {
		return nil, errors.Wrap(err, "listing buildkitd's workers")
	}
	if len(ws) == 0 {
		return nil, errors.New("buildkitd has no workers")
	}
	return ws[0].Labels, nil
}

// sharesContainerd tells whether buildkitd's default worker (labels l) is
// a containerd worker on the containerd cc talks to, in namespace ns, with
// the snapshotter the container uses.
func sharesContainerd(ctx context.Context, cc *containerd.Client, l map[string]string, ns, snapshotter string) (bool, error) {
	if l[label.Executor] != "containerd" || l[label.ContainerdNamespace] != ns || l[label.Snapshotter] != snapshotter {
		return false, nil
	}
	srv, err := cc.Server(ctx)
	if err != nil {
		return false, errors.Wrap(err, "asking containerd for its UUID")
	}
	return srv.UUID != "" && l[label.ContainerdUUID] == srv.UUID, nil
}

// onThisMachine reports whether buildkitd runs on this machine (its default
// worker, labels l, has this host's name), so that a blob read from it
// crosses no network. On Kubernetes a buildkitd in a pod has the pod's
// name, not the node's.
func onThisMachine(l map[string]string) bool {
	host, err := os.Hostname()
	return err == nil && l[label.Hostname] == host
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

// squashBase resolves --squash-since IMAGE: an image in the store whose
// layers are the first layers of the container's image.
func squashBase(ctx context.Context, cc *containerd.Client, ref string, tg *target) (ocispecs.Descriptor, string, error) {
	name, err := imageName(ref)
	if err != nil {
		return ocispecs.Descriptor{}, "", errors.Wrap(err, "--squash-since")
	}
	img, err := cc.ImageService().Get(ctx, name)
	if err != nil {
		return ocispecs.Descriptor{}, "", errors.Wrapf(err, "--squash-since %s", ref)
	}
	m, _, err := platformManifest(ctx, cc, img.Target)
	if err != nil {
		return ocispecs.Descriptor{}, "", errors.Wrapf(err, "--squash-since %s", ref)
	}
	since, err := diffIDs(ctx, cc, m)
	if err != nil {
		return ocispecs.Descriptor{}, "", errors.Wrapf(err, "--squash-since %s", ref)
	}
	var of []digest.Digest
	if tg.manifest.Digest != "" {
		if of, err = diffIDs(ctx, cc, tg.manifest); err != nil {
			return ocispecs.Descriptor{}, "", err
		}
	}
	if len(since) > len(of) || !slices.Equal(since, of[:len(since)]) {
		return ocispecs.Descriptor{}, "", errors.Errorf("--squash-since %s: it is not an ancestor of the container's image %s (its %d layers are not the first layers of the image's %d)", ref, tg.image.Name, len(since), len(of))
	}
	return m, name, nil
}

// diffIDs are the layers of the image whose manifest is m.
func diffIDs(ctx context.Context, cc *containerd.Client, m ocispecs.Descriptor) ([]digest.Digest, error) {
	_, ids, err := configOf(ctx, cc.ContentStore(), m)
	return ids, err
}
