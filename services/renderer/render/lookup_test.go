package render_test

import (
	"encoding/json"
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

// lookupChart reads the cluster as charts do: a setting from a ConfigMap, a password kept from
// the Secret an earlier revision made (else a new one), the namespaces, and one that is not there.
const lookupChart = `{{- $settings := lookup "v1" "ConfigMap" .Release.Namespace "settings" }}
{{- $old := lookup "v1" "Secret" .Release.Namespace "db" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: looked-up
data:
  color: {{ dig "data" "color" "none" $settings | quote }}
  password: {{ if $old }}{{ index $old.data "password" | b64dec | quote }}{{ else }}{{ randAlphaNum 12 | quote }}{{ end }}
  missing: {{ lookup "v1" "ConfigMap" .Release.Namespace "not-there" | len | quote }}
  namespaces: {{ gt (len ((lookup "v1" "Namespace" "" "").items | default list)) 1 | quote }}
`

// TestLookupReadsTheCluster: lookup answers as under `helm upgrade`, from the live cluster at
// each render (never from the render cache), within the release's namespace unless the
// renderer is told otherwise; .Release.Revision is right for every revision, cached or not.
func TestLookupReadsTheCluster(t *testing.T) {
	c := cluster.ForTest(t)
	kube, err := kubernetes.NewForConfig(c.Config)
	require.NoError(t, err)
	ns, other := c.Namespace(t), c.Namespace(t)
	var o render.Options
	require.NoError(t, render.Discover(t.Context(), c.Config, &o))
	r := newRenderer(t, o)

	chart := writeChart(t, map[string]string{"templates/cm.yaml": lookupChart})
	renderRev := func(r *render.Renderer, chart, namespace string, revision int) (map[string]string, error) {
		out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: namespace, Name: "app"}, Revision: revision,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
		if err != nil {
			return nil, err
		}
		var b events.Bundle
		require.NoError(t, json.Unmarshal(out.Bundle, &b))
		require.Len(t, b.Objects, 1)
		data := map[string]string{}
		for k, v := range b.Objects[0]["data"].(map[string]any) {
			data[k] = v.(string)
		}
		return data, nil
	}

	first, err := renderRev(r, chart, ns, 1)
	require.NoError(t, err)
	assert.Equal(t, "none", first["color"])
	assert.Len(t, first["password"], 12)
	assert.Equal(t, "0", first["missing"], "an object not there is an empty map")
	assert.Equal(t, "true", first["namespaces"], "cluster-scoped kinds are listed")

	_, err = kube.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data: map[string]string{"color": "blue"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	// The release's own Secret, as the applier labels what it applies.
	_, err = kube.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db",
		Labels: map[string]string{"troupe.dev/release": "app", "troupe.dev/release-namespace": ns}},
		Data: map[string][]byte{"password": []byte("kept-from-rev-1")}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "someone-elses"},
		Data: map[string][]byte{"token": []byte("not-for-charts")}}, metav1.CreateOptions{})
	require.NoError(t, err)
	second, err := renderRev(r, chart, ns, 2)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"color": "blue", "password": "kept-from-rev-1", "missing": "0", "namespaces": "true"}, second,
		"the live objects, read at this render")

	_, err = kube.CoreV1().ConfigMaps(ns).Update(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings"},
		Data: map[string]string{"color": "red"}}, metav1.UpdateOptions{})
	require.NoError(t, err)
	third, err := renderRev(r, chart, ns, 3)
	require.NoError(t, err)
	assert.Equal(t, "red", third["color"], "inputs equal to revision 2's: a chart that calls lookup is never served from the cache")

	// A Secret the release did not make, and its namespace's owner did not opt in: refused
	// by name, left out of a list.
	prying := writeChart(t, map[string]string{"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: prying
data:
  listed: {{ range (lookup "v1" "Secret" .Release.Namespace "").items }}{{ .metadata.name }} {{ end }}
  token: {{ (lookup "v1" "Secret" .Release.Namespace "someone-elses").data | toJson | quote }}
`})
	_, err = renderRev(r, prying, ns, 4)
	var e *events.Error
	require.ErrorAs(t, err, &e)
	assert.Contains(t, e.Message, "lookup Secret "+ns+"/someone-elses: not release "+ns+"/app's")
	assert.NotContains(t, e.Message, "not-for-charts")
	listing := writeChart(t, map[string]string{"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: listing
data:
  listed: {{ range (lookup "v1" "Secret" .Release.Namespace "").items }}{{ .metadata.name }} {{ end }}
`})
	listed, err := renderRev(r, listing, ns, 4)
	require.NoError(t, err)
	assert.Equal(t, "db", listed["listed"], "only the release's own Secret is listed")

	// Another namespace: refused, naming it, unless the renderer reads every namespace.
	away := writeChart(t, map[string]string{"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: away
data:
  color: {{ dig "data" "color" "none" (lookup "v1" "ConfigMap" "` + ns + `" "settings") | quote }}
`})
	_, err = renderRev(r, away, other, 1)
	require.ErrorAs(t, err, &e)
	assert.Equal(t, render.ReasonTemplateError, e.Reason)
	assert.Contains(t, e.Message, `lookup ConfigMap in namespace "`+ns+`": the renderer reads only the release's namespace "`+other+`"`)
	assert.Contains(t, e.Message, "templates/cm.yaml", "the template is named")
	assert.False(t, e.Transient)
	everyNS := render.Options{LookupAllNamespaces: true}
	require.NoError(t, render.Discover(t.Context(), c.Config, &everyNS))
	got, err := renderRev(newRenderer(t, everyNS), away, other, 1)
	require.NoError(t, err)
	assert.Equal(t, "red", got["color"])

	// Without a cluster, lookup finds nothing, as in `helm template`.
	offline, err := renderRev(newRenderer(t, render.Options{}), chart, ns, 2)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"color": "none", "missing": "0", "namespaces": "false"},
		map[string]string{"color": offline["color"], "missing": offline["missing"], "namespaces": offline["namespaces"]})
}

// TestRevisionIsRightFromTheCache: the render cache answers identical inputs, but a chart that
// reads .Release.Revision gets its own revision's.
func TestRevisionIsRightFromTheCache(t *testing.T) {
	r := newRenderer(t, render.Options{})
	withRev := writeChart(t, map[string]string{"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: rev
  annotations:
    revision: {{ .Release.Revision | quote }}
    upgrade: {{ .Release.IsUpgrade | quote }}
`})
	plain := writeChart(t, map[string]string{"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n"})
	at := func(chart string, revision int) *render.Output {
		out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "app"}, Revision: revision,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
		require.NoError(t, err)
		return out
	}
	for rev, want := range map[int]string{1: `"revision":"1","upgrade":"false"`, 2: `"revision":"2","upgrade":"true"`, 3: `"revision":"3","upgrade":"true"`} {
		assert.Contains(t, string(at(withRev, rev).Bundle), want)
	}
	assert.Contains(t, string(at(withRev, 2).Bundle), `"revision":"2"`, "again, after revision 3 was cached")
	whole := writeChart(t, map[string]string{"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: whole\ndata:\n  release: {{ .Release | toJson | quote }}\n"})
	assert.Contains(t, string(at(whole, 2).Bundle), `\"Revision\":2`)
	assert.Contains(t, string(at(whole, 3).Bundle), `\"Revision\":3`, ".Release taken whole holds the revision")
	assert.Same(t, at(plain, 2), at(plain, 3), "a chart that does not read the revision is answered from the cache")
}
