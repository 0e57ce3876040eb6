package render_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// writeChart writes a chart named demo into a temp dir: files maps paths to contents, Chart.yaml
// included unless files gives one.
func writeChart(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "demo")
	if _, ok := files["Chart.yaml"]; !ok {
		files["Chart.yaml"] = "apiVersion: v2\nname: demo\nversion: 0.1.0\n"
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, []byte(c), 0o644))
	}
	return dir
}

const configMap = `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  size: {{ .Values.size | quote }}
`

func TestRenderErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // a chart; nil: req is used as is
		req     func(chart string) events.Requested
		opts    render.Options
		reason  string
		message []string // substrings the message must have: what and where
		secret  string   // what the message must not have
	}{
		{
			name: "required value",
			files: map[string]string{"values.yaml": "image: {}\n",
				"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  tag: {{ required \"image.tag is required\" .Values.image.tag }}\n"},
			reason: render.ReasonTemplateError, message: []string{"templates/cm.yaml:6", "image.tag is required"},
		},
		{
			name:   "fail",
			files:  map[string]string{"templates/cm.yaml": "{{ fail \"replicas must be odd\" }}\n"},
			reason: render.ReasonTemplateError, message: []string{"templates/cm.yaml:1", "replicas must be odd"},
		},
		{
			name:   "template syntax",
			files:  map[string]string{"templates/cm.yaml": "metadata:\n  name: {{ .Release.Name \n"},
			reason: render.ReasonTemplateError, message: []string{"templates/cm.yaml:2"},
		},
		{
			name: "values schema, every violation",
			files: map[string]string{"templates/cm.yaml": configMap, "values.yaml": "size: 3\nname: x\n",
				"values.schema.json": `{"type":"object","properties":{"size":{"type":"integer","maximum":5},"name":{"type":"string","minLength":3}},"required":["size","name"]}`},
			req: func(chart string) events.Requested {
				return events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}, Set: []string{"size=9"}}
			},
			reason: render.ReasonValuesSchema, message: []string{"size", "name", "values.schema.json"},
		},
		{
			name:  "values file not YAML",
			files: map[string]string{"templates/cm.yaml": configMap},
			req: func(chart string) events.Requested {
				return events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}},
					ValuesFiles: []events.ValuesFile{{Name: "prod.yaml", Content: "size: [1,"}}}
			},
			reason: render.ReasonInvalidValues, message: []string{"prod.yaml"},
		},
		{
			name:  "bad --set",
			files: map[string]string{"templates/cm.yaml": configMap},
			req: func(chart string) events.Requested {
				return events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}, Set: []string{"ok=1", "a[x]=s3cr3t-t0ken"}}
			},
			reason: render.ReasonInvalidValues, message: []string{"--set #2 (a[x]=…)"}, secret: "s3cr3t-t0ken",
		},
		{
			name:   "output not YAML",
			files:  map[string]string{"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n"},
			reason: render.ReasonInvalidOutput, message: []string{"templates/cm.yaml"},
		},
		{
			name:   "object without kind",
			files:  map[string]string{"templates/cm.yaml": "apiVersion: v1\nmetadata:\n  name: nokind\n"},
			reason: render.ReasonInvalidOutput, message: []string{"templates/cm.yaml", "nokind", "kind"},
		},
		{
			name:   "object without name",
			files:  map[string]string{"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"},
			reason: render.ReasonInvalidOutput, message: []string{"templates/cm.yaml", "ConfigMap", "metadata.name"},
		},
		{
			name:   "kubeVersion mismatch",
			files:  map[string]string{"Chart.yaml": "apiVersion: v2\nname: demo\nversion: 0.1.0\nkubeVersion: '>=1.99.0-0'\n", "templates/cm.yaml": configMap},
			reason: render.ReasonKubeVersion, message: []string{">=1.99.0-0", render.DefaultKubeVersion},
		},
		{
			name:   "bundle too large",
			files:  map[string]string{"templates/cm.yaml": configMap},
			opts:   render.Options{MaxBundleSize: 100},
			reason: render.ReasonBundleTooLarge, message: []string{"100"},
		},
		{
			name:   "not a chart",
			files:  map[string]string{"Chart.yaml": "name: [", "templates/cm.yaml": configMap},
			reason: render.ReasonNotAChart, message: []string{"not a valid Helm chart"},
		},
		{
			name: "chart not found (under a source root)",
			req: func(string) events.Requested {
				return events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: filepath.Join(os.TempDir(), "nonexistent", "chart")}}}
			},
			reason: render.ReasonSourceNotFound, message: []string{"nonexistent/chart: not found"},
		},
		{
			name: "uploaded chart without a sources store",
			req: func(string) events.Requested {
				return events.Requested{Source: events.Source{Helm: &events.HelmSource{Object: events.Digest([]byte("x"))}}}
			},
			reason: render.ReasonSourceNotFound, message: []string{"sources object store"},
		},
		{
			name: "kustomization not found (under a source root)",
			req: func(string) events.Requested {
				return events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Path: filepath.Join(os.TempDir(), "nonexistent", "overlay")}}}
			},
			reason: render.ReasonSourceNotFound, message: []string{"nonexistent/overlay: not found"},
		},
		{
			name: "broken kustomization",
			req: func(string) events.Requested {
				dir := t.TempDir()
				require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources:\n- missing.yaml\n"), 0o644))
				return events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Path: dir}}}
			},
			reason: render.ReasonKustomizeError, message: []string{"missing.yaml"},
		},
		{
			name: "inline manifest twice",
			req: func(string) events.Requested {
				cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: same\n"
				return events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{YAML: cm + "---\n" + cm}}}
			},
			reason: render.ReasonInvalidOutput, message: []string{"ConfigMap/prod/same", "twice"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var chart string
			if tc.files != nil {
				chart = writeChart(t, tc.files)
			}
			req := events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}
			if tc.req != nil {
				req = tc.req(chart)
			}
			r := newRenderer(t, tc.opts)
			out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: req})
			require.Error(t, err)
			assert.Nil(t, out)
			assert.Equal(t, tc.reason, events.ReasonOf(err), err.Error())
			for _, m := range tc.message {
				assert.Contains(t, err.Error(), m)
			}
			if tc.secret != "" {
				assert.NotContains(t, err.Error(), tc.secret, "a value in the message")
			}
		})
	}
}

func TestRenderValuesMergeLikeHelm(t *testing.T) {
	chart := writeChart(t, map[string]string{
		"values.yaml":       "size: 1\nlabels:\n  a: chart\n  b: chart\n  c: chart\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\ndata:\n  size: {{ .Values.size | quote }}\n  a: {{ .Values.labels.a }}\n  b: {{ .Values.labels.b }}\n  c: {{ .Values.labels.c }}\n",
	})
	req := events.Requested{
		Source:      events.Source{Helm: &events.HelmSource{Path: chart}},
		ValuesFiles: []events.ValuesFile{{Name: "one.yaml", Content: "labels:\n  a: file1\n  b: file1\n"}, {Name: "two.yaml", Content: "labels:\n  b: file2\n"}},
		Values:      events.Values{"size": 5},
		Set:         []string{"labels.c=set", "size=7"},
	}
	out, err := newRenderer(t, render.Options{}).Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 2, Request: req})
	require.NoError(t, err)
	b, err := events.ReadBundle(out.Bundle)
	require.NoError(t, err)
	data := b.Objects[0]["data"].(map[string]any)
	assert.Equal(t, map[string]any{"size": "7", "a": "file1", "b": "file2", "c": "set"}, data,
		"chart values, then files in order, then inline values, then --set in order")
	assert.True(t, strings.HasPrefix(string(out.Bundle), `{"apiVersion":"troupe.dev/v1alpha1"`))
}
