// Package exporter lands an image in a store: containerd's image store by
// default — under a lease, BuildKit's OCI exporter writing the blobs
// through the session into a confined, leased view of the content store
// (new layers gzipped on their way in, large blobs fetched from
// buildkitd's store), then gc labels, unpack and the image records, the
// records last — or BuildKit's own image exporter where its worker shares
// the containerd, dockerd's where BuildKit is dockerd's, or any BuildKit
// output. Layer holds how a layer is written, for every exporter.
package exporter

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/util/compression"
	"github.com/moby/buildkit/worker/label"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
)

// A Landing puts one image into containerd's image store: a lease holds
// everything written until the image record references it, buildkitd
// writes the export through a confined, leased view of the content store
// (or, when its worker works in this very containerd, its own image
// exporter writes there), and Land labels, unpacks and records the image.
// End ends the lease on every way out.
type Landing struct {
	cc *containerd.Client
	ns string
	bk *bkclient.Client
	// ctx carries the lease; calls to buildkitd must not use it (buildkitd
	// would take the lease for one of its own).
	ctx   context.Context
	store *leasedStore
	// base tells the blobs of the images the session may read (the
	// commit's base and squash base), once SessionStore has listed them.
	base func(digest.Digest) bool
	done func(context.Context) error
	// direct tells that BuildKit's own image exporter writes into this
	// containerd (set by Exports).
	direct bool
}

// Begin starts the lease an image lands under, in cc's default namespace
// ns, from buildkitd bk, after removing the leases of commits that were
// killed.
func Begin(ctx context.Context, cc *containerd.Client, ns string, bk *bkclient.Client) (*Landing, error) {
	if err := removeStaleLeases(ctx, cc); err != nil {
		return nil, err
	}
	lctx, done, err := cc.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour), leases.WithLabels(leaseLabels()))
	if err != nil {
		return nil, errors.Wrap(err, "creating a containerd lease")
	}
	leaseID, _ := leases.FromContext(lctx)
	return &Landing{
		cc: cc, ns: ns, bk: bk, ctx: lctx, done: done,
		store: newLeasedStore(cc.ContentStore(), ns, leaseID, proxy.NewContentStore(bk.ContentClient())),
	}, nil
}

// Context carries the landing's lease, for containerd calls whose writes it
// must hold; never for calls to buildkitd.
func (l *Landing) Context() context.Context { return l.ctx }

// SessionStore is what buildkitd may use of the namespace through the
// session: the blobs of the roots (the images it reads), and what it writes
// itself (exporter.Confine), all under the lease.
func (l *Landing) SessionStore(roots ...ocispecs.Descriptor) (content.Store, error) {
	cs, err := Confine(l.ctx, l.store, roots...)
	if c, ok := cs.(*confinedStore); ok {
		l.base = c.fromRoots
	}
	return cs, err
}

// End ends the lease, retrying for a while (containerd may be
// restarting); its error becomes *retErr when there was none.
func (l *Landing) End(retErr *error) {
	var err error
	for i := 0; i < 10; i++ {
		if err = l.done(context.WithoutCancel(l.ctx)); err == nil || errdefs.IsNotFound(err) {
			return
		}
		time.Sleep(time.Second)
	}
	if *retErr == nil {
		*retErr = errors.Wrap(err, "releasing the containerd lease")
	}
}

// ExportOpt says where and how an image lands.
type ExportOpt struct {
	// Outputs are the user's; none means containerd's store.
	Outputs []bkclient.ExportEntry
	// Name is the image's name; "" for a dangling image.
	Name        string
	Snapshotter string
	// Docker lands the image through dockerd's own exporter: bk is
	// dockerd's BuildKit.
	Docker bool
	// SessionStore is what buildkitd may write through the session.
	SessionStore content.Store
	// Layer settings for every export.
	Layer Layer
	// OneManifest tells that the export is one image manifest that nothing
	// else in it names (no attestation, one platform): its new layers may
	// then be gzipped on their way into containerd.
	OneManifest bool
	// GzipFirst takes a gzip layer through the copy that gzips it on its
	// way into containerd even where BuildKit's own exporter could write
	// the image in place (it would gzip on one core): for the engine in
	// this process, whose worker writes the uncompressed blob into this
	// containerd itself.
	GzipFirst bool
}

// OCIExporterTar is the OCI exporter's attribute that says whether it
// writes a tarball (BuildKit keeps the key unexported).
const OCIExporterTar = "tar"

// mobyExporter is dockerd's own image exporter.
const mobyExporter = "moby"

// DanglingPrefix names an image committed without a repository, as docker's
// containerd image store names them.
const DanglingPrefix = "moby-dangling"

// Exports returns the export entries for o.
func (l *Landing) Exports(ctx context.Context, o ExportOpt) ([]bkclient.ExportEntry, error) {
	out := o.Outputs
	toStore := len(out) == 0
	// When buildkitd's containerd worker works in this very containerd
	// and namespace, BuildKit's own image exporter writes the image where
	// it belongs: no blob crosses the session and the new layer is already
	// a snapshot there. Otherwise the OCI export streams the new blobs
	// into containerd's content store through the session.
	l.direct = o.Docker
	l.store.gzip = nil
	var worker map[string]string
	if toStore && !l.direct {
		var err error
		if worker, err = workerLabels(ctx, l.bk); err != nil {
			return nil, err
		}
		if l.direct, err = sharesContainerd(ctx, l.cc, worker, l.ns, o.Snapshotter); err != nil {
			return nil, err
		}
		if _, gzip := o.Layer.Gzip(); l.direct && o.GzipFirst && gzip && o.OneManifest && onThisMachine(worker) {
			l.direct = false
		}
	}
	switch {
	case toStore && o.Docker:
		// dockerd's exporter writes docker's image: record, gc labels,
		// snapshots; without a name, docker's dangling image.
		// OCI's media types, as docker commit writes them with the
		// containerd image store (dockerd's exporter defaults to docker's).
		attrs := map[string]string{string(exptypes.OptKeyOCITypes): "true"}
		if o.Name != "" {
			attrs[string(exptypes.OptKeyName)] = o.Name
		}
		out = []bkclient.ExportEntry{{Type: mobyExporter, Attrs: attrs}}
	case l.direct:
		attrs := map[string]string{
			string(exptypes.OptKeyUnpack): "true", string(exptypes.OptKeyOCITypes): "true",
		}
		if o.Name != "" {
			attrs[string(exptypes.OptKeyName)] = o.Name
		} else {
			attrs[string(exptypes.OptKeyDanglingPrefix)] = DanglingPrefix
		}
		out = []bkclient.ExportEntry{{Type: bkclient.ExporterImage, Attrs: attrs}}
	case toStore:
		attrs := map[string]string{OCIExporterTar: "false", string(exptypes.OptKeyOCITypes): "true"}
		if level, gzip := o.Layer.Gzip(); gzip && o.OneManifest && onThisMachine(worker) {
			// buildkitd's differ writes the layer uncompressed and it is
			// gzipped on its way into containerd (gzipOnTheWay): one pass
			// less over the bytes, and a faster gzip than BuildKit's
			// single-threaded standard-library one.
			attrs[string(exptypes.OptKeyLayerCompression)] = compression.Uncompressed.String()
			l.store.gzipOnTheWay(level, o.GzipFirst, l.base)
		}
		out = []bkclient.ExportEntry{{Type: bkclient.ExporterOCI, Attrs: attrs, OutputStore: o.SessionStore}}
	}
	for _, e := range out {
		if e.Attrs != nil {
			o.Layer.Apply(e.Attrs)
		}
	}
	return out, nil
}

// Landed is the image a landing put into the store.
type Landed struct {
	// Manifest is the image manifest's (or index's) descriptor.
	Manifest ocispecs.Descriptor
	// Name is the first image record's name.
	Name string
	// Written is the number of bytes written into containerd's content
	// store: new blobs only, never the base's layers.
	Written int64
	// Fetched is the part of Written read straight from buildkitd's
	// content store (blobs of DirectMin bytes or more) instead of received
	// through the session.
	Fetched int64
}

// Land finishes an image exported to the store: BuildKit's exporter wrote
// it (direct), or the gc labels, unpacked snapshots and records (one for
// each of names, the first written by the export itself when direct; none
// is a dangling image) are written here, the records last. resp is the
// exporter's response; it is updated when the manifest changed on its way
// in (gzipped layers).
func (l *Landing) Land(resp map[string]string, names []string, snapshotter string) (*Landed, error) {
	desc, err := manifestDescriptor(l.ctx, l.store, resp)
	if err != nil {
		return nil, err
	}
	res := &Landed{Written: l.store.Written(), Fetched: l.store.Fetched()}
	name := ""
	if len(names) > 0 {
		name = names[0]
	}
	if l.direct {
		// BuildKit wrote the record, labels and snapshots itself.
		res.Name = resp[exptypes.ExporterImageNameKey]
		if res.Name == "" {
			res.Name = DanglingPrefix + "@" + desc.Digest.String()
		}
		if _, err := l.cc.ImageService().Get(l.ctx, res.Name); err != nil {
			return nil, errors.Wrapf(err, "the image buildkitd's containerd worker wrote (%q)", res.Name)
		}
	} else {
		if gz := l.store.gzipBlobs(); len(gz) > 0 {
			// The new layers were gzipped on their way into containerd:
			// the manifest that lands names those blobs, and so does the
			// response.
			if desc, err = rewriteManifest(l.ctx, l.store, desc, gz); err != nil {
				return nil, err
			}
			dt, err := json.Marshal(desc)
			if err != nil {
				return nil, err
			}
			resp[exptypes.ExporterImageDigestKey] = desc.Digest.String()
			resp[exptypes.ExporterImageDescriptorKey] = base64.StdEncoding.EncodeToString(dt)
		}
		if name == "" {
			name = DanglingPrefix + "@" + desc.Digest.String()
		}
		if err := store(l.ctx, l.cc, storeOpt{Name: name, Manifest: desc, Snapshotter: snapshotter, Store: l.store}); err != nil {
			return nil, err
		}
		res.Name = name
	}
	res.Manifest = desc
	if len(names) > 1 {
		for _, n := range names[1:] {
			if err := record(l.ctx, l.cc.ImageService(), images.Image{Name: n, Target: desc}); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// ImageName normalises REPOSITORY[:TAG] as docker and nerdctl store it; ""
// stays "" (a dangling image).
func ImageName(ref string) (string, error) {
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
// the snapshotter the image is unpacked into.
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
