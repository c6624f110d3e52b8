package exporter

import (
	"strings"
	"testing"

	bkclient "github.com/moby/buildkit/client"
)

func TestLayer(t *testing.T) {
	zero, one, nine, thirty := 0, 1, 9, 30
	for _, tc := range []struct {
		name    string
		l       Layer
		outputs []map[string]string
		err     string
		attrs   map[string]string
		level   int
		gzip    bool
	}{
		{name: "default", level: -1, gzip: true, attrs: map[string]string{}},
		{name: "store", l: Layer{Level: &zero}, level: 0, gzip: true, attrs: map[string]string{"compression-level": "0"}},
		{name: "zstd", l: Layer{Compression: "zstd", Level: &nine, RewriteTimestamp: true}, attrs: map[string]string{"compression": "zstd", "compression-level": "9", "rewrite-timestamp": "true"}},
		{name: "uncompressed output keeps no level", l: Layer{Level: &one}, outputs: []map[string]string{{"compression": "uncompressed"}}, level: 1, gzip: true, attrs: map[string]string{"compression-level": "1"}},
		{name: "bad name", l: Layer{Compression: "lzma"}, err: "--compression=lzma"},
		{name: "gzip level out of range", l: Layer{Level: &thirty}, err: "out of range for gzip (0 to 9)"},
		{name: "a level for no compression", l: Layer{Compression: "uncompressed", Level: &one}, err: "out of range for uncompressed"},
		{name: "bad output level", outputs: []map[string]string{{"compression-level": "x"}}, err: "--output 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var outs []bkclient.ExportEntry
			for _, a := range tc.outputs {
				outs = append(outs, bkclient.ExportEntry{Attrs: a})
			}
			err := tc.l.Validate(outs)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			attrs := map[string]string{}
			tc.l.Apply(attrs)
			if len(attrs) != len(tc.attrs) {
				t.Errorf("attrs %v, want %v", attrs, tc.attrs)
			}
			for k, v := range tc.attrs {
				if attrs[k] != v {
					t.Errorf("attrs %v, want %v", attrs, tc.attrs)
				}
			}
			if level, ok := tc.l.Gzip(); ok != tc.gzip || (ok && level != tc.level) {
				t.Errorf("Gzip() = %d, %v", level, ok)
			}
		})
	}
	// An --output's own attributes win.
	attrs := map[string]string{"compression": "uncompressed"}
	Layer{Compression: "zstd", Level: &nine}.Apply(attrs)
	if attrs["compression"] != "uncompressed" || attrs["compression-level"] != "" {
		t.Errorf("output attributes overridden: %v", attrs)
	}
	if r := Record([]bkclient.ExportEntry{{Attrs: map[string]string{"compression": "zstd", "rewrite-timestamp": "true"}}, {Attrs: map[string]string{}}}); r != "zstd:::true,:::" {
		t.Errorf("Record %q", r)
	}
}
