package render_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
	"github.com/troupe-dev/troupe/test/cluster"
)

// TestValuesFromTheCluster: values read from a Secret and a ConfigMap of the release's
// namespace at render time, merged before the request's own; a missing one fails naming it
// (or is skipped when optional); errors never carry what the objects hold.
func TestValuesFromTheCluster(t *testing.T) {
	c := cluster.ForTest(t)
	var o render.Options
	require.NoError(t, render.Discover(t.Context(), c.Config, &o))
	r := newRenderer(t, o)
	kube, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	ns := c.Namespace(t)
	optIn := map[string]string{render.LabelValuesFrom: "true"}
	_, err = kube.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "unlabelled"},
		Data: map[string][]byte{"values.yaml": []byte("password: not-for-troupe\n")}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Labels: optIn},
		Data: map[string][]byte{"values.yaml": []byte("password: s3cret-from-the-cluster\nuser: fromsecret\n"), "broken": []byte("password: [s3cret-unclosed")}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "tuning", Labels: optIn},
		Data: map[string]string{"prod.yaml": "replicas: 3\nuser: fromconfigmap\n"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	chart := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(chart, "templates"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: db\nversion: 0.1.0\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "templates", "cm.yaml"), []byte(
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  password: {{ .Values.password | quote }}\n  user: {{ .Values.user | quote }}\n  replicas: {{ .Values.replicas | quote }}\n"), 0o644))
	render1 := func(from ...events.ValuesFrom) (*render.Output, error) {
		return r.Render(t.Context(), render.Input{Release: events.Release{Namespace: ns, Name: "db"}, Revision: 1, Request: events.Requested{
			Source: events.Source{Helm: &events.HelmSource{Path: chart}}, ValuesFrom: from, Set: []string{"replicas=5"}}})
	}

	out, err := render1(events.ValuesFrom{Kind: "Secret", Name: "db"}, events.ValuesFrom{Kind: "ConfigMap", Name: "tuning", Key: "prod.yaml"})
	require.NoError(t, err)
	bundle := string(out.Bundle)
	assert.Contains(t, bundle, `"password":"s3cret-from-the-cluster"`)
	assert.Contains(t, bundle, `"user":"fromconfigmap"`, "later valuesFrom win")
	assert.Contains(t, bundle, `"replicas":"5"`, "the request's own values win")

	_, err = render1(events.ValuesFrom{Kind: "Secret", Name: "nope"})
	var e *events.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, render.ReasonSourceNotFound, e.Reason)
	assert.Equal(t, "valuesFrom Secret "+ns+"/nope key values.yaml: not found, or not labelled troupe.dev/values-from=true", e.Message)
	_, err = render1(events.ValuesFrom{Kind: "Secret", Name: "unlabelled"})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "valuesFrom Secret "+ns+"/unlabelled key values.yaml: not found, or not labelled troupe.dev/values-from=true", e.Message,
		"a Secret not opted in reads as one that does not exist")
	_, err = render1(events.ValuesFrom{Kind: "Secret", Name: "nope", Optional: true})
	require.NoError(t, err, "optional")
	_, err = render1(events.ValuesFrom{Kind: "Secret", Name: "db", Key: "broken"})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, render.ReasonInvalidValues, e.Reason)
	assert.NotContains(t, e.Message, "s3cret")

	none := newRenderer(t, render.Options{})
	_, err = none.Render(t.Context(), render.Input{Release: events.Release{Namespace: ns, Name: "db"}, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{Path: chart}}, ValuesFrom: []events.ValuesFrom{{Kind: "Secret", Name: "db"}}}})
	require.ErrorAs(t, err, &e)
	assert.Contains(t, e.Message, "does not reach the cluster")
}
