package render_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestKustomizeFetchesNothingRemote: a kustomization (or a local base of it) that names a remote
// resource, base, component, generator file or patch fails with kustomize_error naming the
// reference, and nothing is fetched: the test's HTTP server sees no request. (kustomize alone
// would GET the generator file and clone the repository.)
func TestKustomizeFetchesNothingRemote(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetched\n"))
	}))
	defer srv.Close()
	r := newRenderer(t, render.Options{})
	for name, kustomization := range map[string]string{
		"remote resource":        "resources:\n- " + srv.URL + "/cm.yaml\n",
		"remote git base":        "resources:\n- github.com/kubernetes-sigs/kustomize//examples/multibases?ref=v1.0.6\n",
		"git over ssh":           "resources:\n- git@github.com:org/repo.git//deploy\n",
		"remote component":       "components:\n- https://example.com/org/repo//component\n",
		"generator file by URL":  "configMapGenerator:\n- name: meta\n  files:\n  - creds=" + srv.URL + "/latest/meta-data/iam\n",
		"generator env by URL":   "secretGenerator:\n- name: meta\n  envs:\n  - " + srv.URL + "/env\n",
		"patch by URL":           "resources:\n- cm.yaml\npatches:\n- path: " + srv.URL + "/patch.yaml\n",
		"in a local base":        "resources:\n- base\n",
		"git with any user":      "resources:\n- deploy@gitserver:org/repo.git\n",
		"host-like, dir exists":  "resources:\n- github.com/org/repo\n",
		"component, file exists": "components:\n- github.com/org/repo.yaml\n",
		"GIT:: in capitals":      "resources:\n- GIT::git@gitea:org/repo\n",
		"bracketed host":         "resources:\n- git@[gitea]:org/repo\n",
		"underscored host":       "resources:\n- git@my_host:org/repo\n",
		"scheme in capitals":     "resources:\n- HTTPS://example.com/org/repo//dir\n",
		"inline transformer":     "transformers:\n- |\n  apiVersion: builtin\n  kind: PatchTransformer\n  metadata:\n    name: p\n  path: " + srv.URL + "/patch.yaml\n",
		"transformer file":       "transformers:\n- cm.yaml\n- tr.yaml\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\n"
			require.NoError(t, os.WriteFile(filepath.Join(dir, "cm.yaml"), []byte(cm), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644))
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "base"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "base", "kustomization.yaml"), []byte("resources:\n- "+srv.URL+"/base.yaml\n"), 0o644))
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "github.com", "org", "repo"), 0o755)) // kustomize clones it all the same
			require.NoError(t, os.WriteFile(filepath.Join(dir, "github.com", "org", "repo.yaml"), []byte(cm), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "tr.yaml"), []byte("apiVersion: builtin\nkind: PatchTransformer\nmetadata:\n  name: p\npath: "+srv.URL+"/p.yaml\n"), 0o644))
			_, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
				Request: events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Path: dir}}}})
			var e *events.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, render.ReasonKustomizeError, e.Reason)
			assert.Contains(t, e.Message, "the renderer fetches no remote resources, bases or files")
		})
	}
	assert.Zero(t, hits.Load(), "nothing fetched")

	// Local paths whose names look like hosts are not remote: kustomize clones only what has a
	// scheme, a user@ or github.com.
	dir := t.TempDir()
	for _, d := range []string{"app.v2", "gitlab.com/org/repo"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dir, d, "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: "+path.Base(d)+"\n"), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte("resources:\n- app.v2/cm.yaml\n- gitlab.com/org/repo/cm.yaml\nconfigMapGenerator:\n- name: g\n  literals:\n  - url=https://example.com\n"), 0o644))
	out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
		Request: events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Path: dir}}}})
	require.NoError(t, err)
	assert.Len(t, out.Objects, 3)
}
