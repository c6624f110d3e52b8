package integration

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
)

// credentialFiles are one file of each credential kind the scan knows,
// written by a container's script; and the kind each is named as.
var credentialFiles = map[string]string{
	"/root/.ssh/id_ed25519":                                     "an SSH private key",
	"/root/.docker/config.json":                                 "registry credentials (docker's auths)",
	"/root/.git-credentials":                                    "git credentials",
	"/root/.aws/credentials":                                    "AWS credentials",
	"/root/.config/gcloud/application_default_credentials.json": "Google Cloud credentials",
	"/root/.azure/msal_token_cache.json":                        "Azure credentials",
	"/root/.gnupg/private-keys-v1.d/0123.key":                   "a PGP private key",
	"/etc/ssl/private/server.key":                               "a PEM private key",
	"/srv/app/.npmrc":                                           "an npm token",
	"/root/.pypirc":                                             "a PyPI password",
	"/root/.bash_history":                                       "a shell history",
}

const credentialScript = "mkdir -p /root/.ssh /root/.docker /root/.aws /root/.config/gcloud /root/.azure /root/.gnupg/private-keys-v1.d /etc/ssl/private /srv/app && " +
	"printf '%s\\n' '-----BEGIN OPENSSH PRIVATE KEY-----' b3Bl '-----END OPENSSH PRIVATE KEY-----' > /root/.ssh/id_ed25519 && " +
	"echo 'ssh-ed25519 AAAA root@h' > /root/.ssh/id_ed25519.pub && " +
	"echo '{\"auths\":{\"registry.example.com\":{\"auth\":\"dXNlcjpwYXNz\"}}}' > /root/.docker/config.json && " +
	"echo 'https://u:t@example.com' > /root/.git-credentials && " +
	"printf '[default]\\naws_secret_access_key = x\\n' > /root/.aws/credentials && " +
	"echo '{}' > /root/.config/gcloud/application_default_credentials.json && " +
	"echo '{}' > /root/.azure/msal_token_cache.json && " +
	"echo k > /root/.gnupg/private-keys-v1.d/0123.key && " +
	"printf '%s\\n' '-----BEGIN EC PRIVATE KEY-----' MHc '-----END EC PRIVATE KEY-----' > /etc/ssl/private/server.key && " +
	"echo '//registry.npmjs.org/:_authToken=npm_abc' > /srv/app/.npmrc && " +
	"printf '[pypi]\\npassword = pypi-abc\\n' > /root/.pypirc && " +
	"echo 'export TOKEN=abc' > /root/.bash_history && " +
	"echo main > /srv/app/main"

// TestCommitSecretScan commits a running container holding one file of
// each credential kind: by default each is named on stderr with what it
// is, counted in the metadata, and the image is made; --secret-scan=fail
// refuses the commit naming them, makes no image and leaves the container
// running; --exclude leaves them out and nothing is said.
func TestCommitSecretScan(t *testing.T) {
	const ns = "default"
	ct := startContainer(t, ns, "overlayfs", "secrets", credentialScript+"; touch /ready; exec sleep 3600", false)
	md := filepath.Join(t.TempDir(), "md.json")
	r := cf(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--metadata-file", md, "secrets", "example.com/secrets:warn")...)...)
	for p, kind := range credentialFiles {
		if want := `"` + p + `" goes into the image and looks like ` + kind; !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %s", want)
		}
	}
	for _, p := range []string{"id_ed25519.pub", "/srv/app/main"} {
		if strings.Contains(r.stderr, p) {
			t.Errorf("stderr names %s, which holds no credential:\n%s", p, r.stderr)
		}
	}
	if got := readMetadata(t, md)["commit-frontend.secrets-found"]; got != "11" {
		t.Errorf("metadata secrets-found=%q, want 11", got)
	}
	storedImage(t, ct, "example.com/secrets:warn")

	r = cfFail(t, "", append([]string{"commit"}, append(ctrArgs(ns), "--secret-scan=fail", "secrets", "example.com/secrets:fail")...)...)
	if !strings.Contains(r.stderr, "--secret-scan=fail: the changes of secrets hold 11 credential file(s)") {
		t.Errorf("the refusal does not say why:\n%s", r.stderr)
	}
	for p, kind := range credentialFiles {
		if want := `"` + p + `" (` + kind + `)`; !strings.Contains(r.stderr, want) {
			t.Errorf("the refusal does not name %s", want)
		}
	}
	if _, err := ct.c.ImageService().Get(context.Background(), "example.com/secrets:fail"); !errdefs.IsNotFound(err) {
		t.Errorf("a refused commit made an image: %v", err)
	}
	if st := ct.status(t); st != containerd.Running {
		t.Errorf("the container is %s after the refused commit", st)
	}

	args := append([]string{"commit"}, ctrArgs(ns)...)
	for p := range credentialFiles {
		args = append(args, "--exclude", p)
	}
	r = cf(t, "", append(args, "--secret-scan=fail", "secrets", "example.com/secrets:clean")...)
	if strings.Contains(r.stderr, "looks like") || strings.Contains(r.stderr, "credential") {
		t.Errorf("credentials left out are still reported:\n%s", r.stderr)
	}
	tree := imageTree(t, ct.c, "example.com/secrets:clean", "overlayfs")
	for p := range credentialFiles {
		if _, ok := tree[strings.TrimPrefix(p, "/")]; ok {
			t.Errorf("%s is in the image", p)
		}
	}
	if _, ok := tree["srv/app/main"]; !ok {
		t.Error("/srv/app/main is not in the image")
	}
}

// TestCommitUnsetAnnotateOmitHistory: --unset-env and --unset-label take
// what their patterns match out of the config (the --change flags' too),
// --annotation puts KEY=VALUE on the manifest, --omit-history leaves one
// blank entry per layer; through a buildkitd and through the engine, and
// for a build. The image runs.
func TestCommitUnsetAnnotateOmitHistory(t *testing.T) {
	const ns = "share"
	ct := startContainer(t, ns, "overlayfs", "share-1", "echo x > /x", true)
	root := t.TempDir()
	flags := []string{"-m", "a message that must not travel", "-a", "someone",
		"-c", "ENV AWS_SECRET_ACCESS_KEY=s3cr3t", "-c", "ENV AWS_REGION=eu", "-c", "ENV KEEP=1",
		"-c", "LABEL io.kubernetes.pod.name=p", "-c", "LABEL app=a",
		"--unset-env", "AWS_*", "--unset-label", "io.kubernetes.*",
		"--annotation", "org.opencontainers.image.source=https://example.com/src", "--annotation", "com.example.empty=",
		"--omit-history"}
	check := func(t *testing.T, ref string, env, labels []string) {
		t.Helper()
		img := mustImage(t, ct.c, ref)
		cfg := imageConfig(t, ct.c, img)
		if got := strings.Join(cfg.Config.Env, " "); got != strings.Join(env, " ") {
			t.Errorf("env %q, want %q", cfg.Config.Env, env)
		}
		var gotLabels []string
		for k, v := range cfg.Config.Labels {
			gotLabels = append(gotLabels, k+"="+v)
		}
		if strings.Join(gotLabels, " ") != strings.Join(labels, " ") {
			t.Errorf("labels %q, want %q", gotLabels, labels)
		}
		if len(cfg.History) != len(cfg.RootFS.DiffIDs) {
			t.Errorf("%d history entries for %d layers: %+v", len(cfg.History), len(cfg.RootFS.DiffIDs), cfg.History)
		}
		for i, h := range cfg.History {
			if h.CreatedBy != "" || h.Author != "" || h.Comment != "" || h.EmptyLayer || h.Created == nil || cfg.Created == nil || !h.Created.Equal(*cfg.Created) {
				t.Errorf("history entry %d tells more than a layer and the image's time: %+v (image created %v)", i, h, cfg.Created)
			}
		}
		m := imageManifest(t, ct.c, img)
		if m.Annotations["org.opencontainers.image.source"] != "https://example.com/src" {
			t.Errorf("manifest annotations %v", m.Annotations)
		}
		if v, ok := m.Annotations["com.example.empty"]; !ok || v != "" {
			t.Errorf("manifest annotations %v: want com.example.empty, empty", m.Annotations)
		}
	}
	wantEnv := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "KEEP=1"}
	t.Run("buildkitd", func(t *testing.T) {
		cf(t, "", append(append([]string{"commit"}, ctrArgs(ns)...), append(flags, "share-1", "example.com/share:bk")...)...)
		check(t, "example.com/share:bk", wantEnv, []string{"app=a"})
	})
	t.Run("engine", func(t *testing.T) {
		if r := runEngine(t, root, append(append([]string{"commit", "--namespace", ns}, flags...), "share-1", "example.com/share:engine")...); r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		check(t, "example.com/share:engine", wantEnv, []string{"app=a"})
		if out, err := env.ctrd.Ctr(context.Background(), ns, "run", "--rm", "example.com/share:engine", "share-run", "cat", "/x"); err != nil || out != "x\n" {
			t.Errorf("run: %q %v", out, err)
		}
	})
	t.Run("build", func(t *testing.T) {
		if _, err := env.ctrd.Ctr(context.Background(), ns, "images", "tag", "--force", "docker.io/library/busybox:latest", "local.invalid/share/busybox:1"); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"Commitfile": "FROM local.invalid/share/busybox:1\nENV AWS_PROFILE=p KEEP=1\nLABEL io.kubernetes.x=1 app=a\nRUN echo x > /x\n"})
		r := runEngine(t, root, "build", "--namespace", ns, "--unset-env", "AWS_*", "--unset-label", "io.kubernetes.*",
			"--annotation", "org.opencontainers.image.source=https://example.com/src", "--annotation", "com.example.empty=", "--omit-history",
			"-t", "example.com/share:built", dir)
		if r.err != nil {
			t.Fatalf("%v\n%s", r.err, r.stderr)
		}
		check(t, "example.com/share:built", wantEnv, []string{"app=a"})
	})
}
