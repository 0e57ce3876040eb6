package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/chart/v2/loader"

	copied "github.com/troupe-dev/troupe/cmd/troupe/internal/helmchart/v2/loader"
)

func repoDir(t *testing.T, parts ...string) string {
	t.Helper()
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}

func tarNames(t *testing.T, data []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		require.NoError(t, err)
		names = append(names, h.Name)
	}
}

// TestChartArchive: a chart directory is uploaded as a .tgz Helm loads, the same bytes every
// time (so the same digest: the renderer's caches and the history see one source).
func TestChartArchive(t *testing.T) {
	dir := repoDir(t, "examples", "charts", "hello")
	a, err := chartArchive(dir, true)
	require.NoError(t, err)
	b, err := chartArchive(dir, true)
	require.NoError(t, err)
	assert.Equal(t, a, b, "deterministic")
	ch, err := loader.LoadArchive(bytes.NewReader(a))
	require.NoError(t, err)
	assert.Equal(t, "hello", ch.Name())
	assert.Len(t, ch.Templates, 2)
	assert.Contains(t, tarNames(t, a), "hello/values.yaml")

	broken := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(broken, "Chart.yaml"), []byte("apiVersion: v2\nversion: 1.0.0\n"), 0o644))
	_, err = chartArchive(broken, true)
	var u usageError
	require.ErrorAs(t, err, &u, "a chart that does not load is the user's to fix")
	assert.Contains(t, err.Error(), "name is required")
}

// TestKustomizeArchive: an overlay goes up with the bases it refers to, from their common root.
func TestKustomizeArchive(t *testing.T) {
	overlay := filepath.Join("..", "..", "..", "shared", "fixtures", "podinfo", "deploy", "overlays", "dev")
	data, dir, err := kustomizeArchive(overlay, "")
	require.NoError(t, err)
	assert.Equal(t, "overlays/dev", dir)
	names := tarNames(t, data)
	assert.Contains(t, names, "overlays/dev/kustomization.yaml")
	assert.Contains(t, names, "bases/frontend/kustomization.yaml")
	for _, n := range names {
		assert.False(t, strings.HasPrefix(n, "secure/"), "%s: only what the overlay refers to, from the smallest root", n)
	}

	_, _, err = kustomizeArchive(t.TempDir(), "")
	assert.ErrorContains(t, err, "has no kustomization.yaml")
}

// TestReleaseChecksLocallyFirst: bad input is a usage error (exit 2) that says what, before
// anything is sent — no NATS server is needed to find out.
func TestReleaseChecksLocallyFirst(t *testing.T) {
	chart := repoDir(t, "examples", "charts", "hello")
	badValues := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(badValues, []byte("- a list\n- not a map\n"), 0o644))
	badRenderers := filepath.Join(t.TempDir(), "pr.yaml")
	require.NoError(t, os.WriteFile(badRenderers, []byte("- kustomise:\n    patches: []\n"), 0o644))
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"release", "Hello", chart}, "Hello"},
		{[]string{"release", "hello", chart, "-n", "Bad_NS"}, "Bad_NS"},
		{[]string{"release", "hello", "./no-such-dir"}, "no-such-dir"},
		{[]string{"release", "hello", chart, "-f", "missing.yaml"}, "missing.yaml"},
		{[]string{"release", "hello", chart, "-f", badValues}, "not a YAML map"},
		{[]string{"release", "hello", chart, "--set", "novalue"}, "--set novalue"},
		{[]string{"release", "hello", "https://charts.example.com"}, "--repo"},
		{[]string{"release", "hello", chart, "--timeout", "0s"}, "--timeout"},
		{[]string{"release", "hello", chart, "--post-renderers", badRenderers}, "not a list of post-renderers"},
		{[]string{"release", "hello", chart, "--reuse-values", "--reset-then-reuse-values"}, "one or the other"},
		{[]string{"get", "values", "hello", "--revision", "-1"}, "--revision -1"},
		{[]string{"adopt", "Bad_Name"}, "Bad_Name"},
		{[]string{"release", "hello"}, "release takes the release NAME and a SOURCE"},
		{[]string{"rollback", "hello", "zero"}, "REVISION"},
		{[]string{"replay", "--print", "--to", "sbx"}, "--print or --to"},
		{[]string{"replay", "--to", "troupe.x"}, "live subjects"},
		{[]string{"history", "hello", "-o", "xml"}, "want table, json or yaml"},
	} {
		var out, errOut bytes.Buffer
		code := run(t.Context(), append(tc.args, "--server", "nats://127.0.0.1:1"), nil, &out, &errOut)
		assert.Equal(t, 2, code, "%v: %s", tc.args, errOut.String())
		assert.Contains(t, errOut.String(), tc.want, tc.args)
	}
}

// TestLoaderCopyLoadsAsHelm: the CLI's copy of Helm's loader (internal/helmchart) loads the
// fixture and example charts, directory and archive, into what Helm's loader does, and fails
// on a broken chart with Helm's error.
func TestLoaderCopyLoadsAsHelm(t *testing.T) {
	podinfo := filepath.Join("..", "..", "..", "shared", "fixtures", "podinfo", "charts", "podinfo")
	hello := repoDir(t, "examples", "charts", "hello")
	archive, err := chartArchive(podinfo, true)
	require.NoError(t, err)
	tgz := filepath.Join(t.TempDir(), "podinfo.tgz")
	require.NoError(t, os.WriteFile(tgz, archive, 0o644))
	broken := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(broken, "Chart.yaml"), []byte("apiVersion: v2\nname: broken\nversion: 1.0.0\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(broken, "values.yaml"), []byte("a: [\n"), 0o644))

	for _, path := range []string{podinfo, hello, tgz, broken} {
		want, wantErr := loader.Load(path)
		got, err := copied.Load(path)
		if path == broken {
			require.Error(t, wantErr, "values.yaml does not parse")
		}
		if wantErr != nil {
			require.Error(t, err, path)
			assert.Equal(t, wantErr.Error(), err.Error(), path)
			continue
		}
		require.NoError(t, err, path)
		assert.Equal(t, asJSON(t, want.Metadata), asJSON(t, got.Metadata), path) // two packages' types
		assert.Equal(t, want.Values, got.Values, path)
		require.Equal(t, len(want.Raw), len(got.Raw), path)
		for i := range want.Raw {
			assert.Equal(t, want.Raw[i].Name, got.Raw[i].Name, path)
			assert.Equal(t, want.Raw[i].Data, got.Raw[i].Data, path)
		}
		assert.Equal(t, len(want.Templates), len(got.Templates), path)
		assert.Equal(t, len(want.Dependencies()), len(got.Dependencies()), path)
	}
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestChartArchiveVendorsFileDependencies: a file:// dependency missing from charts/ goes into
// the upload (the renderer cannot read this disk), as `helm dependency build` would put it there.
func TestChartArchiveVendorsFileDependencies(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		p := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	write("lib/Chart.yaml", "apiVersion: v2\nname: lib\nversion: 0.2.0\n")
	write("lib/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-lib\n")
	write("app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - name: lib\n    version: 0.2.0\n    repository: file://../lib\n")
	write("app/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n")
	a, err := chartArchive(filepath.Join(root, "app"), true)
	require.NoError(t, err)
	assert.Contains(t, tarNames(t, a), "app/charts/lib.tgz")
	ch, err := loader.LoadArchive(bytes.NewReader(a))
	require.NoError(t, err)
	require.Len(t, ch.Dependencies(), 1)
	assert.Equal(t, "lib", ch.Dependencies()[0].Name())
	assert.Len(t, ch.Dependencies()[0].Templates, 1)

	write("app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - name: lib\n    version: 0.2.0\n    repository: file://../nowhere\n")
	_, err = chartArchive(filepath.Join(root, "app"), true)
	var u usageError
	require.ErrorAs(t, err, &u)
	assert.Contains(t, err.Error(), "dependency lib (file://../nowhere)")
}
