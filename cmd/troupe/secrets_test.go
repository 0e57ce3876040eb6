package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestSecretValuesStayOutOfEvents: a release whose password comes from a Secret in the cluster
// (--values-from) deploys it, while no event of the stream nor any dead letter holds it (the
// raw bytes of every message are searched); `get manifest` and `diff` show the rendered Secret's
// keys but not its values, and --show-secrets shows them only to an identity allowed (the
// admin's), refusing the CLI's.
func TestSecretValuesStayOutOfEvents(t *testing.T) {
	server := startDev(t)
	ctx := t.Context()
	kube, err := kubernetes.NewForConfig(testKube.Config)
	require.NoError(t, err)
	ns := testKube.Namespace(t)
	const password = "pa55-from-the-cluster-7c1e"
	_, err = kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db-values", Labels: map[string]string{render.LabelValuesFrom: "true"}},
		Data:       map[string][]byte{"values.yaml": []byte("password: " + password + "\n")}}, metav1.CreateOptions{})
	require.NoError(t, err)

	chart := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(chart, "templates"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: db\nversion: 0.1.0\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "values.yaml"), []byte("password: unset\nuser: app\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "templates", "secret.yaml"), []byte(
		"apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: {{ .Values.password | quote }}\n  user: {{ .Values.user | quote }}\n"), 0o644))

	code, out, errOut := troupe(t, server, "", "release", "db", chart, "-n", ns, "--values-from", "secret/db-values", "--wait")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	code, out, errOut = troupe(t, server, "", "release", "db", chart, "-n", ns, "--values-from", "secret/db-values", "--set", "user=admin", "--wait")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	live, err := kube.CoreV1().Secrets(ns).Get(ctx, "db", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, password, string(live.Data["password"]), "the cluster's value was deployed")

	nc, err := nats.Connect(server, nats.UserCredentials(credsOf(server, access.Admin)))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	n := 0
	for _, stream := range []string{events.StreamName, events.Names{}.DeadLetterStream()} {
		for _, m := range rawMessages(t, ctx, js, stream) {
			n++
			assert.False(t, bytes.Contains(m, []byte(password)), "%s holds the password: %s", stream, m)
		}
	}
	assert.Greater(t, n, 8, "two flows' events were searched")

	code, out, errOut = troupe(t, server, "", "get", "manifest", "db", "-n", ns)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "password: (redacted)")
	assert.NotContains(t, out, password)
	code, out, errOut = troupe(t, server, "", "diff", "db", "-n", ns, "--from", "1", "--to", "2")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "stringData.user")
	assert.NotContains(t, out, "admin", "which key changed, not to what")

	code, _, errOut = troupe(t, server, "", "get", "manifest", "db", "-n", ns, "--show-secrets")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `Permissions Violation for Publish to "troupe.history-secrets.revision"`, "the CLI's identity may not")
	code, out, errOut = troupe(t, server, "", "get", "manifest", "db", "-n", ns, "--show-secrets", "--creds", credsOf(server, access.Admin))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, password, "the admin's may")
	code, out, errOut = troupe(t, server, "", "diff", "db", "-n", ns, "--from", "1", "--to", "2", "--show-secrets", "--creds", credsOf(server, access.Admin))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "app → admin")
}

// rawMessages returns the bytes (headers and data) of every message of stream.
func rawMessages(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) [][]byte {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		var b bytes.Buffer
		for k, vs := range m.Header {
			for _, v := range vs {
				b.WriteString(k + ": " + v + "\n")
			}
		}
		b.Write(m.Data)
		out = append(out, b.Bytes())
	}
	return out
}

// TestBundleNotWrittenByTheRendererIsRefused: a release.rendered naming a bundle that neither
// the renderer nor history wrote (here the admin's, which NATS lets write anything) fails with
// bundle_untrusted, and nothing of it reaches the cluster.
func TestBundleNotWrittenByTheRendererIsRefused(t *testing.T) {
	server := startDev(t)
	ctx := t.Context()
	ns := testKube.Namespace(t)
	nc, err := nats.Connect(server, nats.UserCredentials(credsOf(server, access.Admin)))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	bundles, err := events.OpenObjects(ctx, js, events.BucketBundles)
	require.NoError(t, err)
	data, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: ns + "/planted",
		Objects: []map[string]any{{"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": "planted", "namespace": ns}, "data": map[string]any{"k": "v"}}}})
	require.NoError(t, err)
	digest, size, err := bundles.Put(ctx, bytes.NewReader(data))
	require.NoError(t, err)

	rel := events.Release{Namespace: ns, Name: "planted"}
	e, err := events.NewEvent("attacker", events.TypeRendered, rel, events.Rendered{Bundle: digest, Size: size, RenderTime: events.Duration(time.Millisecond)})
	require.NoError(t, err)
	events.WithRevision(&e, 1)
	_, err = events.NewPublisher(js, events.Names{}).Publish(ctx, e)
	require.NoError(t, err)

	var out string
	require.Eventually(t, func() bool {
		_, out, _ = troupe(t, server, "", "tail", "--release", rel.String(), "--follow=false", "--type", "release.failed", "-o", "json")
		return strings.Contains(out, `"reason":"bundle_untrusted"`)
	}, 20*time.Second, 100*time.Millisecond, out)
	assert.Contains(t, out, `names no writer`)
	kube, err := kubernetes.NewForConfig(testKube.Config)
	require.NoError(t, err)
	_, err = kube.CoreV1().ConfigMaps(ns).Get(ctx, "planted", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing applied: %v", err)
}
