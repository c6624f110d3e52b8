// Package solve runs the commit frontend in-process against a buildkitd, with
// BuildKit's progress display, and writes the metadata file.
package solve

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"

	"github.com/commit-frontend/commit-frontend/frontend"
	"github.com/moby/buildkit/client"
	"github.com/moby/buildkit/util/progress/progressui"
	"github.com/pkg/errors"
	"golang.org/x/sync/errgroup"
)

// DefaultAddr is buildkitd's default address.
const DefaultAddr = "unix:///run/buildkit/buildkitd.sock"

// Addr returns the buildkitd address: the flag, else BUILDKIT_HOST, else the default.
func Addr(flag string) string {
	if flag != "" {
		return flag
	}
	if v := os.Getenv("BUILDKIT_HOST"); v != "" {
		return v
	}
	return DefaultAddr
}

// Connect opens a client to buildkitd and checks that it answers.
func Connect(ctx context.Context, addr string) (*client.Client, error) {
	c, err := client.New(ctx, addr)
	if err != nil {
		return nil, errors.Wrapf(err, "connecting to buildkitd at %s", addr)
	}
	if _, err := c.Info(ctx); err != nil {
		c.Close()
		return nil, errors.Wrapf(err, "buildkitd at %s does not answer", addr)
	}
	return c, nil
}

// Run solves with the commit frontend in-process, showing progress on stderr
// in the given mode ("auto", "plain", "tty", "quiet", "rawjson").
func Run(ctx context.Context, c *client.Client, opt client.SolveOpt, progress string) (*client.SolveResponse, error) {
	mode := progressui.DisplayMode(progress)
	d, err := progressui.NewDisplay(os.Stderr, mode)
	if err != nil {
		return nil, errors.Wrapf(err, "--progress=%s", progress)
	}
	ch := make(chan *client.SolveStatus)
	var resp *client.SolveResponse
	eg, ectx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		var err error
		resp, err = c.Build(ectx, opt, "", frontend.Build, ch)
		return err
	})
	eg.Go(func() error {
		_, err := d.UpdateFrom(context.WithoutCancel(ectx), ch)
		return err
	})
	if err := eg.Wait(); err != nil {
		return nil, err
	}
	return resp, nil
}

// WriteMetadata writes the exporter response as buildctl's --metadata-file
// does: values that are base64-encoded JSON are decoded in place.
func WriteMetadata(path string, resp map[string]string) error {
	out := make(map[string]any, len(resp))
	for k, v := range resp {
		out[k] = v
		if dt, err := base64.StdEncoding.DecodeString(v); err == nil {
			var j any
			if json.Unmarshal(dt, &j) == nil {
				out[k] = j
			}
		}
	}
	dt, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, dt, 0o644)
}

// CheckProgress refuses a progress mode that the display would refuse, so
// that the mistake is found before anything is paused or read.
func CheckProgress(mode string) error {
	switch progressui.DisplayMode(mode) {
	case "", progressui.AutoMode, progressui.QuietMode, progressui.TtyMode, progressui.PlainMode, progressui.RawJSONMode:
		return nil
	}
	return errors.Errorf("--progress=%s: want auto, plain, tty, quiet or rawjson", mode)
}
