package changeset

import (
	"bytes"
	"encoding/json"
	"io"
	"path"
	"regexp"
	"strings"
)

// A Secret is a path of a change set that holds a credential, by its name
// and, where the name alone does not tell, its first bytes: what an image
// would hand to everyone who pulls it.
type Secret struct {
	// Path is the container path.
	Path string
	// Kind says what it holds ("an SSH private key").
	Kind string
}

// secretReadMax is the most of a file the scan reads, and the largest file
// whose contents it looks at: credential files are small.
const secretReadMax = 64 << 10

// ScanSecrets makes the readers look at every regular file they add for
// credentials (Secrets): SSH and PGP private keys, PEM private keys,
// docker's registry auths, .git-credentials, AWS, Google Cloud and Azure
// credential files, npm and PyPI tokens, shell histories. Names decide,
// and for names that may hold none (.npmrc, .docker/config.json, *.pem),
// the file's first 64 KiB.
func (w *Writer) ScanSecrets() { w.scan = true }

// Secrets returns what the scan found, in the order read.
func (w *Writer) Secrets() []Secret { return w.secrets }

var (
	pemPrivateKey = regexp.MustCompile(`-----BEGIN ((?:RSA |EC |DSA |ENCRYPTED |OPENSSH )?)PRIVATE KEY-----`)
	pgpPrivateKey = []byte("-----BEGIN PGP PRIVATE KEY BLOCK-----")
	npmToken      = regexp.MustCompile(`(?m)^\s*(?:[^#;\s]*:)?_(?:authToken|auth|password)\s*=\s*\S`)
	pypiPassword  = regexp.MustCompile(`(?m)^\s*password\s*[=:]\s*\S`)
)

// histories are the files shells and REPLs keep their command lines in.
var histories = map[string]bool{
	".bash_history": true, ".zsh_history": true, ".sh_history": true, ".ash_history": true, ".history": true,
	".python_history": true, ".mysql_history": true, ".psql_history": true, ".node_repl_history": true,
	".sqlite_history": true, ".rediscli_history": true, "fish_history": true,
}

// secretByName is what a path holds by its name alone, "" when the name
// does not tell.
func secretByName(rel string) string {
	base := path.Base(rel)
	dir := "/" + path.Dir(rel) + "/"
	switch {
	case histories[base]:
		return "a shell history"
	case base == ".git-credentials":
		return "git credentials"
	case base == "credentials" && strings.HasSuffix(dir, "/.aws/"):
		return "AWS credentials"
	case strings.Contains(dir, "/.config/gcloud/") &&
		(base == "credentials.db" || base == "access_tokens.db" || base == "application_default_credentials.json" || strings.Contains(dir, "/legacy_credentials/")):
		return "Google Cloud credentials"
	case strings.HasSuffix(dir, "/.azure/") &&
		(base == "accessTokens.json" || strings.HasPrefix(base, "msal_token_cache") || base == "service_principal_entries.json"):
		return "Azure credentials"
	case strings.Contains(dir, "/.gnupg/private-keys-v1.d/") || (strings.HasSuffix(dir, "/.gnupg/") && base == "secring.gpg"):
		return "a PGP private key"
	}
	return ""
}

// mayHoldSecret tells whether a file of this name is read to find out.
func mayHoldSecret(rel string) bool {
	base := path.Base(rel)
	switch {
	case base == ".npmrc", base == ".pypirc", base == "config.json" && strings.HasSuffix(path.Dir(rel), ".docker"):
		return true
	case strings.HasPrefix(base, "id_") && !strings.HasSuffix(base, ".pub"):
		return true
	case strings.Contains("/"+rel, "/.ssh/") && !strings.HasSuffix(base, ".pub") && base != "known_hosts" && base != "authorized_keys" && base != "config":
		return true
	}
	switch path.Ext(base) {
	case ".pem", ".key", ".asc", ".gpg", ".p8", ".priv":
		return true
	}
	return strings.Contains(strings.ToLower(base), "private")
}

// secretInContents is what a file of this name holds by its contents, ""
// when nothing.
func secretInContents(rel string, dt []byte) string {
	base := path.Base(rel)
	switch {
	case base == ".npmrc":
		if npmToken.Match(dt) {
			return "an npm token"
		}
		return ""
	case base == ".pypirc":
		if pypiPassword.Match(dt) {
			return "a PyPI password"
		}
		return ""
	case base == "config.json":
		var cfg struct {
			Auths map[string]struct {
				Auth          string `json:"auth"`
				IdentityToken string `json:"identitytoken"`
			} `json:"auths"`
		}
		if json.Unmarshal(dt, &cfg) != nil {
			return ""
		}
		for _, a := range cfg.Auths {
			if a.Auth != "" || a.IdentityToken != "" {
				return "registry credentials (docker's auths)"
			}
		}
		return ""
	}
	if bytes.Contains(dt, pgpPrivateKey) {
		return "a PGP private key"
	}
	if m := pemPrivateKey.FindSubmatch(dt); m != nil {
		if string(m[1]) == "OPENSSH " || strings.HasPrefix(base, "id_") {
			return "an SSH private key"
		}
		return "a PEM private key"
	}
	return ""
}

// scanFile looks at the regular file n (size bytes, named rel).
func (w *Writer) scanFile(n *node, rel string, size int64) {
	if size == 0 {
		return
	}
	kind := secretByName(rel)
	if kind == "" && size <= secretReadMax && mayHoldSecret(rel) {
		f, err := n.reopen(0)
		if err != nil {
			// The read of the contents reports it.
			return
		}
		dt, _ := io.ReadAll(io.LimitReader(f, secretReadMax))
		f.Close()
		kind = secretInContents(rel, dt)
	}
	if kind != "" {
		w.secrets = append(w.secrets, Secret{Path: "/" + strings.TrimSuffix(rel, "/"), Kind: kind})
	}
}
