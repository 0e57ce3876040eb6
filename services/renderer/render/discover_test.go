package render_test

import (
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

// TestDiscoverFromCluster renders against what a real API server says it is and serves.
func TestDiscoverFromCluster(t *testing.T) {
	c := cluster.ForTest(t)
	ext, err := apiextclient.NewForConfig(c.Config)
	require.NoError(t, err)
	crd := &apiextv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "tenants.troupe.dev"},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: "troupe.dev", Scope: apiextv1.ClusterScoped,
			Names: apiextv1.CustomResourceDefinitionNames{Plural: "tenants", Singular: "tenant", Kind: "Tenant", ListKind: "TenantList"},
			Versions: []apiextv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{Type: "object"}}}},
		},
	}
	_, err = ext.ApiextensionsV1().CustomResourceDefinitions().Create(t.Context(), crd, metav1.CreateOptions{})
	require.NoError(t, err)

	var o render.Options
	require.Eventually(t, func() bool { // until discovery serves the new kind
		o = render.Options{}
		if err := render.Discover(t.Context(), c.Config, &o); err != nil {
			return false
		}
		_, known := o.Scope("troupe.dev/v1", "Tenant")
		return known
	}, 30*time.Second, 200*time.Millisecond)
	assert.Equal(t, "v1.37.1", o.KubeVersion)
	assert.Contains(t, o.APIVersions, "apps/v1")
	assert.Contains(t, o.APIVersions, "troupe.dev/v1/Tenant")

	chart := writeChart(t, map[string]string{
		"templates/objs.yaml": `apiVersion: troupe.dev/v1
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
  tenants: {{ .Capabilities.APIVersions.Has "troupe.dev/v1/Tenant" | quote }}
`})
	out, err := newRenderer(t, o).Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
		Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
	require.NoError(t, err)
	got := map[string]string{}
	for _, ref := range out.Objects {
		got[ref.Kind] = ref.Namespace
	}
	assert.Equal(t, map[string]string{"Tenant": "", "ConfigMap": "prod"}, got, "a cluster-scoped custom kind gets no namespace")
	assert.Contains(t, string(out.Bundle), `"kube":"v1.37.1"`)
	assert.Contains(t, string(out.Bundle), `"tenants":"true"`)

	// Without discovery the same chart puts the unknown kind in the release's namespace.
	plain, err := newRenderer(t, render.Options{}).Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
		Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
	require.NoError(t, err)
	for _, ref := range plain.Objects {
		assert.Equal(t, "prod", ref.Namespace)
	}
}
