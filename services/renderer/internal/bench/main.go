// Command bench measures rendering the podinfo fixture chart in process against `helm template`
// run as a process on the same chart and values (Helm's CLI, built from the module proxy into
// ./bin by `make cluster-bin`), in the same run: rounds alternate between every path so that the
// machine's ups and downs fall on all of them, and the table shows medians. In process the chart
// comes as troupe uses it normally, uploaded to the sources object store by digest (here: held in
// memory). Paths: the first render of a chart (a new renderer: nothing loaded, parsed or cached);
// a cold render of a new revision (other values each time, so the output cache cannot answer; the
// chart loaded and its templates parsed once per digest, as the renderer keeps them); identical
// inputs (cached); and a cached render of a chart directory on the renderer's own disk (it must
// stat every file to know the chart is unchanged). Run by `make bench`.
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
	"slices"
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
	rounds := flag.Int("rounds", 7, "rounds; each measures every path, the table shows medians")
	cold := flag.Int("cold", 150, "cold renders per round")
	first := flag.Int("first", 20, "first renders per round")
	cached := flag.Int("cached", 3000, "cached renders per round")
	procs := flag.Int("helm-runs", 5, "helm template processes per round")
	flag.Parse()
	if err := run(*chart, *values, *helm, *rounds, counts{first: *first, cold: *cold, cached: *cached, helm: *procs}); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type counts struct{ first, cold, cached, helm int }

// paths measured, in table order.
var paths = []string{
	"`helm template` process",
	"troupe renderer, first render of a chart",
	"troupe renderer, cold (new values; chart loaded and templates parsed once per digest)",
	"troupe renderer, cached",
	"troupe renderer, cached, chart dir on disk",
}

func run(chart, values, helm string, rounds int, n counts) error {
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
	noCache, err := render.New(render.Options{CacheSize: -1, Sources: fetch, SourceRoots: []string{filepath.Dir(chart)}})
	if err != nil {
		return err
	}
	withCache, err := render.New(render.Options{Sources: fetch, SourceRoots: []string{filepath.Dir(chart)}})
	if err != nil {
		return err
	}
	for _, r := range []struct {
		r  *render.Renderer
		in render.Input
	}{{noCache, in}, {withCache, in}, {withCache, inDir}} {
		if _, err := r.r.Render(ctx, r.in); err != nil { // load, parse and cache what is kept
			return err
		}
	}

	measured := make([][]time.Duration, len(paths)) // per path, per round: time per render
	revision := 0
	for range rounds {
		per := make([]time.Duration, len(paths))
		start := time.Now()
		for range n.helm {
			cmd := exec.Command(helm, "template", "web", chart, "--namespace", "prod", "-f", values)
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("helm template: %w: %s", err, out)
			}
		}
		per[0] = time.Since(start) / time.Duration(n.helm)

		// First render of a chart: a new renderer each time, so nothing is loaded or cached.
		start = time.Now()
		for range n.first {
			fresh, err := render.New(render.Options{CacheSize: -1, Sources: fetch, SourceRoots: []string{filepath.Dir(chart)}})
			if err != nil {
				return err
			}
			if _, err := fresh.Render(ctx, in); err != nil {
				return err
			}
		}
		per[1] = time.Since(start) / time.Duration(n.first)

		// Cold render of a new revision: other values each time, so no output cache can answer.
		start = time.Now()
		for range n.cold {
			revision++
			next := in
			next.Request.Set = []string{fmt.Sprintf("replicaCount=%d", revision+1)}
			if _, err := noCache.Render(ctx, next); err != nil {
				return err
			}
		}
		per[2] = time.Since(start) / time.Duration(n.cold)

		if per[3], err = timeRenders(ctx, withCache, in, n.cached); err != nil {
			return err
		}
		if per[4], err = timeRenders(ctx, withCache, inDir, n.cached/10); err != nil {
			return err
		}
		for i, d := range per {
			measured[i] = append(measured[i], d)
		}
	}

	fmt.Printf("Rendering the podinfo chart (values-prod.yaml): in process vs `helm template` as a process, same run,\n")
	fmt.Printf("%d interleaved rounds, medians\n\n", rounds)
	fmt.Println("| path | per render | renders/s | vs helm template | range over rounds |")
	fmt.Println("|---|---:|---:|---:|---:|")
	helmMedian := median(measured[0])
	ratio := make([]float64, len(paths))
	for i, name := range paths {
		d := median(measured[i])
		ratio[i] = float64(helmMedian) / float64(d)
		lo, hi := ratios(measured[0], measured[i])
		fmt.Printf("| %s | %s | %.0f | %.0f× | %.0f–%.0f× |\n", name, d.Round(time.Microsecond/10), float64(time.Second)/float64(d), ratio[i], lo, hi)
	}
	fmt.Println()
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Printf("targets: cold ≥ 20× helm — %s; cached ≥ 1000× helm — %s\n", verdict(ratio[2] >= 20), verdict(ratio[3] >= 1000))
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// ratios is the lowest and highest of helm's time over the path's, round by round.
func ratios(helm, path []time.Duration) (lo, hi float64) {
	for i := range helm {
		r := float64(helm[i]) / float64(path[i])
		if i == 0 || r < lo {
			lo = r
		}
		if r > hi {
			hi = r
		}
	}
	return lo, hi
}

// timeRenders renders in n times and returns the time per render.
func timeRenders(ctx context.Context, r *render.Renderer, in render.Input, n int) (time.Duration, error) {
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
