package main

import (
	"github.com/pkg/errors"
	"github.com/spf13/cobra"
)

func newCommitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
		Short: "Commit a containerd container into the containerd image store",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("commit is not available yet")
		},
	}
}
