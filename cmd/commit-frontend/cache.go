package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/commit-frontend/commit-frontend/internal/solve"
	"github.com/docker/go-units"
	bkclient "github.com/moby/buildkit/client"
	"github.com/spf13/cobra"
)

// cacheFlags reach the BuildKit whose cache du and prune show and free: the
// one commit and build would use.
type cacheFlags struct {
	address, namespace, snapshotter string
	bk                              solve.ConnectOpt
}

func (f *cacheFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.address, "address", envOr("CONTAINERD_ADDRESS", defaultContainerdAddress), "containerd address, for the in-process engine ($CONTAINERD_ADDRESS)")
	fl.StringVarP(&f.namespace, "namespace", "n", envOr("CONTAINERD_NAMESPACE", "default"), "containerd namespace, for the in-process engine ($CONTAINERD_NAMESPACE)")
	fl.StringVar(&f.snapshotter, "snapshotter", "", "snapshotter, for the in-process engine (default overlayfs)")
	addBuildkitFlags(fl, &f.bk)
}

// cacheCommand is a command on BuildKit's cache: run gets a client of the
// BuildKit the flags reach.
func cacheCommand(use, short string, run func(cmd *cobra.Command, bk *bkclient.Client) error) *cobra.Command {
	var f cacheFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bk, done, _, err := connectBuildkit(cmd.Context(), f.bk, f.address, f.namespace, f.snapshotter, false, warnTo(cmd))
			if err != nil {
				return err
			}
			defer done()
			return run(cmd, bk)
		},
	}
	f.add(cmd)
	return cmd
}

func newDuCommand() *cobra.Command {
	return cacheCommand("du [OPTIONS]", "Show BuildKit's cache: the in-process engine's, or a buildkitd's (like buildctl du)",
		func(cmd *cobra.Command, bk *bkclient.Client) error {
			du, err := bk.DiskUsage(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 1, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tRECLAIMABLE\tSIZE\tLAST ACCESSED\tDESCRIPTION")
			var total, reclaimable int64
			for _, u := range du {
				last := ""
				if u.LastUsedAt != nil {
					last = units.HumanDuration(time.Since(*u.LastUsedAt)) + " ago"
				}
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\n", u.ID, !u.InUse, units.HumanSize(float64(u.Size)), last, printable(u.Description))
				total += u.Size
				if !u.InUse {
					reclaimable += u.Size
				}
			}
			fmt.Fprintf(tw, "Reclaimable:\t%s\n", units.HumanSize(float64(reclaimable)))
			fmt.Fprintf(tw, "Total:\t%s\n", units.HumanSize(float64(total)))
			return tw.Flush()
		})
}

func newPruneCommand() *cobra.Command {
	var all bool
	var keep time.Duration
	var filters []string
	cmd := cacheCommand("prune [OPTIONS]", "Free BuildKit's cache: the in-process engine's, or a buildkitd's (like buildctl prune)",
		func(cmd *cobra.Command, bk *bkclient.Client) error {
			opts := []bkclient.PruneOption{bkclient.WithFilter(filters), bkclient.WithKeepOpt(keep, 0, 0, 0)}
			if all {
				opts = append(opts, bkclient.PruneAll)
			}
			ch := make(chan bkclient.UsageInfo)
			var freed int64
			printed := make(chan struct{})
			go func() {
				defer close(printed)
				for u := range ch {
					fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", u.ID, units.HumanSize(float64(u.Size)))
					freed += u.Size
				}
			}()
			err := bk.Prune(cmd.Context(), ch, opts...)
			close(ch)
			<-printed
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Total:\t%s\n", units.HumanSize(float64(freed)))
			return nil
		})
	cmd.Flags().BoolVarP(&all, "all", "a", false, "also the records still worth keeping as cache (internal and frequently used ones)")
	cmd.Flags().DurationVar(&keep, "keep-duration", 0, "keep what was used within this long")
	cmd.Flags().StringArrayVar(&filters, "filter", nil, "only the records matching this filter (buildctl's syntax: type==regular, id==ID, description~=TEXT)")
	return cmd
}

// warnTo prints warnings on the command's stderr.
func warnTo(cmd *cobra.Command) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Fprintln(cmd.ErrOrStderr(), "commit-frontend: "+printable(fmt.Sprintf(format, args...)))
	}
}
