package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

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
// the three phases, by verb and resource, the largest first.
func reportRequests(w io.Writer, n int, sides []*result) {
	keys := map[string]float64{}
	for _, r := range sides {
		for k, v := range r.requests {
			keys[k] = max(keys[k], v)
		}
	}
	if len(keys) == 0 {
		return
	}
	fmt.Fprintf(w, "\nAPI server requests over the three phases, %d releases (apiserver_request_total by verb and resource; at least %d on some side)\n\n", n, n/10)
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
		if keys[k] < float64(n/10) {
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
