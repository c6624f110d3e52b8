package frontend

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend/imageconfig"
	cfllb "github.com/commit-frontend/commit-frontend/llb"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	gwclient "github.com/moby/buildkit/frontend/gateway/client"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	digest "github.com/opencontainers/go-digest"
	"github.com/pkg/errors"
)

// The frontend's option keys: `--opt KEY=VALUE` for buildctl, and what
// every client of the frontend (the commit command, CommitBuildStep) sends,
// always through Options.Attrs. The dockerui keys a client also sets
// (platform, context:NAME) are encoded by Options too.
const (
	// KeyFilename names the Commitfile in the dockerfile context.
	KeyFilename = "filename"
	// KeyBase is the base of a Commitfile-less build: an image, a named
	// context or scratch.
	KeyBase = "base"
	// KeyCommit names the context holding the container filesystem.
	KeyCommit = "commit"
	// KeyChange holds `docker commit --change` instructions, one per line.
	KeyChange = "change"
	// KeyCommitTree, "true", says that the commit context is a change set
	// sent as the tree it describes (removals as whiteout devices), not as
	// a change-set directory.
	KeyCommitTree = "commit-tree"
	// KeyCommitParts names more contexts (one per line) whose change sets
	// are the rest of the commit context's: each is applied on the one
	// before as a layer of its own (--max-layer-size).
	KeyCommitParts = "commit-parts"
	// KeyCommitSources holds LLB source identifiers, one per line, for the
	// commit context and then each of commit-parts: where one is given,
	// that context's change set is the tree the source's snapshot holds
	// (as with commit-tree), written by a BuildKit engine running in the
	// client's process (package engine), with no session transfer. The
	// commit context's source may instead be the base image with that
	// tree as its top layer (scheme llb.LayerSourceScheme): the COMMIT's
	// result as it is, made on the base the build names.
	KeyCommitSources = "commit-sources"
	// KeyAuthor is the author of every COMMIT that gives none.
	KeyAuthor = "author"
	// KeyMessage is the comment of every COMMIT that gives none.
	KeyMessage = "message"
	// KeyCreatedBy is the history created_by of every COMMIT; without a
	// COMMIT it adds one history entry with no layer.
	KeyCreatedBy = "created-by"
	// KeyImageConfig is a whole container config (JSON) that replaces the
	// base's: a builder step's config.
	KeyImageConfig = "image-config"
	// KeySquashSince makes every COMMIT squash everything above the named
	// context's image (or "scratch": everything) into one layer.
	KeySquashSince = "squash-since"
	// KeySquashSinceName is how history names the squash base.
	KeySquashSinceName = "squash-since-name"
	// KeyPlatform is dockerui's target platform list.
	KeyPlatform = "platform"
	// KeyContextPrefix starts dockerui's named-context keys.
	KeyContextPrefix = "context:"
	// KeyLocalSessionIDPrefix starts the keys that name the session
	// serving a local context (BuildKit's client sets them).
	KeyLocalSessionIDPrefix = "local-sessionid:"
	// KeyBuildArgPrefix starts dockerui's build-argument keys.
	KeyBuildArgPrefix = "build-arg:"
	// KeyProvenance asks BuildKit for a provenance attestation.
	KeyProvenance = "attest:provenance"
	// KeyAttestPrefix starts BuildKit's attestation keys (attest:sbom,
	// attest:provenance).
	KeyAttestPrefix = "attest:"
	// KeyTarget is dockerui's build target stage.
	KeyTarget = "target"
	// KeyNoCache is dockerui's cache switch: "" for every stage, else
	// stage names, comma-separated.
	KeyNoCache = "no-cache"
	// KeyNetworkMode is dockerui's network for RUN steps (buildx's
	// --network).
	KeyNetworkMode = "force-network-mode"
	// KeyAddHosts is dockerui's extra /etc/hosts entries, comma-separated.
	KeyAddHosts = "add-hosts"
	// KeyLayerDiffer, DifferWalking, has an options-only COMMIT's layer
	// computed by the worker's walking differ (containerd's, as docker
	// commit computes it) instead of BuildKit's overlay differ.
	KeyLayerDiffer = "layer-differ"
	// KeyUnsetEnv and KeyUnsetLabel remove from the image's config the
	// environment variables and labels whose names match a pattern (one
	// per line; * any run of characters, ? one, [...] a class).
	KeyUnsetEnv   = "unset-env"
	KeyUnsetLabel = "unset-label"
	// KeyAnnotationPrefix starts the keys of annotations (annotation:KEY)
	// put on the image manifest, and on the index when there is one.
	KeyAnnotationPrefix = "annotation:"
	// KeyOmitHistory, "true", leaves the history nothing but one blank
	// entry per layer.
	KeyOmitHistory = "omit-history"
	// KeyUnsetVolume removes VOLUME declarations (mount points, one per
	// line) from the image's config: a volume whose data the image holds.
	KeyUnsetVolume = "unset-volume"

	// DefaultFilename is the Commitfile read when no filename is given.
	DefaultFilename = "Commitfile"
	// SquashScratch as KeySquashSince squashes the whole filesystem.
	SquashScratch = Scratch
	// Scratch as KeyBase is the empty filesystem.
	Scratch = "scratch"
	// DifferWalking is the KeyLayerDiffer value for the walking differ.
	DifferWalking = "walking"
)

// The forms of a named context's value (dockerui's).
const (
	ociLayoutScheme   = "oci-layout://"
	dockerImageScheme = "docker-image://"
	localScheme       = "local:"
	inputScheme       = "input:"
	// inputMetadataPrefix starts the option that gives an input's image
	// config.
	inputMetadataPrefix = "input-metadata:"
)

// InputContext returns the named-context value for the frontend input name
// (a state the client gives with the solve), and the option, key and
// value, that gives config as its image config: the frontend then
// resolves nothing.
func InputContext(name string, config []byte) (value, key, metadata string, err error) {
	dt, err := json.Marshal(map[string][]byte{exptypes.ExporterImageConfigKey: config})
	if err != nil {
		return "", "", "", err
	}
	return inputScheme + name, inputMetadataPrefix + name, string(dt), nil
}

// OCILayoutContext is the named-context value for the image whose manifest
// or index is dgst in the session's OCI store storeID.
func OCILayoutContext(storeID string, dgst digest.Digest) string {
	return ociLayoutScheme + storeID + "@" + dgst.String()
}

// CutOCILayout tells whether value is a named context given as an OCI
// layout (oci-layout://PATH[:TAG|@DIGEST]) and returns what follows the
// scheme.
func CutOCILayout(value string) (string, bool) {
	return strings.CutPrefix(value, ociLayoutScheme)
}

// ImageContext is the named-context value for the image ref of a registry.
func ImageContext(ref string) string { return dockerImageScheme + ref }

// LocalContext is the named-context value for the session's local
// directory name.
func LocalContext(name string) string { return localScheme + name }

// Options are the frontend's options, decoded.
type Options struct {
	// Filename is the Commitfile's name; "" when none was given.
	Filename string
	// Base and Commit describe a build without a Commitfile.
	Base, Commit string
	// CommitTree tells that the Commit context is a change set sent as
	// its tree.
	CommitTree bool
	// CommitParts are contexts holding the rest of Commit's change set,
	// one layer each.
	CommitParts []string
	// CommitSources are the LLB sources of the trees of Commit and of
	// each of CommitParts, in that order, where not empty.
	CommitSources []string
	// Changes are `--change` instructions.
	Changes []string
	// Author and Message apply to COMMITs that give none.
	Author, Message string
	// CreatedBy is the history created_by of every COMMIT.
	CreatedBy string
	// ImageConfig replaces the base's config.
	ImageConfig *dockerspec.DockerOCIImageConfig
	// SquashSince names the image (a named context) every COMMIT squashes
	// down to, or SquashScratch; SquashSinceName names it in history.
	SquashSince, SquashSinceName string
	// Platform is the target platform list, comma-separated.
	Platform string
	// Contexts are named contexts: name → value (docker-image://,
	// oci-layout://, input:...).
	Contexts map[string]string
	// BuildArgs are build arguments: name → value.
	BuildArgs map[string]string
	// Provenance is BuildKit's provenance attestation setting (mode=min|max).
	Provenance string
	// LayerDiffer is DifferWalking for the walking differ, "" for BuildKit's
	// choice.
	LayerDiffer string
	// Attests are BuildKit's attestation options other than provenance:
	// name (sbom) → value.
	Attests map[string]string
	// Target is the stage to build; NoCache, when set, the stages built
	// without the cache ("" every stage); NetworkMode and AddHosts the
	// network of RUN steps: dockerui's options, as buildx sets them.
	Target      string
	NoCache     *string
	NetworkMode string
	AddHosts    []string
	// UnsetEnv and UnsetLabels are name patterns of environment variables
	// and labels the image leaves out; Annotations go on its manifest (and
	// index); OmitHistory blanks its history.
	UnsetEnv, UnsetLabels []string
	// UnsetVolumes are VOLUME mount points the image's config drops.
	UnsetVolumes []string
	Annotations  map[string]string
	OmitHistory  bool
	// Extra are keys this codec does not know (dockerui's own, a
	// frontend's), passed through as they are.
	Extra map[string]string
}

// ParseOptions decodes the options the frontend reads from m; other keys
// (build args, dockerui's own) are left to dockerui.
func ParseOptions(m map[string]string) (*Options, error) {
	o := &Options{
		Filename:        m[KeyFilename],
		Base:            m[KeyBase],
		Commit:          m[KeyCommit],
		Author:          m[KeyAuthor],
		Message:         m[KeyMessage],
		CreatedBy:       m[KeyCreatedBy],
		SquashSince:     m[KeySquashSince],
		SquashSinceName: m[KeySquashSinceName],
		Platform:        m[KeyPlatform],
		Provenance:      m[KeyProvenance],
		LayerDiffer:     m[KeyLayerDiffer],
	}
	if o.LayerDiffer != "" && o.LayerDiffer != DifferWalking {
		return nil, errors.Errorf("option %s=%q: want %s", KeyLayerDiffer, o.LayerDiffer, DifferWalking)
	}
	if v, ok := m[KeyCommitTree]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, errors.Errorf("option %s=%q: want true or false", KeyCommitTree, v)
		}
		o.CommitTree = b
	}
	if v := m[KeyChange]; v != "" {
		o.Changes = strings.Split(v, "\n")
	}
	if v := m[KeyImageConfig]; v != "" {
		o.ImageConfig = &dockerspec.DockerOCIImageConfig{}
		if err := json.Unmarshal([]byte(v), o.ImageConfig); err != nil {
			return nil, errors.Wrapf(err, "option %s: not an image config", KeyImageConfig)
		}
		if len(o.Changes) > 0 {
			return nil, errors.Errorf("options %s and %s exclude each other: apply the changes to the config", KeyImageConfig, KeyChange)
		}
	}
	if v, ok := m[KeyNoCache]; ok {
		o.NoCache = &v
	}
	if v := m[KeyUnsetEnv]; v != "" {
		o.UnsetEnv = strings.Split(v, "\n")
	}
	if v := m[KeyUnsetLabel]; v != "" {
		o.UnsetLabels = strings.Split(v, "\n")
	}
	if v := m[KeyCommitParts]; v != "" {
		o.CommitParts = strings.Split(v, "\n")
	}
	if v := m[KeyCommitSources]; v != "" {
		o.CommitSources = strings.Split(v, "\n")
		if len(o.CommitSources) > 1+len(o.CommitParts) {
			return nil, errors.Errorf("option %s: %d sources for %d contexts", KeyCommitSources, len(o.CommitSources), 1+len(o.CommitParts))
		}
		for i, src := range o.CommitSources[1:] {
			if strings.HasPrefix(src, cfllb.LayerSourceScheme+"://") {
				return nil, errors.Errorf("option %s, line %d: a part is applied on the layers before it, it cannot be a %s source", KeyCommitSources, i+2, cfllb.LayerSourceScheme)
			}
		}
	}
	if v := m[KeyUnsetVolume]; v != "" {
		o.UnsetVolumes = strings.Split(v, "\n")
	}
	if err := imageconfig.CheckPatterns("option "+KeyUnsetEnv, o.UnsetEnv); err != nil {
		return nil, err
	}
	if err := imageconfig.CheckPatterns("option "+KeyUnsetLabel, o.UnsetLabels); err != nil {
		return nil, err
	}
	if v, ok := m[KeyOmitHistory]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, errors.Errorf("option %s=%q: want true or false", KeyOmitHistory, v)
		}
		o.OmitHistory = b
	}
	o.Target, o.NetworkMode = m[KeyTarget], m[KeyNetworkMode]
	if v := m[KeyAddHosts]; v != "" {
		o.AddHosts = strings.Split(v, ",")
	}
	for k, v := range m {
		if name, ok := strings.CutPrefix(k, KeyContextPrefix); ok {
			o.Contexts = put(o.Contexts, name, v)
		} else if name, ok := strings.CutPrefix(k, KeyBuildArgPrefix); ok {
			o.BuildArgs = put(o.BuildArgs, name, v)
		} else if name, ok := strings.CutPrefix(k, KeyAttestPrefix); ok && k != KeyProvenance {
			o.Attests = put(o.Attests, name, v)
		} else if name, ok := strings.CutPrefix(k, KeyAnnotationPrefix); ok {
			if err := CheckAnnotation(name); err != nil {
				return nil, errors.Wrapf(err, "option %s", k)
			}
			o.Annotations = put(o.Annotations, name, v)
		} else if !knownKeys[k] {
			o.Extra = put(o.Extra, k, v)
		}
	}
	return o, nil
}

// Attrs encodes o as frontend options; empty fields are left out.
func (o *Options) Attrs() (map[string]string, error) {
	m := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set(KeyFilename, o.Filename)
	set(KeyBase, o.Base)
	set(KeyCommit, o.Commit)
	set(KeyChange, strings.Join(o.Changes, "\n"))
	set(KeyAuthor, o.Author)
	set(KeyMessage, o.Message)
	set(KeyCreatedBy, o.CreatedBy)
	set(KeySquashSince, o.SquashSince)
	set(KeySquashSinceName, o.SquashSinceName)
	set(KeyPlatform, o.Platform)
	if o.ImageConfig != nil {
		dt, err := json.Marshal(o.ImageConfig)
		if err != nil {
			return nil, errors.Wrap(err, "image config")
		}
		m[KeyImageConfig] = string(dt)
	}
	set(KeyProvenance, o.Provenance)
	set(KeyLayerDiffer, o.LayerDiffer)
	if o.CommitTree {
		m[KeyCommitTree] = "true"
	}
	for name, v := range o.Contexts {
		m[KeyContextPrefix+name] = v
	}
	for name, v := range o.BuildArgs {
		m[KeyBuildArgPrefix+name] = v
	}
	for name, v := range o.Attests {
		m[KeyAttestPrefix+name] = v
	}
	set(KeyTarget, o.Target)
	if o.NoCache != nil {
		m[KeyNoCache] = *o.NoCache
	}
	set(KeyNetworkMode, o.NetworkMode)
	set(KeyAddHosts, strings.Join(o.AddHosts, ","))
	set(KeyUnsetEnv, strings.Join(o.UnsetEnv, "\n"))
	set(KeyUnsetLabel, strings.Join(o.UnsetLabels, "\n"))
	set(KeyUnsetVolume, strings.Join(o.UnsetVolumes, "\n"))
	set(KeyCommitParts, strings.Join(o.CommitParts, "\n"))
	set(KeyCommitSources, strings.Join(o.CommitSources, "\n"))
	for k, v := range o.Annotations {
		m[KeyAnnotationPrefix+k] = v
	}
	if o.OmitHistory {
		m[KeyOmitHistory] = "true"
	}
	for k, v := range o.Extra {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	return m, nil
}

// knownKeys are the keys Options has a field for.
var knownKeys = map[string]bool{
	KeyFilename: true, KeyBase: true, KeyCommit: true, KeyChange: true, KeyCommitTree: true, KeyAuthor: true,
	KeyMessage: true, KeyCreatedBy: true, KeyImageConfig: true, KeySquashSince: true, KeySquashSinceName: true,
	KeyPlatform: true, KeyProvenance: true, KeyLayerDiffer: true, KeyTarget: true, KeyNoCache: true,
	KeyNetworkMode: true, KeyAddHosts: true, KeyUnsetEnv: true, KeyUnsetLabel: true, KeyOmitHistory: true, KeyUnsetVolume: true, KeyCommitParts: true,
	KeyCommitSources: true,
}

// Attested reports whether the build asks BuildKit for any attestation.
func (o *Options) Attested() bool {
	return o.Provenance != "" || len(o.Attests) > 0
}

func put(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// optionsOnly reports whether the options alone describe the build, with no
// Commitfile to read.
func (o *Options) optionsOnly() bool {
	return o.Filename == "" && (o.Base != "" || o.Commit != "")
}

// Clone returns a copy of o that shares nothing with it.
func (o *Options) Clone() *Options {
	c := *o
	c.Changes = slices.Clone(o.Changes)
	c.Contexts = maps.Clone(o.Contexts)
	c.BuildArgs = maps.Clone(o.BuildArgs)
	c.Attests = maps.Clone(o.Attests)
	c.Extra = maps.Clone(o.Extra)
	c.AddHosts = slices.Clone(o.AddHosts)
	c.UnsetEnv = slices.Clone(o.UnsetEnv)
	c.UnsetLabels = slices.Clone(o.UnsetLabels)
	c.UnsetVolumes = slices.Clone(o.UnsetVolumes)
	c.CommitParts = slices.Clone(o.CommitParts)
	c.CommitSources = slices.Clone(o.CommitSources)
	c.Annotations = maps.Clone(o.Annotations)
	if o.NoCache != nil {
		v := *o.NoCache
		c.NoCache = &v
	}
	if o.ImageConfig != nil {
		c.ImageConfig = imageconfig.CloneConfig(o.ImageConfig)
	}
	return &c
}

// CheckAnnotation refuses an annotation key an image exporter would not
// take.
func CheckAnnotation(key string) error {
	if key == "" {
		return errors.New("an annotation needs a key (KEY=VALUE)")
	}
	if _, ok, err := exptypes.ParseAnnotationKey(exptypes.AnnotationManifestKey(nil, key)); !ok || err != nil {
		return errors.Errorf("annotation key %q: not a key an image manifest can carry", key)
	}
	return nil
}

// finishImage applies to a built image what the options ask of every
// image: variables and labels unset, history omitted.
func (o *Options) finishImage(img *dockerspec.DockerOCIImage) (*dockerspec.DockerOCIImage, error) {
	if img == nil {
		return nil, nil
	}
	if len(o.UnsetEnv)+len(o.UnsetLabels) > 0 {
		var err error
		if img, err = imageconfig.Unset(img, o.UnsetEnv, o.UnsetLabels); err != nil {
			return nil, err
		}
	}
	if len(o.UnsetVolumes) > 0 {
		img = imageconfig.Clone(img)
		for _, v := range o.UnsetVolumes {
			delete(img.Config.Volumes, v)
			delete(img.Config.Volumes, strings.TrimSuffix(v, "/")+"/")
		}
	}
	if o.OmitHistory {
		img = imageconfig.OmitHistory(img, time.Now().UTC())
	}
	return img, nil
}

// annotate puts the annotations on the result's manifests, and on its
// index when it is one (more than one platform).
func (o *Options) annotate(res *gwclient.Result, index bool) {
	for k, v := range o.Annotations {
		res.AddMeta(exptypes.AnnotationManifestKey(nil, k), []byte(v))
		if index {
			res.AddMeta(exptypes.AnnotationIndexKey(k), []byte(v))
		}
	}
}
