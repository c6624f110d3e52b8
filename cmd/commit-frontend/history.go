package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/commit-frontend/commit-frontend/container"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/pkg/errors"
	"github.com/spf13/cobra"
)

func newHistoryCommand() *cobra.Command {
	var address, namespace string
	var noTrunc bool
	cmd := &cobra.Command{
		Use:   "history [OPTIONS] IMAGE",
		Short: "Show the history of an image in the containerd image store, like docker history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			cc, err := containerd.New(address, containerd.WithDefaultNamespace(namespace))
			if err != nil {
				return errors.Wrapf(err, "connecting to containerd at %s", address)
			}
			defer cc.Close()
			name := args[0]
			if n, err := reference.ParseNormalizedNamed(name); err == nil {
				name = reference.TagNameOnly(n).String()
			}
			img, err := cc.ImageService().Get(ctx, name)
			if err != nil {
				return errors.Wrapf(err, "image %s", args[0])
			}
			cs := cc.ContentStore()
			desc, _, err := container.PlatformManifest(ctx, cs, img.Target, platforms.DefaultSpec())
			if err != nil {
				return err
			}
			var m ocispecs.Manifest
			if err := readJSON(cmd, cs, desc, &m); err != nil {
				return err
			}
			var cfg ocispecs.Image
			if err := readJSON(cmd, cs, m.Config, &cfg); err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "CREATED\tCREATED BY\tSIZE\tAUTHOR\tCOMMENT")
			layer := 0
			rows := make([]string, 0, len(cfg.History))
			for _, h := range cfg.History {
				size := "0B"
				if !h.EmptyLayer && layer < len(m.Layers) {
					size = humanSize(m.Layers[layer].Size)
					layer++
				}
				created := "-"
				if h.Created != nil {
					created = h.Created.UTC().Format(time.RFC3339)
				}
				// Whatever a container's command, its author or a
				// message holds reaches the terminal escaped, one line
				// and one column each.
				by := []rune(oneLine(h.CreatedBy))
				if !noTrunc && len(by) > 60 {
					by = append(by[:57], []rune("...")...)
				}
				rows = append(rows, fmt.Sprintf("%s\t%s\t%s\t%s\t%s", created, string(by), size, oneLine(h.Author), oneLine(h.Comment)))
			}
			for i := len(rows) - 1; i >= 0; i-- {
				fmt.Fprintln(w, rows[i])
			}
			return w.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&address, "address", envOr("CONTAINERD_ADDRESS", defaultContainerdAddress), "containerd address ($CONTAINERD_ADDRESS)")
	fl.StringVarP(&namespace, "namespace", "n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace ($CONTAINERD_NAMESPACE)")
	fl.BoolVar(&noTrunc, "no-trunc", false, "do not truncate the output")
	return cmd
}

func readJSON(cmd *cobra.Command, cs content.Provider, desc ocispecs.Descriptor, v any) error {
	dt, err := content.ReadBlob(cmd.Context(), cs, desc)
	if err != nil {
		return errors.Wrapf(err, "reading %s", desc.Digest)
	}
	return json.Unmarshal(dt, v)
}

func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%dB", n)
	}
	return fmt.Sprintf("%.3g%s", f, units[i])
}
