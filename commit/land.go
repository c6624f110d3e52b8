package commit

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/commit-frontend/commit-frontend/exporter"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/util/compression"
	"github.com/pkg/errors"
)

// landing is what putting an image into containerd's store takes: a lease
// that holds everything written until the image record references it, and
// the leased content store buildkitd writes through.
type landing struct {
	cc *containerd.Client
	ns string
	bk *bkclient.Client
	// ctx carries the lease; calls to buildkitd must not use it (buildkitd
	// would take the lease for one of its own).
	ctx   context.Context
	store exporter.CountingStore
	done  func(context.Context) error
}

// newLanding starts the lease a commit or a build lands its image under.
func newLanding(ctx context.Context, cc *containerd.Client, ns string, bk *bkclient.Client) (*landing, error) {
	if err := removeStaleLeases(ctx, cc); err != nil {
		return nil, err
	}
	lctx, done, err := cc.WithLease(ctx, leases.WithRandomID(), leases.WithExpiration(24*time.Hour), leases.WithLabels(leaseLabels()))
	if err != nil {
		return nil, errors.Wrap(err, "creating a containerd lease")
	}
	leaseID, _ := leases.FromContext(lctx)
	return &landing{
		cc: cc, ns: ns, bk: bk, ctx: lctx, done: done,
		store: exporter.LeasedStore(cc.ContentStore(), ns, leaseID, exporter.BuildkitContent(bk)),
	}, nil
}

// release ends the lease, retrying for a while (containerd may be
// restarting); its error becomes *retErr when there was none.
func (l *landing) release(retErr *error) {
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

// ociExporterTar is the OCI exporter's attribute that says whether it
// writes a tarball (BuildKit keeps the key unexported).
const ociExporterTar = "tar"

// exportOpt says where and how an image lands.
type exportOpt struct {
	// outputs are the user's; none means containerd's store.
	outputs []bkclient.ExportEntry
	// name is the image's name; "" for a dangling image.
	name        string
	snapshotter string
	// dockerExport lands the image through dockerd's own exporter.
	dockerExport bool
	// sessionStore is what buildkitd may write through the session.
	sessionStore content.Store
	// Layer settings for every export.
	layer exporter.Layer
	// gzipLayers lets the store gzip the new layers (exporter.GzipLayers)
	// when gzip is asked for: the caller's export is one image manifest
	// that nothing else in it names (no attestation, one platform).
	gzipLayers bool
}

// exports returns the export entries for o and whether BuildKit's own
// image exporter writes straight into this containerd (direct).
func (l *landing) exports(ctx context.Context, o exportOpt) (_ []bkclient.ExportEntry, direct bool, _ error) {
	out := o.outputs
	toStore := len(out) == 0
	// When buildkitd's containerd worker works in this very containerd
	// and namespace, BuildKit's own image exporter writes the image where
	// it belongs: no blob crosses the session and the new layer is already
	// a snapshot there. Otherwise the OCI export streams the new blobs
	// into containerd's content store through the session.
	direct = o.dockerExport
	var worker map[string]string
	if toStore && !direct {
		var err error
		if worker, err = workerLabels(ctx, l.bk); err != nil {
			return nil, false, err
		}
		if direct, err = sharesContainerd(ctx, l.cc, worker, l.ns, o.snapshotter); err != nil {
			return nil, false, err
		}
	}
	switch {
	case toStore && o.dockerExport:
		// dockerd's exporter writes docker's image: record, gc labels,
		// snapshots; without a name, docker's dangling image.
		attrs := map[string]string{}
		if o.name != "" {
			attrs[string(exptypes.OptKeyName)] = o.name
		}
		out = []bkclient.ExportEntry{{Type: "moby", Attrs: attrs}}
	case direct:
		attrs := map[string]string{
			string(exptypes.OptKeyUnpack): "true", string(exptypes.OptKeyOCITypes): "true",
		}
		if o.name != "" {
			attrs[string(exptypes.OptKeyName)] = o.name
		} else {
			attrs[string(exptypes.OptKeyDanglingPrefix)] = danglingPrefix
		}
		out = []bkclient.ExportEntry{{Type: bkclient.ExporterImage, Attrs: attrs}}
	case toStore:
		attrs := map[string]string{ociExporterTar: "false", string(exptypes.OptKeyOCITypes): "true"}
		if level, gzip := o.layer.Gzip(); gzip && o.gzipLayers && onThisMachine(worker) {
			// buildkitd's differ writes the layer uncompressed and it is
			// gzipped on its way into containerd (exporter.GzipLayers):
			// one pass less over the bytes, and a faster gzip than
			// BuildKit's single-threaded standard-library one.
			attrs[string(exptypes.OptKeyLayerCompression)] = compression.Uncompressed.String()
			l.store.GzipLayers(level)
		}
		out = []bkclient.ExportEntry{{Type: bkclient.ExporterOCI, Attrs: attrs, OutputStore: o.sessionStore}}
	}
	for _, e := range out {
		if e.Attrs != nil {
			o.layer.Apply(e.Attrs)
		}
	}
	return out, direct, nil
}

// land finishes an image exported to the store: BuildKit's exporter wrote
// it (direct), or the record, gc labels and unpacked snapshots are written
// here. It fills res's manifest, name and byte counts.
func (l *landing) land(resp map[string]string, direct bool, name, snapshotter string, res *Result) error {
	desc, err := exporter.ManifestDescriptor(l.ctx, l.store, resp)
	if err != nil {
		return err
	}
	res.Manifest = desc
	res.Exported, res.Fetched = l.store.Written(), l.store.Fetched()
	if direct {
		// BuildKit wrote the record, labels and snapshots itself.
		res.Name = resp[exptypes.ExporterImageNameKey]
		if res.Name == "" {
			res.Name = danglingPrefix + "@" + desc.Digest.String()
		}
		if _, err := l.cc.ImageService().Get(l.ctx, res.Name); err != nil {
			return errors.Wrapf(err, "the image buildkitd's containerd worker wrote (%q)", res.Name)
		}
		return nil
	}
	if gz := l.store.Gzipped(); len(gz) > 0 {
		// The new layers were gzipped on their way into containerd: the
		// manifest that lands names those blobs, and so does the response.
		if desc, err = exporter.RewriteManifest(l.ctx, l.store, desc, gz); err != nil {
			return err
		}
		dt, err := json.Marshal(desc)
		if err != nil {
			return err
		}
		resp[exptypes.ExporterImageDigestKey] = desc.Digest.String()
		resp[exptypes.ExporterImageDescriptorKey] = base64.StdEncoding.EncodeToString(dt)
		res.Manifest = desc
	}
	if name == "" {
		name = danglingPrefix + "@" + desc.Digest.String()
	}
	if err := exporter.Store(l.ctx, l.cc, exporter.StoreOpt{
		Name:        name,
		Manifest:    desc,
		Snapshotter: snapshotter,
		Store:       l.store,
	}); err != nil {
		return err
	}
	res.Name = name
	return nil
}
