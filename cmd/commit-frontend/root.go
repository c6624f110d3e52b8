package main

import (
	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "commit-frontend",
		Short:         "Commit containers and build pipelines into images through BuildKit",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return enterRootless(cmd)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.AddCommand(newBuildCommand(), newCommitCommand(), newHistoryCommand(), newDuCommand(), newPruneCommand())
	return root
}
