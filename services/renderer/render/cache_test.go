package render_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	sharedfixtures "github.com/troupe-dev/troupe/services/renderer/internal/fixtures"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestCacheNeverServesStaleOutput: identical inputs are answered from the cache, and any change
// to what decides a render — a template on disk, a value, the release — renders again.
func TestCacheNeverServesStaleOutput(t *testing.T) {
	chart := writeChart(t, map[string]string{"values.yaml": "size: 1\n", "templates/cm.yaml": configMap})
	r := newRenderer(t, render.Options{})
	in := render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
		Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}}
	render1 := func(in render.Input) *render.Output {
		out, err := r.Render(t.Context(), in)
		require.NoError(t, err)
		return out
	}
	first := render1(in)
	assert.Same(t, first, render1(in), "identical inputs: the cached output")

	withSet := in
	withSet.Request.Set = []string{"size=2"}
	assert.NotEqual(t, first.Bundle, render1(withSet).Bundle, "another value renders again")
	other := in
	other.Release.Name = "api"
	assert.NotEqual(t, first.Bundle, render1(other).Bundle, "another release renders again")

	// Edit a template on disk (a later modification time): rendered again, with the edit.
	tmpl := filepath.Join(chart, "templates", "cm.yaml")
	require.NoError(t, os.WriteFile(tmpl, []byte(configMap+"  edited: \"yes\"\n"), 0o644))
	later := time.Now().Add(time.Second)
	require.NoError(t, os.Chtimes(tmpl, later, later))
	edited := render1(in)
	assert.NotEqual(t, first.Bundle, edited.Bundle)
	assert.Contains(t, string(edited.Bundle), `"edited":"yes"`)
}

func TestSubchartsAndLibraryCharts(t *testing.T) {
	chart := writeChart(t, map[string]string{
		"Chart.yaml":                      "apiVersion: v2\nname: demo\nversion: 0.1.0\ndependencies:\n- name: child\n  version: 0.1.0\n- name: common\n  version: 0.1.0\n",
		"values.yaml":                     "child:\n  greeting: from-parent\n",
		"templates/cm.yaml":               "{{ include \"common.configmap\" (dict \"name\" (printf \"%s-parent\" .Release.Name)) }}\n",
		"charts/child/Chart.yaml":         "apiVersion: v2\nname: child\nversion: 0.1.0\n",
		"charts/child/values.yaml":        "greeting: from-child\n",
		"charts/child/templates/cm.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-child\ndata:\n  greeting: {{ .Values.greeting }}\n",
		"charts/common/Chart.yaml":        "apiVersion: v2\nname: common\nversion: 0.1.0\ntype: library\n",
		"charts/common/templates/_cm.tpl": "{{- define \"common.configmap\" -}}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .name }}\n{{- end -}}\n",
	})
	out, err := newRenderer(t, render.Options{}).Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"},
		Revision: 1, Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
	require.NoError(t, err)
	assert.Equal(t, helmEngineObjects(t, chart), keys(out.Objects), "the same objects as Helm's engine")
	assert.Equal(t, []string{"v1 ConfigMap web-child", "v1 ConfigMap web-parent"}, keys(out.Objects))
	assert.Contains(t, string(out.Bundle), `"greeting":"from-parent"`, "parent values override the subchart's")
}

// TestLoadedChartsAreNotChangedByRendering: an uploaded chart is loaded once and rendered with
// many values; what one render turns off (a subchart) or imports must not stay for the next.
func TestLoadedChartsAreNotChangedByRendering(t *testing.T) {
	dir := writeChart(t, map[string]string{
		"Chart.yaml":                     "apiVersion: v2\nname: demo\nversion: 0.1.0\ndependencies:\n- name: child\n  version: 0.1.0\n  condition: child.enabled\n  import-values:\n  - child: exported\n    parent: imported\n",
		"values.yaml":                    "child:\n  enabled: false\n",
		"templates/cm.yaml":              "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: parent\ndata:\n  imported: {{ if .Values.imported }}{{ .Values.imported.answer | quote }}{{ else }}\"none\"{{ end }}\n",
		"charts/child/Chart.yaml":        "apiVersion: v2\nname: child\nversion: 0.1.0\n",
		"charts/child/values.yaml":       "exported:\n  answer: \"42\"\n",
		"charts/child/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: child\n",
	})
	archive := sharedfixtures.TarGz(t, filepath.Dir(dir), dir)
	digest := events.Digest(archive)
	loads := 0
	r := newRenderer(t, render.Options{CacheSize: -1, Sources: func(ctx context.Context, d string) (io.ReadCloser, error) {
		loads++
		return io.NopCloser(bytes.NewReader(archive)), nil
	}})
	var bundle string
	renderWith := func(set ...string) []string {
		out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Object: digest}}, Set: set}})
		require.NoError(t, err)
		bundle = string(out.Bundle)
		return keys(out.Objects)
	}
	assert.Equal(t, []string{"v1 ConfigMap parent"}, renderWith())
	assert.Contains(t, bundle, `"imported":"none"`)
	assert.Equal(t, []string{"v1 ConfigMap child", "v1 ConfigMap parent"}, renderWith("child.enabled=true"), "the subchart comes back")
	assert.Contains(t, bundle, `"imported":"42"`, "and its values are imported")
	assert.Equal(t, []string{"v1 ConfigMap parent"}, renderWith())
	assert.Contains(t, bundle, `"imported":"none"`, "no import left over from the render before")
	assert.Equal(t, 1, loads, "loaded once")
}
