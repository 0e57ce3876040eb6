package render_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
	"github.com/troupe-dev/troupe/test/cluster"
)

// TestDiscoverFromCluster renders against what a real API server says it is and serves, as it
// says it now: a CRD installed after the renderer started is in .Capabilities and has its scope
// at the next render.
func TestDiscoverFromCluster(t *testing.T) {
	c := cluster.ForTest(t)
	ext, err := apiextclient.NewForConfig(c.Config)
	require.NoError(t, err)
	group := "d" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "")) + ".troupe.dev" // its own: the cluster is shared
	var o render.Options
	require.NoError(t, render.Discover(t.Context(), c.Config, &o))
	r := newRenderer(t, o)
	chart := writeChart(t, map[string]string{
		"templates/objs.yaml": `apiVersion: ` + group + `/v1
kind: Tenant
metadata:
  name: acme
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: caps
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  tenants: {{ .Capabilities.APIVersions.Has "` + group + `/v1/Tenant" | quote }}
  apps: {{ .Capabilities.APIVersions.Has "apps/v1" | quote }}
`})
	render1 := func(r *render.Renderer) *render.Output {
		out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
		require.NoError(t, err)
		return out
	}
	scopes := func(out *render.Output) map[string]string {
		got := map[string]string{}
		for _, ref := range out.Objects {
			got[ref.Kind] = ref.Namespace
		}
		return got
	}
	before := render1(r)
	assert.Equal(t, map[string]string{"Tenant": "prod", "ConfigMap": "prod"}, scopes(before), "an unknown kind is taken as namespaced")
	assert.Contains(t, string(before.Bundle), `"tenants":"false"`)
	assert.Contains(t, string(before.Bundle), `"apps":"true"`)
	assert.Contains(t, string(before.Bundle), `"kube":"v1.37.1"`)

	crd := &apiextv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "tenants." + group},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: group, Scope: apiextv1.ClusterScoped,
			Names: apiextv1.CustomResourceDefinitionNames{Plural: "tenants", Singular: "tenant", Kind: "Tenant", ListKind: "TenantList"},
			Versions: []apiextv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{Type: "object"}}}},
		},
	}
	_, err = ext.ApiextensionsV1().CustomResourceDefinitions().Create(t.Context(), crd, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = ext.ApiextensionsV1().CustomResourceDefinitions().Delete(context.Background(), crd.Name, metav1.DeleteOptions{})
	})

	// The same renderer, the same request: once the CRD is served, the next render knows it.
	var after *render.Output
	require.Eventually(t, func() bool {
		after = render1(r)
		return strings.Contains(string(after.Bundle), `"tenants":"true"`)
	}, 30*time.Second, 100*time.Millisecond, "the renderer's view of the cluster was read once, at start")
	assert.Equal(t, map[string]string{"Tenant": "", "ConfigMap": "prod"}, scopes(after), "a cluster-scoped custom kind gets no namespace")

	// Without discovery the same chart puts the unknown kind in the release's namespace.
	plain := render1(newRenderer(t, render.Options{}))
	assert.Equal(t, map[string]string{"Tenant": "prod", "ConfigMap": "prod"}, scopes(plain))
	assert.Contains(t, string(plain.Bundle), `"tenants":"false"`)
}
