package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// report prints the tables: time per phase and the ratios, request→ready percentiles, and
// what each process cost.
func report(w io.Writer, par int, results []*result) {
	find := func(side string, n int) *result {
		for _, r := range results {
			if r.side == side && r.n == n {
				return r
			}
		}
		return nil
	}
	var counts []int
	for _, r := range results {
		if !slices.Contains(counts, r.n) {
			counts = append(counts, r.n)
		}
	}
	fmt.Fprintf(w, "\nbench-scale: distinct podinfo releases (default values, one namespace each), %d requests at once on every side, a fresh local cluster per side\n\n", par)
	fmt.Fprintln(w, "| releases | phase | limit (client-go SSA + kstatus) | troupe | helm --wait | troupe / limit | troupe / helm | troupe releases/s |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|")
	for _, n := range counts {
		l, t, h := find("limit", n), find("troupe", n), find("helm", n)
		for i, p := range phases {
			lw, tw, hw := wallOf(l, i), wallOf(t, i), wallOf(h, i)
			rate := "–"
			if tw > 0 {
				rate = fmt.Sprintf("%.1f", float64(n)/tw.Seconds())
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s |\n", n, p, dur(lw), dur(tw), dur(hw), ratio(tw, lw), ratio(tw, hw), rate)
		}
	}
	fmt.Fprintln(w, "\npublished reference, other hardware (fluxcd/flux-benchmark RESULTS.md: Flux v2.6.0, 16-core runner, kind with 3 nodes,")
	fmt.Fprintln(w, "podinfo): 1000 Kustomizations ready in 4m16s, 1000 HelmReleases in 8m12s (3.9 and 2.0 releases/s)")
	fmt.Fprintln(w, "\nrequest → ready per release, p50 / p99")
	fmt.Fprintln(w, "\n| releases | phase | limit | troupe | helm |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|")
	for _, n := range counts {
		for i, p := range phases {
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s |\n", n, p, pcts(find("limit", n), i), pcts(find("troupe", n), i), pcts(find("helm", n), i))
		}
	}
	for _, n := range counts {
		fmt.Fprintf(w, "\nCPU seconds over the phases · peak RSS, %d releases\n\n", n)
		fmt.Fprintln(w, "| process | limit | troupe | helm |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		var rows []string
		for _, side := range []string{"troupe", "limit", "helm"} {
			if r := find(side, n); r != nil {
				for _, u := range append(r.procs, r.cli) {
					if u.name != "" && !slices.Contains(rows, u.name) {
						rows = append(rows, u.name)
					}
				}
			}
		}
		for _, name := range rows {
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", name, cost(find("limit", n), name), cost(find("troupe", n), name), cost(find("helm", n), name))
		}
		fmt.Fprintf(w, "| **the cluster's processes** | %s | %s | %s |\n", sum(find("limit", n), clusterOrder), sum(find("troupe", n), clusterOrder), sum(find("helm", n), clusterOrder))
		fmt.Fprintf(w, "| **troupe's services and nats-server** | – | %s | – |\n", sum(find("troupe", n), append(append([]string{}, services...), "nats-server")))
		var sides []*result
		for _, side := range []string{"limit", "troupe", "helm"} {
			if r := find(side, n); r != nil {
				sides = append(sides, r)
			}
		}
		reportRequests(w, n, sides)
		reportWrites(w, find("troupe", n))
	}
}

// sum is the CPU seconds of r's processes among names, and their share of the whole run's.
func sum(r *result, names []string) string {
	if r == nil {
		return "–"
	}
	var part, all time.Duration
	for _, u := range append(r.procs, r.cli) {
		all += u.cpu
		if slices.Contains(names, u.name) {
			part += u.cpu
		}
	}
	if all == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f s (%.0f%%)", part.Seconds(), 100*part.Seconds()/all.Seconds())
}

func wallOf(r *result, i int) time.Duration {
	if r == nil || i >= len(r.phases) {
		return 0
	}
	return r.phases[i].wall
}

func dur(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return d.Round(100 * time.Millisecond).String()
}

func ratio(a, b time.Duration) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a.Seconds()/b.Seconds())
}

func pcts(r *result, i int) string {
	if r == nil || i >= len(r.phases) || len(r.phases[i].latency) == 0 {
		return "–"
	}
	s := slices.Clone(r.phases[i].latency)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return fmt.Sprintf("%s / %s", at(0.50).Round(10*time.Millisecond), at(0.99).Round(10*time.Millisecond))
}

func cost(r *result, name string) string {
	if r == nil {
		return "–"
	}
	for _, u := range append(r.procs, r.cli) {
		if u.name == name {
			return fmt.Sprintf("%.1f s · %d MiB", u.cpu.Seconds(), u.rss>>20)
		}
	}
	return "–"
}
