package render_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestPathSourcesStayUnderTheSourceRoots: a renderer reads path sources only under its source
// roots, symlinks resolved, and its refusal is the same whether the path outside exists or not;
// without roots it reads none.
func TestPathSourcesStayUnderTheSourceRoots(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n"
	write := func(p, name string) {
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(fmt.Sprintf(cm, name)), 0o644))
	}
	write(filepath.Join(root, "app", "cm.yaml"), "inside")
	write(filepath.Join(outside, "secret.yaml"), "outside")
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "out")))                                         // a directory link out
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(root, "app", "x.yaml"))) // a file link out
	// A kustomization under the root whose base is outside it.
	require.NoError(t, os.MkdirAll(filepath.Join(root, "kust"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "kust", "kustomization.yaml"), []byte("resources:\n- ../../"+filepath.Base(outside)+"\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "kustomization.yaml"), []byte("resources:\n- secret.yaml\n"), 0o644))
	r := newRenderer(t, render.Options{SourceRoots: []string{root}})
	in := func(src events.Source) render.Input {
		return render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{Source: src}}
	}
	manifests := func(p string) events.Source { return events.Source{Manifests: &events.ManifestsSource{Path: p}} }
	reason := func(src events.Source) (string, string) {
		_, err := r.Render(t.Context(), in(src))
		require.Error(t, err)
		var e *events.Error
		require.ErrorAs(t, err, &e)
		return e.Reason, e.Message
	}

	out, err := r.Render(t.Context(), in(manifests(filepath.Join(root, "app", "cm.yaml"))))
	require.NoError(t, err, "a file under the root")
	assert.Len(t, out.Objects, 1)

	for _, p := range []string{"/etc", "/etc/passwd", filepath.Join(outside, "secret.yaml"), filepath.Join(root, "out", "secret.yaml"),
		filepath.Join(root, "..", filepath.Base(outside), "secret.yaml")} {
		why, msg := reason(manifests(p))
		assert.Equal(t, render.ReasonSourceNotAllowed, why, p)
		assert.Equal(t, "manifests.path "+p+": not under a source root of the renderer (--source-root)", msg)
	}
	why, msg := reason(manifests("/no/such/dir"))
	assert.Equal(t, render.ReasonSourceNotAllowed, why, "a path outside that does not exist reads as one that does")
	assert.Equal(t, "manifests.path /no/such/dir: not under a source root of the renderer (--source-root)", msg)
	why, _ = reason(manifests(filepath.Join(root, "nothing.yaml")))
	assert.Equal(t, render.ReasonSourceNotFound, why, "under the root, missing is said")

	why, msg = reason(manifests(filepath.Join(root, "app")))
	assert.Equal(t, render.ReasonSourceNotAllowed, why, "a directory holding a file link out")
	assert.Contains(t, msg, "x.yaml is a link out of the renderer's source roots")
	assert.NotContains(t, msg, outside)

	why, msg = reason(events.Source{Kustomize: &events.KustomizeSource{Path: filepath.Join(root, "kust")}})
	assert.Equal(t, render.ReasonKustomizeError, why, "a kustomization's base outside the roots")
	assert.Contains(t, msg, "outside the renderer's source roots")

	// A chart under the root with a file linked out of it (Helm's loader follows links).
	chart := filepath.Join(root, "chart")
	require.NoError(t, os.MkdirAll(filepath.Join(chart, "templates"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(chart, "Chart.yaml"), []byte("apiVersion: v2\nname: c\nversion: 0.1.0\n"), 0o644))
	require.NoError(t, os.Symlink(filepath.Join(outside, "secret.yaml"), filepath.Join(chart, "templates", "cm.yaml")))
	why, msg = reason(events.Source{Helm: &events.HelmSource{Path: chart}})
	assert.Equal(t, render.ReasonSourceNotAllowed, why, "a chart with a link out")
	assert.Contains(t, msg, "templates/cm.yaml is a link out of the renderer's source roots")

	why, _ = reason(events.Source{Helm: &events.HelmSource{Path: filepath.Join(fixtures(t), "podinfo/charts/podinfo")}})
	assert.Equal(t, render.ReasonSourceNotAllowed, why, "a chart outside the roots")

	none := newRenderer(t, render.Options{SourceRoots: []string{}})
	_, err = none.Render(t.Context(), in(manifests(filepath.Join(root, "app", "cm.yaml"))))
	var e *events.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, render.ReasonSourceNotAllowed, e.Reason)
	assert.Contains(t, e.Message, "started without --source-root")
}
