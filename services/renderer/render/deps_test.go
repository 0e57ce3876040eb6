package render_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	repo "helm.sh/helm/v4/pkg/repo/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestDependenciesAreFetched: a chart whose dependencies are not in its charts/ gets them as
// `helm dependency build` would: from an https repository (the newest a range allows, or the
// version Chart.lock pins) or an OCI registry; what cannot be fetched fails naming the
// dependency.
func TestDependenciesAreFetched(t *testing.T) {
	dir := t.TempDir()
	archives := packagePodinfo(t, dir, "6.14.1", "6.15.0")
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	idx, err := repo.IndexDirectory(dir, srv.URL)
	require.NoError(t, err)
	require.NoError(t, idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644))

	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	pushChart(t, archives["6.14.1"], host+"/charts/podinfo:6.14.1")

	r := newRenderer(t, render.Options{PlainHTTPRegistries: []string{host}})
	shop := func(repository, version, lock string) string {
		files := map[string]string{
			"Chart.yaml":        "apiVersion: v2\nname: shop\nversion: 1.0.0\ndependencies:\n  - name: podinfo\n    version: \"" + version + "\"\n    repository: \"" + repository + "\"\n",
			"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shop\n",
		}
		if lock != "" {
			files["Chart.lock"] = "dependencies:\n  - name: podinfo\n    repository: \"" + repository + "\"\n    version: " + lock + "\ndigest: sha256:0\ngenerated: \"2026-01-01T00:00:00Z\"\n"
		}
		return writeChart(t, files)
	}
	renderChart := func(chart string) (string, error) {
		out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}})
		if err != nil {
			return "", err
		}
		return string(out.Bundle), nil
	}

	b, err := renderChart(shop(srv.URL, "^6.14.0", ""))
	require.NoError(t, err)
	assert.Contains(t, b, `"helm.sh/chart":"podinfo-6.15.0"`, "the newest the range allows")
	assert.Contains(t, b, `"name":"shop"`)
	b, err = renderChart(shop(srv.URL, "^6.14.0", "6.14.1"))
	require.NoError(t, err)
	assert.Contains(t, b, `"helm.sh/chart":"podinfo-6.14.1"`, "Chart.lock's version")
	b, err = renderChart(shop("oci://"+host+"/charts", "6.14.1", ""))
	require.NoError(t, err)
	assert.Contains(t, b, `"helm.sh/chart":"podinfo-6.14.1"`, "from an OCI registry")

	for _, tc := range []struct{ name, repository, version, reason, message string }{
		{"unreachable", "http://127.0.0.1:1", "6.14.1", render.ReasonSourceUnreachable, "chart shop: dependency podinfo 6.14.1 from http://127.0.0.1:1: "},
		{"no such version", srv.URL, "9.0.0", render.ReasonSourceNotFound, "chart shop: dependency podinfo 9.0.0 from " + srv.URL + ": chart podinfo 9.0.0 in"},
		{"file", "file://../podinfo", "6.14.1", render.ReasonNotAChart, "a file:// dependency is vendored by whoever uploads the chart"},
		{"helm repo alias", "@podinfo", "6.14.1", render.ReasonNotAChart, `"@podinfo" is a repository name from ` + "`helm repo add`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(shop(tc.repository, tc.version, ""))
			var e *events.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tc.reason, e.Reason)
			assert.Contains(t, e.Message, tc.message)
		})
	}
}
