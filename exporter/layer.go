package exporter

import (
	"strconv"
	"strings"

	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/util/compression"
	"github.com/pkg/errors"
)

// Layer is how a commit writes its new layer, for every export: BuildKit's
// compression name ("" for its default, gzip), the level (nil for the
// compression's default; 0 is gzip's "store"), and whether file times are
// clamped to SOURCE_DATE_EPOCH.
type Layer struct {
	Compression      string
	Level            *int
	RewriteTimestamp bool
}

// Validate refuses, before anything is paused, a compression or a level
// that BuildKit's layer writer would refuse after the solve, alone or
// merged into one of outputs (whose own attributes win).
func (l Layer) Validate(outputs []bkclient.ExportEntry) error {
	// The settings alone: a level given for no compression is refused.
	own := map[string]string{}
	if l.Compression != "" {
		own[string(exptypes.OptKeyLayerCompression)] = l.Compression
	}
	if l.Level != nil {
		own[string(exptypes.OptKeyCompressionLevel)] = strconv.Itoa(*l.Level)
	}
	if err := checkAttrs(own); err != nil {
		return err
	}
	for i, o := range outputs {
		attrs := map[string]string{}
		for _, k := range []exptypes.ImageExporterOptKey{exptypes.OptKeyLayerCompression, exptypes.OptKeyCompressionLevel} {
			if v, ok := o.Attrs[string(k)]; ok {
				attrs[string(k)] = v
			}
		}
		l.Apply(attrs)
		if err := checkAttrs(attrs); err != nil {
			return errors.Wrapf(err, "--output %d", i+1)
		}
	}
	return nil
}

// Apply writes the settings into an export's attributes, as BuildKit's
// exporters read them, leaving alone the ones attrs sets already (an
// --output's own). No level is written for an uncompressed layer.
func (l Layer) Apply(attrs map[string]string) {
	set := func(k exptypes.ImageExporterOptKey, v string) {
		if _, ok := attrs[string(k)]; !ok && v != "" {
			attrs[string(k)] = v
		}
	}
	set(exptypes.OptKeyLayerCompression, l.Compression)
	if l.Level != nil && attrs[string(exptypes.OptKeyLayerCompression)] != compression.Uncompressed.String() {
		set(exptypes.OptKeyCompressionLevel, strconv.Itoa(*l.Level))
	}
	if l.RewriteTimestamp {
		set(exptypes.OptKeyRewriteTimestamp, "true")
	}
}

// Gzip reports whether the layer is gzip at its default settings or a
// level (the layer may then be gzipped on its way into containerd), and
// the level for the compressor (-1 for gzip's default).
func (l Layer) Gzip() (level int, ok bool) {
	if l.Compression != "" && l.Compression != compression.Gzip.String() {
		return 0, false
	}
	if l.Level == nil {
		return -1, true
	}
	return *l.Level, true
}

// Record describes how each export writes the layer, for the change set's
// header: it makes BuildKit's cache key of the layer depend on it, so that
// a layer cached with another compression is not handed out for this one.
func Record(exports []bkclient.ExportEntry) string {
	var parts []string
	for _, e := range exports {
		var p []string
		for _, k := range []exptypes.ImageExporterOptKey{exptypes.OptKeyLayerCompression, exptypes.OptKeyCompressionLevel, exptypes.OptKeyForceCompression, exptypes.OptKeyRewriteTimestamp} {
			p = append(p, e.Attrs[string(k)])
		}
		parts = append(parts, strings.Join(p, ":"))
	}
	return strings.Join(parts, ",")
}

// checkAttrs checks compression attributes with BuildKit's own parser, and
// the level against the range each compressor takes.
func checkAttrs(attrs map[string]string) error {
	name, level := attrs[string(exptypes.OptKeyLayerCompression)], attrs[string(exptypes.OptKeyCompressionLevel)]
	cfg, err := compression.ParseAttributes(attrs)
	if err != nil {
		if level != "" {
			return errors.Wrapf(err, "--compression=%s --compression-level=%s", name, level)
		}
		return errors.Wrapf(err, "--compression=%s", name)
	}
	if cfg.Level == nil {
		return nil
	}
	lo, hi := 0, 9
	switch cfg.Type {
	case compression.Zstd:
		lo, hi = 1, 22
	case compression.Uncompressed:
		lo, hi = 0, 0
	}
	if l := *cfg.Level; l < lo || l > hi {
		return errors.Errorf("--compression-level=%d is out of range for %s (%d to %d)", l, cfg.Type, lo, hi)
	}
	return nil
}
