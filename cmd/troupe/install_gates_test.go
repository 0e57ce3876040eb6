//go:build !lean

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// installSecrets runs `troupe install --dry-run` with args and returns the Secrets it prints, by
// name, each as its one key's value.
func installSecrets(t *testing.T, args ...string) (map[string]map[string]string, int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(t.Context(), append([]string{"install", "--dry-run", "-n", "ops", "--kubeconfig", "/nonexistent",
		"--keys", filepath.Join(t.TempDir(), "keys"), "--set", "namespaces={apps}"}, args...), nil, &out, &errOut)
	secrets := map[string]map[string]string{}
	for _, doc := range strings.Split("\n"+out.String(), "\n---\n") {
		var s struct {
			Kind       string `json:"kind"`
			Metadata   struct{ Name, Namespace string }
			StringData map[string]string `json:"stringData"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(doc), &s))
		if s.Kind == "Secret" {
			secrets[s.Metadata.Name] = s.StringData
		}
	}
	return secrets, code, errOut.String()
}

// TestInstallGateCredentials: `troupe install` makes a credentials Secret for each gate the
// chart's values list (credentials.gates, under credentials.secretPrefix), with the gate's own
// identity: a real nats-server configured with the printed authorization admits it, and lets it
// publish its own gate's verdicts and not another gate's. Without gates there are none; a gate
// whose name is no DNS-1123 label is refused by the chart's schema.
func TestInstallGateCredentials(t *testing.T) {
	secrets, code, errOut := installSecrets(t)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, secrets, "troupe-cli-creds")
	for name := range secrets {
		assert.NotContains(t, name, "gate-", "no gate, no gate credentials")
	}

	secrets, code, errOut = installSecrets(t, "--set", "credentials.gates={policy,approval}", "--set", "credentials.secretPrefix=acme-")
	require.Equal(t, 0, code, errOut)
	for _, gate := range []string{"policy", "approval"} {
		require.Contains(t, secrets, "acme-gate-"+gate+"-creds")
		creds := secrets["acme-gate-"+gate+"-creds"]["gate-"+gate+".creds"]
		require.NotEmpty(t, creds, gate)
		token, err := jwt.ParseDecoratedJWT([]byte(creds))
		require.NoError(t, err)
		uc, err := jwt.DecodeUserClaims(token)
		require.NoError(t, err)
		assert.Equal(t, "gate-"+gate, uc.Name)
		assert.Contains(t, uc.Pub.Allow, "troupe.release.*.*.approved."+gate)
		assert.Contains(t, uc.Pub.Allow, "troupe.release.*.*.rejected."+gate)
		assert.NotContains(t, uc.Pub.Allow, "troupe.release.*.*.approved.*")
	}

	// The printed server authorization admits the gate, which publishes its own verdicts only.
	conf := filepath.Join(t.TempDir(), "auth.conf")
	require.NoError(t, os.WriteFile(conf, []byte(secrets["troupe-nats-auth"]["auth.conf"]), 0o600))
	opts, err := server.ProcessConfigFile(conf)
	require.NoError(t, err)
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
	s, err := server.NewServer(opts)
	require.NoError(t, err)
	go s.Start()
	t.Cleanup(s.Shutdown)
	require.True(t, s.ReadyForConnections(10*time.Second))
	credsFile := filepath.Join(t.TempDir(), "gate-policy.creds")
	require.NoError(t, os.WriteFile(credsFile, []byte(secrets["acme-gate-policy-creds"]["gate-policy.creds"]), 0o600))
	violations := make(chan error, 8)
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(credsFile),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	require.NoError(t, err, "the gate's credentials are admitted")
	defer nc.Close()
	require.NoError(t, nc.Publish("troupe.release.apps.web.approved.policy", []byte("{}")))
	require.NoError(t, nc.Publish("troupe.release.apps.web.approved.approval", []byte("{}")))
	require.NoError(t, nc.Flush())
	select {
	case err := <-violations:
		assert.ErrorContains(t, err, `Publish to "troupe.release.apps.web.approved.approval"`)
	case <-time.After(5 * time.Second):
		t.Error("gate policy published gate approval's verdict")
	}
	select {
	case err := <-violations:
		t.Errorf("another refusal: %v", err)
	default:
	}

	_, code, errOut = installSecrets(t, "--set", "credentials.gates={Policy_Gate}")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errOut, "/credentials/gates/0")
}
