package container

import (
	"context"
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/pkg/errors"
)

func TestPauseMayHaveTakenEffect(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{context.DeadlineExceeded, true},
		{errors.Wrap(context.Canceled, "pausing"), true},
		{fmt.Errorf("rpc: %w", errdefs.ErrUnavailable), true},
		// runc's answer for a container someone else paused.
		{errors.Wrap(errdefs.ErrUnknown, "cannot pause a paused container"), false},
		// docker's.
		{fmt.Errorf("Container x is already paused: %w", errdefs.ErrConflict), false},
		{errdefs.ErrFailedPrecondition, false},
	} {
		if got := pauseMayHaveTakenEffect(tc.err); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.err, got, tc.want)
		}
	}
}
