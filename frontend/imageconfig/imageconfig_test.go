package imageconfig

import (
	"reflect"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/frontend/commitfile"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	ocispecs "github.com/opencontainers/image-spec/specs-go/v1"
)

func base() *dockerspec.DockerOCIImage {
	img := &dockerspec.DockerOCIImage{}
	img.OS, img.Architecture, img.Variant = "linux", "arm", "v7"
	img.Config.Env = []string{"PATH=/bin", "A=old"}
	img.Config.Cmd = []string{"sh"}
	img.Config.Entrypoint = []string{"/init"}
	img.Config.Labels = map[string]string{"keep": "1", "over": "old"}
	img.Config.ExposedPorts = map[string]struct{}{"22/tcp": {}}
	img.Config.Volumes = map[string]struct{}{"/data": {}}
	img.Config.WorkingDir = "/app"
	img.Config.OnBuild = []string{"RUN first"}
	img.History = []ocispecs.History{{CreatedBy: "base layer"}}
	return img
}

// apply runs change lines as `docker commit --change` would.
func apply(t *testing.T, img *dockerspec.DockerOCIImage, changes string) *dockerspec.DockerOCIImage {
	t.Helper()
	cmds, err := commitfile.ParseChanges(changes)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Change(img, cmds)
	if err != nil {
		t.Fatalf("%q: %v", changes, err)
	}
	return out
}

func TestChanges(t *testing.T) {
	for _, tc := range []struct {
		change string
		check  func(c dockerspec.DockerOCIImageConfig) bool
	}{
		{`CMD ["a", "b"]`, func(c dockerspec.DockerOCIImageConfig) bool { return reflect.DeepEqual(c.Cmd, []string{"a", "b"}) }},
		{`CMD echo $HOME`, func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Cmd, []string{"/bin/sh", "-c", "echo $HOME"})
		}},
		{`ENTRYPOINT ["/x"]`, func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Entrypoint, []string{"/x"}) && c.Cmd == nil
		}},
		{"CMD [\"c\"]\nENTRYPOINT /x -v", func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Entrypoint, []string{"/bin/sh", "-c", "/x -v"}) && reflect.DeepEqual(c.Cmd, []string{"c"})
		}},
		{"ENTRYPOINT [\"/x\"]\nCMD [\"c\"]", func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Entrypoint, []string{"/x"}) && reflect.DeepEqual(c.Cmd, []string{"c"})
		}},
		{"ENV A=new B=2\nENV B=3", func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Env, []string{"PATH=/bin", "A=new", "B=3"})
		}},
		{`LABEL over=new add="x y"`, func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Labels, map[string]string{"keep": "1", "over": "new", "add": "x y"})
		}},
		{`EXPOSE 80 53/udp 8000-8002`, func(c dockerspec.DockerOCIImageConfig) bool {
			return len(c.ExposedPorts) == 6 && has(c.ExposedPorts, "22/tcp", "80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp")
		}},
		{`VOLUME ["/v1", "/v2"]`, func(c dockerspec.DockerOCIImageConfig) bool { return has(c.Volumes, "/data", "/v1", "/v2") }},
		{`USER 1000:1000`, func(c dockerspec.DockerOCIImageConfig) bool { return c.User == "1000:1000" }},
		{`WORKDIR sub`, func(c dockerspec.DockerOCIImageConfig) bool { return c.WorkingDir == "/app/sub" }},
		{`WORKDIR /abs/../x`, func(c dockerspec.DockerOCIImageConfig) bool { return c.WorkingDir == "/x" }},
		{`STOPSIGNAL SIGKILL`, func(c dockerspec.DockerOCIImageConfig) bool { return c.StopSignal == "SIGKILL" }},
		{`HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --start-interval=3s --retries=4 CMD curl -f http://localhost/`, func(c dockerspec.DockerOCIImageConfig) bool {
			h := c.Healthcheck
			return h != nil && reflect.DeepEqual(h.Test, []string{"CMD-SHELL", "curl -f http://localhost/"}) &&
				h.Interval == 5*time.Second && h.Timeout == 2*time.Second && h.StartPeriod == time.Second &&
				h.StartInterval == 3*time.Second && h.Retries == 4
		}},
		{`HEALTHCHECK NONE`, func(c dockerspec.DockerOCIImageConfig) bool {
			return c.Healthcheck != nil && reflect.DeepEqual(c.Healthcheck.Test, []string{"NONE"})
		}},
		{`ENV B=$A-x C="q r" D=${PATH}`, func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.Env, []string{"PATH=/bin", "A=old", "B=old-x", "C=q r", "D=/bin"})
		}},
		{"ENV A=1\nLABEL a=$A", func(c dockerspec.DockerOCIImageConfig) bool { return c.Labels["a"] == "1" }},
		{`ONBUILD RUN make`, func(c dockerspec.DockerOCIImageConfig) bool {
			return reflect.DeepEqual(c.OnBuild, []string{"RUN first", "RUN make"})
		}},
	} {
		t.Run(tc.change, func(t *testing.T) {
			in := base()
			orig := Clone(in)
			out := apply(t, in, tc.change)
			if !tc.check(out.Config) {
				t.Errorf("config after %q: %+v", tc.change, out.Config)
			}
			if !reflect.DeepEqual(in, orig) {
				t.Errorf("the input config was changed")
			}
			// A change is config only, as in docker commit: no history.
			if !reflect.DeepEqual(out.History, in.History) {
				t.Errorf("history changed: %+v", out.History)
			}
			if out.OS != "linux" || out.Architecture != "arm" || out.Variant != "v7" {
				t.Errorf("platform changed: %s/%s/%s", out.OS, out.Architecture, out.Variant)
			}
		})
	}
}

func TestChangeErrors(t *testing.T) {
	for _, change := range []string{"STOPSIGNAL NOPE", "EXPOSE 70000", "EXPOSE 80/foo", "EXPOSE 90-80"} {
		cmd, err := commitfile.ParseChange(change)
		if err != nil {
			continue // refused by the parser already
		}
		if _, err := Change(base(), []instructions.Command{cmd}); err == nil {
			t.Errorf("%q: no error", change)
		}
	}
}

func TestShellForm(t *testing.T) {
	img := base()
	img.Config.Shell = []string{"/bin/bash", "-eu", "-c"}
	out := apply(t, img, "CMD echo hi")
	if !reflect.DeepEqual(out.Config.Cmd, []string{"/bin/bash", "-eu", "-c", "echo hi"}) {
		t.Errorf("CMD with SHELL: %q", out.Config.Cmd)
	}
}

func TestAddHistory(t *testing.T) {
	at := time.Unix(42, 0).UTC()
	img := AddHistory(base(), Entry{CreatedBy: "COMMIT c", Author: "me", Comment: "msg", Created: &at})
	h := img.History[len(img.History)-1]
	if h.CreatedBy != "COMMIT c" || h.Author != "me" || h.Comment != "msg" || !h.Created.Equal(at) || h.EmptyLayer {
		t.Errorf("entry %+v", h)
	}
	if img.Author != "me" {
		t.Errorf("image author %q", img.Author)
	}
	if len(base().History) != 1 {
		t.Errorf("base changed")
	}
}

func has(m map[string]struct{}, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}
