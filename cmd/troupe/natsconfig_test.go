package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events/access"
)

// TestNATSConfig: what `troupe nats-config` prints is what a real nats-server takes: its
// auth.conf loads (the server's own config parser), the server admits each identity's
// credentials from the Secrets and refuses a client without; the same --dir gives the same
// operator and account again.
func TestNATSConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	nc := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(t.Context(), append([]string{"nats-config", "--dir", dir}, args...), nil, &out, &errOut)
		require.Equal(t, 0, code, errOut.String())
		return out.String()
	}
	conf := nc("-o", "conf")
	// A JWT records when it was signed: the same keys give the same operator and accounts, signed
	// anew.
	assert.Equal(t, signers(t, conf), signers(t, nc("-o", "conf")), "the same keys, the same operator and accounts")

	secrets := map[string]string{}
	for _, doc := range strings.Split("\n"+nc("-n", "ops"), "\n---\n") { // documents: a "---" line; the creds are indented in them
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var s struct {
			Kind       string `json:"kind"`
			Metadata   struct{ Name, Namespace string }
			StringData map[string]string `json:"stringData"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &s))
		require.Equal(t, "Secret", s.Kind)
		assert.Equal(t, "ops", s.Metadata.Namespace)
		for k, v := range s.StringData {
			secrets[s.Metadata.Name+"/"+k] = v
		}
	}
	assert.Equal(t, conf, secrets["troupe-nats-auth/auth.conf"])
	for _, id := range access.Table() {
		assert.Contains(t, secrets, "troupe-"+id.Name+"-creds/"+id.Name+".creds")
	}

	path := filepath.Join(t.TempDir(), "auth.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	opts, err := server.ProcessConfigFile(path)
	require.NoError(t, err, "nats-server reads it")
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	go s.Start()
	t.Cleanup(s.Shutdown)
	require.True(t, s.ReadyForConnections(10*time.Second))

	creds := filepath.Join(t.TempDir(), "renderer.creds")
	require.NoError(t, os.WriteFile(creds, []byte(secrets["troupe-renderer-creds/renderer.creds"]), 0o600))
	conn, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds))
	require.NoError(t, err, "the renderer's credentials are admitted")
	conn.Close()
	_, err = nats.Connect(s.ClientURL())
	require.Error(t, err, "no credentials, no entry")
}

var jwtInConf = regexp.MustCompile(`"(eyJ[A-Za-z0-9_.-]+)"`)

// signers is conf with each JWT replaced by its subject and issuer: what stays the same when the
// same keys sign again.
func signers(t *testing.T, conf string) string {
	t.Helper()
	return jwtInConf.ReplaceAllStringFunc(conf, func(m string) string {
		c, err := jwt.DecodeGeneric(strings.Trim(m, `"`))
		require.NoError(t, err)
		return c.Subject + " by " + c.Issuer
	})
}
