package render_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// packagePodinfo packages the podinfo fixture as versions into dir and returns the archives.
func packagePodinfo(t *testing.T, dir string, versions ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, v := range versions {
		ch, err := loader.Load(filepath.Join(fixtures(t), "podinfo/charts/podinfo"))
		require.NoError(t, err)
		ch.Metadata.Version = v
		p, err := chartutil.Save(ch, dir)
		require.NoError(t, err)
		out[v] = p
	}
	return out
}

func TestRenderFromHTTPRepository(t *testing.T) {
	dir := t.TempDir()
	packagePodinfo(t, dir, "6.14.1", "6.15.0")
	// A real index.yaml, made by Helm from the packaged charts, served with basic auth.
	srv := httptest.NewServer(basicAuth("ci", "s3cret", http.FileServer(http.Dir(dir))))
	defer srv.Close()
	idx, err := repo.IndexDirectory(dir, srv.URL)
	require.NoError(t, err)
	require.NoError(t, idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644))

	host := strings.TrimPrefix(srv.URL, "http://")
	r := newRenderer(t, render.Options{Credentials: map[string]render.Credential{"ci": {Host: host, Username: "ci", Password: "s3cret"},
		"wrong": {Host: host, Username: "ci", Password: "nope"}, "elsewhere": {Host: "charts.example.com", Username: "ci", Password: "s3cret"}}})
	in := func(version, cred string) render.Input {
		return render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
			Source: events.Source{Helm: &events.HelmSource{RepoURL: srv.URL, Chart: "podinfo", Version: version, Credentials: cred}}}}
	}
	tests := []struct {
		name, version, cred, want, reason string
	}{
		{"newest", "", "ci", "6.15.0", ""},
		{"exact", "6.14.1", "ci", "6.14.1", ""},
		{"range", ">=6.0.0 <6.15.0", "ci", "6.14.1", ""},
		{"missing version", "7.0.0", "ci", "", render.ReasonSourceNotFound},
		{"wrong password", "", "wrong", "", render.ReasonAuthDenied},
		{"no credentials", "", "", "", render.ReasonAuthDenied},
		{"credentials not configured", "", "other", "", render.ReasonAuthDenied},
		{"credentials for another host", "", "elsewhere", "", render.ReasonAuthDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.Render(t.Context(), in(tc.version, tc.cred))
			if tc.reason != "" {
				require.Error(t, err)
				assert.Equal(t, tc.reason, events.ReasonOf(err), err.Error())
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, out.Chart.Version)
			assert.NotEmpty(t, out.Objects)
		})
	}
	_, err = r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{RepoURL: "http://127.0.0.1:1", Chart: "podinfo"}}}})
	assert.Equal(t, render.ReasonSourceUnreachable, events.ReasonOf(err), "nothing listens there")
}

// TestCredentialsGoOnlyToTheirHost: an index.yaml whose chart URL points at another host gets
// that host no credentials (as Helm without --pass-credentials): the chart server sees no
// Authorization header.
func TestCredentialsGoOnlyToTheirHost(t *testing.T) {
	dir := t.TempDir()
	packagePodinfo(t, dir, "6.14.1")
	var leaked atomic.Int32
	charts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	}))
	defer charts.Close()
	idx, err := repo.IndexDirectory(dir, charts.URL) // the charts' URLs: on the other server
	require.NoError(t, err)
	index, err := yaml.Marshal(idx)
	require.NoError(t, err)
	srv := httptest.NewServer(basicAuth("ci", "s3cret", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(index) })))
	defer srv.Close()
	r := newRenderer(t, render.Options{Credentials: map[string]render.Credential{"ci": {Host: strings.TrimPrefix(srv.URL, "http://"), Username: "ci", Password: "s3cret"}}})
	out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{RepoURL: srv.URL, Chart: "podinfo", Credentials: "ci"}}}})
	require.NoError(t, err)
	assert.Equal(t, "6.14.1", out.Chart.Version)
	assert.Zero(t, leaked.Load(), "the chart's host got the repository's credentials")

	_, err = render.New(render.Options{Credentials: map[string]render.Credential{"nohost": {Username: "u", Password: "p"}}})
	assert.ErrorContains(t, err, "no host")
}

// pushChart pushes the chart archive at path to ref (host/repo:tag) of a plain-HTTP registry,
// with Helm's own registry client.
func pushChart(t *testing.T, path, ref string) {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	client, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptWriter(io.Discard))
	require.NoError(t, err)
	_, err = client.Push(data, ref)
	require.NoError(t, err)
}

func TestRenderFromOCIRegistry(t *testing.T) {
	// An in-process OCI registry, and the chart pushed with Helm's own registry client.
	reg := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	pushChart(t, packagePodinfo(t, t.TempDir(), "6.14.1")["6.14.1"], host+"/charts/podinfo:6.14.1")

	r := newRenderer(t, render.Options{PlainHTTPRegistries: []string{host}})
	in := func(ref, version string) render.Input {
		return render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
			Source: events.Source{Helm: &events.HelmSource{OCI: ref, Version: version}}}}
	}
	out, err := r.Render(t.Context(), in("oci://"+host+"/charts/podinfo", "6.14.1"))
	require.NoError(t, err)
	assert.Equal(t, "podinfo", out.Chart.Name)
	assert.Equal(t, "6.14.1", out.Chart.Version)
	local, err := r.Render(t.Context(), helmInput(filepath.Join(fixtures(t), "podinfo/charts/podinfo")))
	require.NoError(t, err)
	assert.Equal(t, local.Objects, out.Objects, "the pulled chart renders as the directory does")

	_, err = r.Render(t.Context(), in("oci://"+host+"/charts/podinfo", "9.9.9"))
	assert.Equal(t, render.ReasonSourceNotFound, events.ReasonOf(err), "%v", err)
	_, err = r.Render(t.Context(), in("oci://"+host+"/charts/nothing", "1.0.0"))
	assert.Equal(t, render.ReasonSourceNotFound, events.ReasonOf(err), "%v", err)
}

func TestRenderFromOCIRegistryWithAuth(t *testing.T) {
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	reg := httptest.NewServer(basicAuth("ci", "s3cret", inner))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	archives := packagePodinfo(t, t.TempDir(), "6.14.1")
	data, err := os.ReadFile(archives["6.14.1"])
	require.NoError(t, err)
	client, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptWriter(io.Discard), registry.ClientOptBasicAuth("ci", "s3cret"))
	require.NoError(t, err)
	_, err = client.Push(data, host+"/charts/podinfo:6.14.1")
	require.NoError(t, err)

	r := newRenderer(t, render.Options{PlainHTTPRegistries: []string{host},
		Credentials: map[string]render.Credential{"ci": {Host: host, Username: "ci", Password: "s3cret"}, "wrong": {Host: host, Username: "ci", Password: "nope"}}})
	in := func(cred string) render.Input {
		return render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
			Source: events.Source{Helm: &events.HelmSource{OCI: "oci://" + host + "/charts/podinfo", Version: "6.14.1", Credentials: cred}}}}
	}
	out, err := r.Render(t.Context(), in("ci"))
	require.NoError(t, err)
	assert.Equal(t, "podinfo", out.Chart.Name)
	for _, cred := range []string{"wrong", ""} {
		_, err = r.Render(t.Context(), in(cred))
		assert.Equal(t, render.ReasonAuthDenied, events.ReasonOf(err), "credentials %q: %v", cred, err)
	}
}

func TestRenderUploadedChart(t *testing.T) {
	archives := packagePodinfo(t, t.TempDir(), "6.14.1")
	data, err := os.ReadFile(archives["6.14.1"])
	require.NoError(t, err)
	digest := events.Digest(data)
	r := newRenderer(t, render.Options{Sources: func(ctx context.Context, d string) (io.ReadCloser, error) {
		if d != digest {
			return nil, events.ErrNotFound
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}})
	in := func(d string) render.Input {
		return render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
			Source: events.Source{Helm: &events.HelmSource{Object: d}}}}
	}
	out, err := r.Render(t.Context(), in(digest))
	require.NoError(t, err)
	assert.Equal(t, "podinfo", out.Chart.Name)
	_, err = r.Render(t.Context(), in(events.Digest([]byte("other"))))
	assert.Equal(t, render.ReasonSourceNotFound, events.ReasonOf(err))
}
