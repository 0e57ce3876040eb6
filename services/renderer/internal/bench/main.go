// Command bench measures rendering the podinfo fixture chart in process — cold (no cache: the
// chart loaded and rendered every time) and cached (identical inputs) — against `helm template`
// run as a process on the same chart and values (Helm's CLI, built from the module proxy into
// ./bin by `make cluster-bin`), in the same run. The in-process renders read the chart as troupe
// does in normal use, uploaded to the sources object store by digest (here: held in memory);
// a cached render of a chart directory on the renderer's own disk is shown too, as it must stat
// every file to know the chart is unchanged. Run by `make bench`.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

func main() {
	chart := flag.String("chart", "../shared/fixtures/podinfo/charts/podinfo", "chart to render")
	values := flag.String("values", "../shared/fixtures/podinfo/charts/podinfo/values-prod.yaml", "values file")
	helm := flag.String("helm", "bin/helm", "the helm CLI")
	cold := flag.Int("cold", 200, "cold renders")
	cached := flag.Int("cached", 20000, "cached renders")
	procs := flag.Int("helm-runs", 30, "helm template processes")
	flag.Parse()
	if err := run(*chart, *values, *helm, *cold, *cached, *procs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(chart, values, helm string, nCold, nCached, nHelm int) error {
	ctx := context.Background()
	vals, err := os.ReadFile(values)
	if err != nil {
		return err
	}
	archive, err := packageChart(chart)
	if err != nil {
		return err
	}
	digest := events.Digest(archive)
	fetch := func(ctx context.Context, d string) (io.ReadCloser, error) {
		if d != digest {
			return nil, events.ErrNotFound
		}
		return io.NopCloser(bytes.NewReader(archive)), nil
	}
	valuesFiles := []events.ValuesFile{{Name: filepath.Base(values), Content: string(vals)}}
	in := render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{Object: digest}}, ValuesFiles: valuesFiles}}
	inDir := render.Input{Release: in.Release, Revision: 1, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{Path: chart}}, ValuesFiles: valuesFiles}}
	if _, err := exec.LookPath(helm); err != nil {
		return fmt.Errorf("%s: %w (build it with `make cluster-bin`)", helm, err)
	}

	// First render of a chart: a new renderer each time, so nothing is loaded or cached.
	start := time.Now()
	for range nCold {
		fresh, err := render.New(render.Options{CacheSize: -1, Sources: fetch})
		if err != nil {
			return err
		}
		if _, err := fresh.Render(ctx, in); err != nil {
			return err
		}
	}
	firstPer := time.Since(start) / time.Duration(nCold)

	// Cold render of a new revision: other values each time (no output cache can answer), the
	// uploaded chart parsed once for its digest.
	noCache, err := render.New(render.Options{CacheSize: -1, Sources: fetch})
	if err != nil {
		return err
	}
	if _, err := noCache.Render(ctx, in); err != nil {
		return err
	}
	start = time.Now()
	for i := range nCold {
		next := in
		next.Request.Set = []string{fmt.Sprintf("replicaCount=%d", i+2)}
		if _, err := noCache.Render(ctx, next); err != nil {
			return err
		}
	}
	coldPer := time.Since(start) / time.Duration(nCold)

	withCache, err := render.New(render.Options{Sources: fetch})
	if err != nil {
		return err
	}
	cachedPer, err := timeRenders(ctx, withCache, in, nCached)
	if err != nil {
		return err
	}
	cachedDirPer, err := timeRenders(ctx, withCache, inDir, nCached/10)
	if err != nil {
		return err
	}

	start = time.Now()
	for range nHelm {
		cmd := exec.Command(helm, "template", "web", chart, "--namespace", "prod", "-f", values)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("helm template: %w: %s", err, out)
		}
	}
	helmPer := time.Since(start) / time.Duration(nHelm)

	fmt.Printf("Rendering the podinfo chart (values-prod.yaml): in process vs `helm template` as a process, same run\n\n")
	fmt.Println("| path | per render | renders/s | vs helm template |")
	fmt.Println("|---|---:|---:|---:|")
	row := func(name string, d time.Duration) {
		fmt.Printf("| %s | %s | %.0f | %.0f× |\n", name, d, float64(time.Second)/float64(d), float64(helmPer)/float64(d))
	}
	row("`helm template` process", helmPer)
	row("troupe renderer, first render of a chart", firstPer)
	row("troupe renderer, cold (new values, chart parsed once per digest)", coldPer)
	row("troupe renderer, cached", cachedPer)
	row("troupe renderer, cached, chart dir on disk", cachedDirPer)
	fmt.Println()
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Printf("targets: cold ≥ 20× helm — %s (first render of a chart: %.0f×); cached ≥ 1000× helm — %s\n",
		verdict(float64(helmPer)/float64(coldPer) >= 20), float64(helmPer)/float64(firstPer), verdict(float64(helmPer)/float64(cachedPer) >= 1000))
	return nil
}

// timeRenders renders in once, then n times more, and returns the time per render of the n.
func timeRenders(ctx context.Context, r *render.Renderer, in render.Input, n int) (time.Duration, error) {
	if _, err := r.Render(ctx, in); err != nil {
		return 0, err
	}
	start := time.Now()
	for range n {
		if _, err := r.Render(ctx, in); err != nil {
			return 0, err
		}
	}
	return time.Since(start) / time.Duration(n), nil
}

// packageChart packages the chart directory as Helm does, into memory.
func packageChart(dir string) ([]byte, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "troupe-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	p, err := chartutil.Save(ch, tmp)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}
