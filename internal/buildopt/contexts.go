// Package buildopt turns command-line build options into BuildKit solve options.
package buildopt

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"github.com/tonistiigi/fsutil"
)

// AddContexts adds named contexts given as NAME=VALUE, where VALUE is a
// local directory, docker-image://REF, oci-layout://PATH[:TAG|@DIGEST] or any
// other form dockerui reads (passed through): their values go into o, what
// serves them (local directories, OCI layouts) into opt.
func AddContexts(opt *client.SolveOpt, o *frontend.Options, contexts []string) error {
	if o.Contexts == nil {
		o.Contexts = map[string]string{}
	}
	for _, c := range contexts {
		name, value, ok := strings.Cut(c, "=")
		if !ok || name == "" || value == "" {
			return errors.Errorf("--build-context %q: want NAME=VALUE", c)
		}
		layout, isLayout := frontend.CutOCILayout(value)
		switch {
		case isLayout:
			v, err := addOCILayout(opt, layout)
			if err != nil {
				return errors.Wrapf(err, "--build-context %s", c)
			}
			o.Contexts[name] = v
		case strings.Contains(value, "://"):
			o.Contexts[name] = value
		default:
			st, err := os.Stat(value)
			if err != nil {
				return errors.Wrapf(err, "--build-context %s", c)
			}
			if !st.IsDir() {
				return errors.Errorf("--build-context %s: %s is not a directory", c, value)
			}
			fs, err := fsutil.NewFS(value)
			if err != nil {
				return err
			}
			if opt.LocalMounts == nil {
				opt.LocalMounts = map[string]fsutil.FS{}
			}
			opt.LocalMounts[name] = fs
			o.Contexts[name] = frontend.LocalContext(name)
		}
	}
	return nil
}

// addOCILayout attaches the OCI layout at spec (PATH[:TAG|@DIGEST]) to the
// session and returns the context value naming it by digest.
func addOCILayout(opt *client.SolveOpt, spec string) (string, error) {
	path, tag, dgst := spec, "", digest.Digest("")
	if i := strings.LastIndex(spec, "@"); i > 0 {
		path, dgst = spec[:i], digest.Digest(spec[i+1:])
		if err := dgst.Validate(); err != nil {
			return "", err
		}
	} else if i := strings.LastIndex(spec, ":"); i > 0 && !strings.Contains(spec[i:], "/") {
		path, tag = spec[:i], spec[i+1:]
	}
	if dgst == "" {
		d, err := layoutDigest(path, tag)
		if err != nil {
			return "", err
		}
		dgst = d
	}
	store, err := local.NewStore(path)
	if err != nil {
		return "", errors.Wrapf(err, "opening OCI layout %s", path)
	}
	abs, _ := filepath.Abs(path)
	storeID := "oci-" + digest.FromString(abs).Encoded()[:16]
	if opt.OCIStores == nil {
		opt.OCIStores = map[string]content.Store{}
	}
	opt.OCIStores[storeID] = store
	return frontend.OCILayoutContext(storeID, dgst), nil
}

// layoutDigest finds the manifest or index tagged tag (or the only one) in
// the layout's index.json.
func layoutDigest(path, tag string) (digest.Digest, error) {
	dt, err := os.ReadFile(filepath.Join(path, ocispecs.ImageIndexFile))
	if err != nil {
		return "", errors.Wrapf(err, "reading the OCI layout at %s", path)
	}
	var idx ocispecs.Index
	if err := json.Unmarshal(dt, &idx); err != nil {
		return "", errors.Wrapf(err, "%s/%s", path, ocispecs.ImageIndexFile)
	}
	if tag == "" && len(idx.Manifests) == 1 {
		return idx.Manifests[0].Digest, nil
	}
	if tag == "" {
		tag = "latest"
	}
	for _, m := range idx.Manifests {
		if m.Annotations[ocispecs.AnnotationRefName] == tag {
			return m.Digest, nil
		}
	}
	return "", errors.Errorf("OCI layout %s has no image tagged %q", path, tag)
}
