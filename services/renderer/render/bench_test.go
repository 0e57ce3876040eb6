package render_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/troupe-dev/troupe/events"
	sharedfixtures "github.com/troupe-dev/troupe/services/renderer/internal/fixtures"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// BenchmarkRenderCold renders the podinfo chart, uploaded by digest, with new values each time
// (the output cache off): the path `make bench` calls cold. For profiling; make bench prints the
// comparison with helm.
func BenchmarkRenderCold(b *testing.B) {
	dir := filepath.Join(sharedfixtures.Dir(b), "podinfo/charts")
	archive := sharedfixtures.TarGz(b, dir, filepath.Join(dir, "podinfo"))
	digest := events.Digest(archive)
	vals, err := os.ReadFile(filepath.Join(dir, "podinfo/values-prod.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	r, err := render.New(render.Options{CacheSize: -1, Sources: func(context.Context, string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(archive)), nil
	}})
	if err != nil {
		b.Fatal(err)
	}
	in := render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
		Source:      events.Source{Helm: &events.HelmSource{Object: digest}},
		ValuesFiles: []events.ValuesFile{{Name: "values-prod.yaml", Content: string(vals)}}}}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		in.Request.Set = []string{fmt.Sprintf("replicaCount=%d", i+2)}
		if _, err := r.Render(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
}
