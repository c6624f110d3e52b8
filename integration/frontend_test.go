package integration

import (
	"archive/tar"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/commit-frontend/commit-frontend/changeset"
)

// copyBase copies the busybox rootfs to dir, as a container rootfs would start.
func copyBase(t *testing.T, dir string) {
	t.Helper()
	r := run(t, "", "cp", "-a", filepath.Join(env.dir, "busybox-rootfs")+"/.", dir)
	if r.err != nil {
		t.Fatalf("cp: %v %s", r.err, r.stderr)
	}
}

func TestBuildCommitfileInProcess(t *testing.T) {
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	copyBase(t, rootfs)
	writeFiles(t, rootfs, map[string]string{"etc/hello": "hello\n"})
	if err := os.Remove(filepath.Join(rootfs, "bin", "vi")); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": `FROM ` + env.base.Ref + `
ARG GREETING=hi
ENV GREETING=${GREETING} FOO=bar
COMMIT --author="Jane Doe" --message="first commit" rootfs
RUN echo $GREETING > /greeting
LABEL org.example.a=b
EXPOSE 8080 53/udp
WORKDIR /srv
USER 1000:1000
HEALTHCHECK --interval=5s --retries=2 CMD ["true"]
CMD ["sh", "-c", "cat /greeting"]
`})
	out := filepath.Join(dir, "out.tar")
	cf(t, dir, "build", "--progress", "plain", "--build-arg", "GREETING=hello-arg",
		"--build-context", "rootfs="+rootfs, "--output", "type=oci,dest="+out,
		"--metadata-file", filepath.Join(dir, "md.json"), filepath.Join(dir, "ctx"))

	base := baseImage(t)
	img := readOCITar(t, out)
	// WORKDIR makes its directory: a layer, as in a Dockerfile.
	if got, want := len(img.Manifest.Layers), len(base.Manifest.Layers)+3; got != want {
		t.Fatalf("layers: got %d, want %d (base + COMMIT + RUN + WORKDIR)", got, want)
	}
	for i, l := range base.Manifest.Layers {
		if img.Manifest.Layers[i].Digest != l.Digest {
			t.Errorf("base layer %d: digest %s, want the base's %s", i, img.Manifest.Layers[i].Digest, l.Digest)
		}
	}
	if len(img.Config.RootFS.DiffIDs) != len(img.Manifest.Layers) {
		t.Errorf("diff_ids: %d for %d layers", len(img.Config.RootFS.DiffIDs), len(img.Manifest.Layers))
	}
	nonEmpty := nonEmptyHistory(&img.Config)
	if len(nonEmpty) != len(img.Manifest.Layers) {
		t.Fatalf("non-empty history entries: %d for %d layers: %+v", len(nonEmpty), len(img.Manifest.Layers), img.Config.History)
	}
	if !reflect.DeepEqual(img.Config.History[:len(base.Config.History)], base.Config.History) {
		t.Errorf("base history not kept:\n%+v\nwant prefix\n%+v", img.Config.History, base.Config.History)
	}
	commit := nonEmpty[len(base.Manifest.Layers)]
	if commit.CreatedBy != "COMMIT rootfs" || commit.Author != "Jane Doe" || commit.Comment != "first commit" {
		t.Errorf("COMMIT history entry: %+v", commit)
	}
	if img.Config.Author != "Jane Doe" {
		t.Errorf("author: %q", img.Config.Author)
	}
	var createdBy []string
	for _, h := range img.Config.History[len(base.Config.History):] {
		createdBy = append(createdBy, h.CreatedBy)
		if h.Created == nil {
			t.Errorf("history entry %q has no created time", h.CreatedBy)
		}
	}
	// BuildKit's created_by for every instruction but COMMIT.
	wantCreatedBy := []string{
		"ARG GREETING=hello-arg",
		"ENV GREETING=hello-arg FOO=bar",
		"COMMIT rootfs",
		"RUN |1 GREETING=hello-arg /bin/sh -c echo $GREETING > /greeting # buildkit",
		"LABEL org.example.a=b",
		"EXPOSE [53/udp 8080/tcp]",
		"WORKDIR /srv",
		"USER 1000:1000",
	}
	if !reflect.DeepEqual(createdBy[:len(wantCreatedBy)], wantCreatedBy) {
		t.Errorf("created_by:\n%q\nwant prefix\n%q", createdBy, wantCreatedBy)
	}
	c := img.Config.Config
	if !reflect.DeepEqual(c.Cmd, []string{"sh", "-c", "cat /greeting"}) {
		t.Errorf("Cmd: %q", c.Cmd)
	}
	if c.WorkingDir != "/srv" || c.User != "1000:1000" || c.Labels["org.example.a"] != "b" {
		t.Errorf("config: %+v", c)
	}
	if _, ok := c.ExposedPorts["53/udp"]; !ok {
		t.Errorf("ExposedPorts: %v", c.ExposedPorts)
	}
	if c.Healthcheck == nil || c.Healthcheck.Interval != 5*time.Second || c.Healthcheck.Retries != 2 {
		t.Errorf("Healthcheck: %+v", c.Healthcheck)
	}
	if !contains(c.Env, "GREETING=hello-arg") || !contains(c.Env, "FOO=bar") {
		t.Errorf("Env: %q", c.Env)
	}
	if img.Config.Architecture != base.Config.Architecture || img.Config.OS != "linux" {
		t.Errorf("platform: %s/%s", img.Config.OS, img.Config.Architecture)
	}

	commitLayer := layerEntries(t, img.Layers[len(base.Manifest.Layers)])
	if e, ok := commitLayer["etc/hello"]; !ok || string(e.Data) != "hello\n" {
		t.Errorf("COMMIT layer: etc/hello = %+v", e)
	}
	if _, ok := commitLayer["bin/.wh.vi"]; !ok {
		t.Errorf("COMMIT layer has no whiteout for the deleted bin/vi: %v", keys(commitLayer))
	}
	if _, ok := commitLayer["bin/sh"]; ok {
		t.Errorf("COMMIT layer carries the unchanged bin/sh")
	}
	runLayer := layerEntries(t, img.Layers[len(base.Manifest.Layers)+1])
	if e := runLayer["greeting"]; string(e.Data) != "hello-arg\n" {
		t.Errorf("RUN layer: greeting = %q", e.Data)
	}
}

// TestOptionsOnly builds from frontend options alone, as `buildctl --opt` does.
func TestOptionsOnly(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "cs")
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "app/run.sh", Mode: 0o755, Uid: 1000, Gid: 1000, Size: 10}, "echo run!\n")
	})
	writeFiles(t, dir, map[string]string{"ctx/.keep": ""})
	out := filepath.Join(dir, "out.tar")
	cf(t, dir, "build", "--progress", "quiet",
		"--opt", "base="+env.base.Ref, "--opt", "commit=rootfs",
		"--opt", "change=ENV A=1\nENTRYPOINT [\"/app/run.sh\"]\nEXPOSE 80",
		"--opt", "author=ci", "--opt", "message=step 1",
		"--build-context", "rootfs="+cs, "--output", "type=oci,dest="+out, filepath.Join(dir, "ctx"))
	img := readOCITar(t, out)
	base := baseImage(t)
	if len(img.Manifest.Layers) != len(base.Manifest.Layers)+1 {
		t.Fatalf("layers: %d", len(img.Manifest.Layers))
	}
	added := img.Config.History[len(base.Config.History):]
	// The changes are config only: one history entry, as docker commit.
	if len(added) != 1 || added[0].CreatedBy != "COMMIT rootfs" || added[0].Author != "ci" || added[0].Comment != "step 1" {
		t.Fatalf("history: %+v", added)
	}
	if c := img.Config.Config; !contains(c.Env, "A=1") || len(c.ExposedPorts) != 1 || len(c.Entrypoint) != 1 {
		t.Errorf("config %+v", c)
	}
	if img.Config.Config.Cmd != nil {
		t.Errorf("ENTRYPOINT must reset the base CMD, as docker commit does: Cmd=%q", img.Config.Config.Cmd)
	}
	l := layerEntries(t, img.Layers[len(img.Layers)-1])
	e, ok := l["app/run.sh"]
	if !ok || e.Header.Uid != 1000 || e.Header.Gid != 1000 || e.Header.Mode&0o7777 != 0o755 || string(e.Data) != "echo run!\n" {
		t.Errorf("app/run.sh: %+v %q", e.Header, e.Data)
	}
}

// TestChangeSetFidelity sends a change set with owners, special modes,
// capabilities, devices, fifos, hard links, deletions, a replaced directory
// and a name that is not UTF-8, and checks the committed layer.
func TestChangeSetFidelity(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "cs")
	mtime := time.Date(2020, 2, 3, 4, 5, 6, 0, time.UTC)
	capXattr := "\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o1777, Uid: 1000, Gid: 1000, ModTime: mtime}, "")
		entry(t, w, &tar.Header{Name: "data/setuid", Mode: 0o4755, Uid: 0, Gid: 0, Size: 2, ModTime: mtime}, "su")
		entry(t, w, &tar.Header{Name: "data/setgid", Mode: 0o2755, Uid: 1000, Gid: 50, Size: 2, ModTime: mtime}, "sg")
		entry(t, w, &tar.Header{Name: "data/ping", Mode: 0o755, Size: 4, ModTime: mtime, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": capXattr}}, "ping")
		entry(t, w, &tar.Header{Typeflag: tar.TypeLink, Name: "data/hardlink", Linkname: "data/setgid", Mode: 0o2755, Uid: 1000, Gid: 50, ModTime: mtime}, "")
		entry(t, w, &tar.Header{Typeflag: tar.TypeSymlink, Name: "data/escape", Linkname: "../../../../etc/shadow", ModTime: mtime}, "")
		entry(t, w, &tar.Header{Typeflag: tar.TypeChar, Name: "data/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}, "")
		entry(t, w, &tar.Header{Typeflag: tar.TypeFifo, Name: "data/fifo", Mode: 0o644, ModTime: mtime}, "")
		entry(t, w, &tar.Header{Name: "data/with space\nand newline", Mode: 0o644, Size: 1, ModTime: mtime}, "x")
		entry(t, w, &tar.Header{Name: "data/latin1-\xe9t\xe9", Mode: 0o644, Size: 1, ModTime: mtime, Format: tar.FormatPAX}, "y")
		entry(t, w, &tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755, ModTime: mtime}, "")
		entry(t, w, &tar.Header{Name: "etc/only", Mode: 0o600, Size: 4, ModTime: mtime}, "only")
		_ = w.Delete("bin/vi")
		_ = w.Opaque("etc")
	})
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": "FROM " + env.base.Ref + "\nCOMMIT rootfs\n"})
	out := filepath.Join(dir, "out.tar")
	cf(t, dir, "build", "--progress", "quiet", "--build-context", "rootfs="+cs,
		"--output", "type=oci,dest="+out, filepath.Join(dir, "ctx"))
	img := readOCITar(t, out)
	l := layerEntries(t, img.Layers[len(img.Layers)-1])
	check := func(name string, f func(h *tar.Header) bool) {
		t.Helper()
		e, ok := l[name]
		if !ok {
			t.Errorf("%q missing from the layer (has %q)", name, keys(l))
			return
		}
		if !f(e.Header) {
			t.Errorf("%q: %+v", name, e.Header)
		}
	}
	check("data", func(h *tar.Header) bool { return h.Mode&0o7777 == 0o1777 && h.Uid == 1000 && h.Gid == 1000 })
	check("data/setuid", func(h *tar.Header) bool { return h.Mode&0o7777 == 0o4755 && h.ModTime.Equal(mtime) })
	// The two names of the hard link: one carries the file, the other links to it.
	regular, link := "data/setgid", "data/hardlink"
	if l[regular].Header != nil && l[regular].Header.Typeflag == tar.TypeLink {
		regular, link = link, regular
	}
	check(regular, func(h *tar.Header) bool { return h.Mode&0o7777 == 0o2755 && h.Uid == 1000 && h.Gid == 50 })
	check(link, func(h *tar.Header) bool { return h.Typeflag == tar.TypeLink && h.Linkname == regular })
	check("data/ping", func(h *tar.Header) bool { return h.PAXRecords["SCHILY.xattr.security.capability"] == capXattr })
	check("data/escape", func(h *tar.Header) bool {
		return h.Typeflag == tar.TypeSymlink && h.Linkname == "../../../../etc/shadow"
	})
	check("data/null", func(h *tar.Header) bool { return h.Typeflag == tar.TypeChar && h.Devmajor == 1 && h.Devminor == 3 })
	check("data/fifo", func(h *tar.Header) bool { return h.Typeflag == tar.TypeFifo })
	check("data/with space\nand newline", func(h *tar.Header) bool { return h.Size == 1 })
	check("data/latin1-\xe9t\xe9", func(h *tar.Header) bool { return h.Size == 1 })
	check("etc/only", func(h *tar.Header) bool { return h.Mode&0o7777 == 0o600 })
	check("bin/.wh.vi", func(h *tar.Header) bool { return true })
	// The replaced etc/ loses what the base had in it.
	if _, ok := l["etc/.wh..wh..opq"]; !ok {
		if _, ok := l["etc/.wh.passwd"]; !ok {
			t.Errorf("etc/ was replaced but the layer neither marks it opaque nor deletes etc/passwd: %q", keys(l))
		}
	}
}

// TestEmptyCommit commits a change set that changes nothing: no layer, one
// empty_layer history entry.
func TestEmptyCommit(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "cs")
	writeChangeSet(t, cs, func(*changeset.Writer) {})
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": "FROM " + env.base.Ref + "\nCOMMIT --message=nothing rootfs\n"})
	out := filepath.Join(dir, "out.tar")
	cf(t, dir, "build", "--progress", "quiet", "--build-context", "rootfs="+cs,
		"--output", "type=oci,dest="+out, filepath.Join(dir, "ctx"))
	img := readOCITar(t, out)
	base := baseImage(t)
	if len(img.Manifest.Layers) != len(base.Manifest.Layers) {
		t.Fatalf("an empty commit added layers: %d vs %d", len(img.Manifest.Layers), len(base.Manifest.Layers))
	}
	last := img.Config.History[len(img.Config.History)-1]
	if !last.EmptyLayer || last.Comment != "nothing" || last.CreatedBy != "COMMIT rootfs" {
		t.Errorf("last history entry: %+v", last)
	}
}

// TestSourceDateEpoch builds twice with SOURCE_DATE_EPOCH and gets the same
// image, with the epoch as the time of every new history entry.
func TestSourceDateEpoch(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "cs")
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "f", Mode: 0o644, Size: 1, ModTime: time.Unix(1e9, 0)}, "f")
	})
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": "FROM " + env.base.Ref + "\nCOMMIT rootfs\nENV X=1\n"})
	var ids []string
	for i := 0; i < 2; i++ {
		out := filepath.Join(dir, "out.tar")
		cf(t, dir, "build", "--progress", "quiet", "--build-arg", "SOURCE_DATE_EPOCH=1000000000", "--no-cache",
			"--build-context", "rootfs="+cs, "--output", "type=oci,dest="+out, filepath.Join(dir, "ctx"))
		img := readOCITar(t, out)
		ids = append(ids, img.ConfigID)
		for _, h := range img.Config.History[len(baseImage(t).Config.History):] {
			if h.Created == nil || h.Created.Unix() != 1e9 {
				t.Errorf("history %q created %v, want the epoch", h.CreatedBy, h.Created)
			}
		}
	}
	if ids[0] != ids[1] {
		t.Errorf("two builds with SOURCE_DATE_EPOCH differ: %s vs %s", ids[0], ids[1])
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "cs")
	writeChangeSet(t, cs, func(*changeset.Writer) {})
	for _, tc := range []struct {
		name       string
		commitfile string
		args       []string
		want       []string
	}{
		{"unknown instruction", "FROM scratch\nENV A=1\nFROBNICATE x\n", nil, []string{"unknown instruction: FROBNICATE", "Commitfile:3:"}},
		{"malformed COMMIT", "FROM scratch\nCOMMIT a b\n", nil, []string{"COMMIT takes one context name", "Commitfile:2:"}},
		{"no FROM", "COMMIT rootfs\n", nil, []string{"no build stage", "Commitfile:1:"}},
		{"missing context", "FROM scratch\n\nCOMMIT nosuchctx\n", nil, []string{`"nosuchctx"`, "Commitfile:3:"}},
		{"missing base image", "FROM " + env.reg.Host + "/no/such:image\nCOMMIT rootfs\n", nil, []string{env.reg.Host + "/no/such:image", "Commitfile:1:"}},
		{"bad change", "FROM scratch\n", []string{"--opt", "change=ENV A=1\nRUN rm -rf /"}, []string{"change line 2", "RUN is not supported by --change"}},
		{"bad stop signal", "FROM scratch\nSTOPSIGNAL SIGNOPE\n", nil, []string{"SIGNOPE", "Commitfile:2:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctxDir := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			writeFiles(t, ctxDir, map[string]string{"Commitfile": tc.commitfile})
			out := filepath.Join(ctxDir, "out.tar")
			args := append([]string{"build", "--progress", "plain", "--build-context", "rootfs=" + cs, "--output", "type=oci,dest=" + out}, tc.args...)
			r := cfFail(t, dir, append(args, ctxDir)...)
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error output lacks %q:\n%s", w, r.stderr)
				}
			}
			if st, err := os.Stat(out); err == nil && st.Size() > 0 {
				t.Errorf("a failed build exported %d bytes", st.Size())
			}
		})
	}
}

// writeChangeSet writes a change-set context into dir.
func writeChangeSet(t *testing.T, dir string, fill func(w *changeset.Writer)) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := changeset.Create(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	fill(w)
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func entry(t *testing.T, w *changeset.Writer, h *tar.Header, data string) {
	t.Helper()
	if h.Typeflag == 0 {
		h.Typeflag = tar.TypeReg
	}
	if h.ModTime.IsZero() {
		h.ModTime = time.Unix(1e9, 0)
	}
	if err := w.WriteEntry(h, strings.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestNamedContexts takes the base from --build-context in each form the
// build command accepts: an OCI layout directory and a docker-image ref.
func TestNamedContexts(t *testing.T) {
	dir := t.TempDir()
	cs := filepath.Join(dir, "cs")
	writeChangeSet(t, cs, func(w *changeset.Writer) {
		entry(t, w, &tar.Header{Name: "named", Mode: 0o644, Size: 6}, "named\n")
	})
	writeFiles(t, dir, map[string]string{"ctx/Commitfile": "FROM base\nCOMMIT rootfs\n"})
	base := baseImage(t)
	for _, spec := range []string{
		"oci-layout://" + env.base.Layout,
		"oci-layout://" + env.base.Layout + ":latest",
		"docker-image://" + env.base.Ref,
	} {
		t.Run(spec[:strings.Index(spec, ":")], func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out.tar")
			cf(t, dir, "build", "--progress", "quiet", "--build-context", "base="+spec, "--build-context", "rootfs="+cs,
				"--output", "type=oci,dest="+out, filepath.Join(dir, "ctx"))
			img := readOCITar(t, out)
			if len(img.Manifest.Layers) != len(base.Manifest.Layers)+1 || img.Manifest.Layers[0].Digest != base.Manifest.Layers[0].Digest {
				t.Errorf("layers %+v, want the base's and one more", img.Manifest.Layers)
			}
			if !reflect.DeepEqual(img.Config.History[:len(base.Config.History)], base.Config.History) {
				t.Errorf("base history not kept: %+v", img.Config.History)
			}
		})
	}
	r := cfFail(t, dir, "build", "--build-context", "base=oci-layout://"+env.base.Layout+":nosuchtag", filepath.Join(dir, "ctx"))
	if !strings.Contains(r.stderr, `no image tagged "nosuchtag"`) {
		t.Errorf("stderr: %s", r.stderr)
	}
}
