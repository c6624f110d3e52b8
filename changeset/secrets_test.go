package changeset

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// secretFixture is one file of each credential kind the scan knows, and
// look-alikes that hold none.
var secretFixture = []struct{ path, contents, kind string }{
	{"root/.ssh/id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----\n", "an SSH private key"},
	{"root/.ssh/id_ed25519.pub", "ssh-ed25519 AAAA root@host\n", ""},
	{"root/.ssh/known_hosts", "host ssh-ed25519 AAAA\n", ""},
	{"home/u/.ssh/deploy", "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\n", "a PEM private key"},
	{"home/u/.gnupg/private-keys-v1.d/0123.key", "(protected-private-key)", "a PGP private key"},
	{"home/u/export.asc", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQ\n", "a PGP private key"},
	{"home/u/public.asc", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ\n", ""},
	{"etc/ssl/private/server.key", "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n", "a PEM private key"},
	{"etc/ssl/certs/ca.pem", "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n", ""},
	{"root/.docker/config.json", `{"auths":{"registry.example.com":{"auth":"dXNlcjpwYXNz"}}}`, "registry credentials (docker's auths)"},
	{"home/u/.docker/config.json", `{"auths":{},"credsStore":"pass"}`, ""},
	{"root/.git-credentials", "https://u:token@example.com\n", "git credentials"},
	{"root/.aws/credentials", "[default]\naws_access_key_id = AKIA\n", "AWS credentials"},
	{"root/.aws/config", "[default]\nregion = eu-west-1\n", ""},
	{"root/.config/gcloud/application_default_credentials.json", `{"type":"authorized_user"}`, "Google Cloud credentials"},
	{"root/.azure/msal_token_cache.json", `{}`, "Azure credentials"},
	{"srv/app/.npmrc", "//registry.npmjs.org/:_authToken=npm_abc\n", "an npm token"},
	{"home/u/.npmrc", "registry=https://registry.npmjs.org/\n", ""},
	{"root/.pypirc", "[pypi]\nusername = __token__\npassword = pypi-abc\n", "a PyPI password"},
	{"root/.bash_history", "export TOKEN=abc\n", "a shell history"},
	{"home/u/.bash_history", "", ""},
	{"srv/app/main.go", "package main\n", ""},
}

// TestSecretsFound: every credential kind is named by path and kind, in
// both readers; look-alikes (public keys, certificates, configs without
// auths, empty histories) are not; without ScanSecrets nothing is read.
func TestSecretsFound(t *testing.T) {
	lower, upper := t.TempDir(), t.TempDir()
	var want []Secret
	for _, f := range secretFixture {
		p := filepath.Join(upper, f.path)
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(f.contents), 0o600))
		if f.kind != "" {
			want = append(want, Secret{Path: "/" + f.path, Kind: f.kind})
		}
	}
	for name, read := range map[string]func(w *Writer) error{
		"upperdir": func(w *Writer) error { return FromUpperdir(context.Background(), upper, UpperOpt{}, w) },
		"diff":     func(w *Writer) error { return FromDiff(context.Background(), lower, upper, w) },
	} {
		w, err := Create(t.TempDir(), nil)
		must(t, err)
		w.ScanSecrets()
		must(t, read(w))
		_, err = w.Close()
		must(t, err)
		got := map[string]string{}
		for _, s := range w.Secrets() {
			got[s.Path] = s.Kind
		}
		wantMap := map[string]string{}
		for _, s := range want {
			wantMap[s.Path] = s.Kind
		}
		if !reflect.DeepEqual(got, wantMap) || len(w.Secrets()) != len(want) {
			t.Errorf("%s: found\n%v\nwant\n%v", name, got, wantMap)
		}

		w, err = Create(t.TempDir(), nil)
		must(t, err)
		must(t, read(w))
		_, err = w.Close()
		must(t, err)
		if s := w.Secrets(); len(s) != 0 {
			t.Errorf("%s: found %v without a scan", name, s)
		}
	}
}
