package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/troupe-dev/troupe/test/cluster"
)

// requests reads the API server's request counter (apiserver_request_total) by verb and
// resource: what a side asked of the cluster, beyond what the limit asks, is where the cluster's
// extra CPU goes.
func requests(ctx context.Context, kube *cluster.Cluster) (map[string]float64, error) {
	raw, err := kube.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("the API server's metrics: %w", err)
	}
	out := map[string]float64{}
	const metric = "apiserver_request_total{"
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, metric) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err != nil {
			continue
		}
		var verb, resource, sub string
		for _, l := range strings.Split(strings.TrimSuffix(line[len(metric):i], "}"), ",") {
			k, val, _ := strings.Cut(l, "=")
			val = strings.Trim(val, `"`)
			switch k {
			case "verb":
				verb = val
			case "resource":
				resource = val
			case "subresource":
				sub = val
			}
		}
		if sub != "" {
			resource += "/" + sub
		}
		out[verb+" "+resource] += v
	}
	return out, nil
}

// since is after minus before.
func since(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v -= before[k]; v > 0 {
			d[k] = v
		}
	}
	return d
}

// reportRequests prints, for n releases, the requests each side made of the API server over
// the phases, by verb and resource, the largest first.
func reportRequests(w io.Writer, n int, sides []*result) {
	keys, least := map[string]float64{}, map[string]float64{} // the most and the least of any side
	for _, r := range sides {
		for k := range r.requests {
			keys[k] = 0
		}
	}
	for k := range keys {
		least[k] = sides[0].requests[k]
		for _, r := range sides {
			keys[k], least[k] = max(keys[k], r.requests[k]), min(least[k], r.requests[k])
		}
	}
	if len(keys) == 0 {
		return
	}
	fmt.Fprintf(w, "\nAPI server requests over the phases, %d releases (apiserver_request_total by verb and resource; at least %d on some side, or sides %d apart)\n\n", n, n/10, max(3, n/100))
	fmt.Fprint(w, "| verb resource |")
	for _, r := range sides {
		fmt.Fprintf(w, " %s |", r.side)
	}
	fmt.Fprint(w, "\n|---|")
	for range sides {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	order := slices.SortedFunc(maps.Keys(keys), func(a, b string) int {
		if keys[a] != keys[b] {
			if keys[a] > keys[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	total := make([]float64, len(sides))
	for _, k := range order {
		for i, r := range sides {
			total[i] += r.requests[k]
		}
		if keys[k] < float64(n/10) && keys[k]-least[k] < float64(max(3, n/100)) {
			continue
		}
		fmt.Fprintf(w, "| %s |", k)
		for _, r := range sides {
			fmt.Fprintf(w, " %.0f |", r.requests[k])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprint(w, "| **all** |")
	for i := range sides {
		fmt.Fprintf(w, " %.0f |", total[i])
	}
	fmt.Fprintln(w)
}

// profileAPIServer records the API server's CPU profile while the phases run, in pieces of 10 s
// (its /debug/pprof/profile), as prefix-<k>.pprof: `go tool pprof -top prefix-*.pprof` reads them
// together. stop waits for the piece under way.
func profileAPIServer(kube *cluster.Cluster, prefix string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; ctx.Err() == nil; k++ {
			raw, err := kube.Client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "10").DoRaw(context.WithoutCancel(ctx))
			if err != nil {
				fmt.Fprintf(os.Stderr, "bench-scale: the API server's profile: %v\n", err)
				return
			}
			_ = os.WriteFile(fmt.Sprintf("%s-%d.pprof", prefix, k), raw, 0o644)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// profiling starts profileAPIServer for side when -profile names a directory; stop does nothing
// otherwise.
func (b *bench) profiling(kube *cluster.Cluster, side string, n int) (stop func()) {
	if b.profile == "" {
		return func() {}
	}
	return profileAPIServer(kube, filepath.Join(b.profile, fmt.Sprintf("%s-%d-apiserver", side, n)))
}

// measuring is what a side's timed phases cost, from measure to done: each long-lived process's
// CPU and peak RSS, the API server's requests, and with -profile its CPU profile.
type measuring struct {
	kube        *cluster.Cluster
	m           *meter
	before      map[string]float64
	stopProfile func()
}

// measure starts measuring side's phases on kube: procs (by name) in order.
func (b *bench) measure(ctx context.Context, kube *cluster.Cluster, side string, n int, procs map[string]int, order []string) (*measuring, error) {
	m := newMeter(procs, order)
	before, err := requests(ctx, kube)
	if err != nil {
		return nil, err
	}
	return &measuring{kube: kube, m: m, before: before, stopProfile: b.profiling(kube, side, n)}, nil
}

// done ends the measuring: r gets its processes' costs and its requests.
func (ms *measuring) done(ctx context.Context, r *result) error {
	var err error
	if r.procs, err = ms.m.read(); err != nil {
		return err
	}
	ms.stopProfile()
	after, err := requests(ctx, ms.kube)
	if err != nil {
		return err
	}
	r.requests = since(ms.before, after)
	return nil
}
