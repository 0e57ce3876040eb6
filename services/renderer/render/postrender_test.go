package render_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestPostRenderers: a request's post-renderers patch the rendered objects as a Flux
// HelmRelease's do — a strategic-merge patch, a JSON 6902 patch on a target, an image override —
// in order; a patch kustomize refuses fails the render naming the post-renderer.
func TestPostRenderers(t *testing.T) {
	r := newRenderer(t, render.Options{})
	chart := writeChart(t, map[string]string{"templates/app.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: ghcr.io/stefanprodan/podinfo:6.14.1
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
`})
	renderWith := func(prs ...events.PostRenderer) (*render.Output, error) {
		return r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}, PostRenderers: prs}})
	}
	out, err := renderWith(events.PostRenderer{Kustomize: &events.KustomizePostRenderer{
		Patches: []events.KustomizePatch{
			{Patch: "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  annotations:\n    team: blue\n"},
			{Patch: `[{"op": "replace", "path": "/spec/replicas", "value": 3}]`, Target: &events.PatchTarget{Kind: "Deployment", Name: "app"}},
		},
		Images: []events.KustomizeImage{{Name: "ghcr.io/stefanprodan/podinfo", NewTag: "6.15.0"}},
	}}, events.PostRenderer{Kustomize: &events.KustomizePostRenderer{Patches: []events.KustomizePatch{
		{Patch: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  color: red\n"},
	}}})
	require.NoError(t, err)
	var b events.Bundle
	require.NoError(t, json.Unmarshal(out.Bundle, &b))
	require.Len(t, b.Objects, 2)
	byKind := map[string]map[string]any{}
	for _, o := range b.Objects {
		byKind[o["kind"].(string)] = o
	}
	d := byKind["Deployment"]
	assert.Equal(t, map[string]any{"team": "blue"}, d["metadata"].(map[string]any)["annotations"])
	assert.Equal(t, "prod", d["metadata"].(map[string]any)["namespace"])
	spec := d["spec"].(map[string]any)
	assert.EqualValues(t, 3, spec["replicas"])
	container := spec["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	assert.Equal(t, "ghcr.io/stefanprodan/podinfo:6.15.0", container["image"])
	assert.Equal(t, map[string]any{"color": "red"}, byKind["ConfigMap"]["data"], "the second post-renderer runs on the first's output")

	_, err = renderWith(events.PostRenderer{Kustomize: &events.KustomizePostRenderer{Patches: []events.KustomizePatch{
		{Patch: `[{"op": "remove", "path": "/spec/nothing"}]`, Target: &events.PatchTarget{Kind: "Deployment"}}}}})
	var e *events.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, render.ReasonKustomizeError, e.Reason)
	assert.Contains(t, e.Message, "postRenderers[0]")
}
