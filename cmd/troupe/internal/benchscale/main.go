// Command benchscale is `make bench-scale`: N distinct podinfo releases (the fixture chart,
// default values, one namespace each) installed at once, then all upgraded at once (a changed
// value that rolls every Deployment), then all rolled back, on a local cluster of its own for
// each side, side by side in one run:
//
//   - limit: the same rendered objects applied directly with client-go's server-side apply at the
//     same parallelism, each release waited for with kstatus — what the API server and the
//     controllers need for these objects, the physical limit of any deployment system on this
//     cluster;
//   - troupe: one CLI process per phase (`troupe release podinfo CHART --namespaces …`,
//     `troupe rollback podinfo --namespaces …`, no --wait: one connection, one upload, 64
//     requests in flight) against nats-server and each service as a process of its own, as they
//     run on a cluster; a release counts as ready when its release.ready is on the stream, its
//     latency runs from the CLI's start;
//   - helm: `helm upgrade --install --wait` and `helm rollback --wait`, same parallelism.
//
// Every side starts from a fresh cluster whose namespaces are created and settled (default
// ServiceAccount, root CA ConfigMap) before any clock starts, so none pays for what another
// left behind. Besides wall time and request→ready percentiles it reads, from /proc, the CPU
// seconds and peak RSS of every long-lived process (the services, nats-server, etcd, the API
// server, the controllers, kwok) and of the CLI processes together.
//
// The limit waits with kstatus (github.com/fluxcd/cli-utils), what troupe's health watcher, Flux
// and Helm 4 wait with, through client-go's dynamic informers rather than polling, so "ready"
// means the same on every side and the limit's own watching costs the cluster as little as it
// can; its objects come from troupe's renderer package, so both sides apply the same bytes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/troupe-dev/troupe/cmd/troupe/internal/benchenv"
)

func main() {
	ns := flag.String("n", "100,500,1000", "release counts, comma-separated")
	helmN := flag.String("helm", "100,500", "the release counts Helm runs too (it holds a process per release for minutes)")
	par := flag.Int("parallel", 50, "requests at once: the limit's apply workers, helm processes (troupe's one CLI process keeps 64 in flight)")
	sides := flag.String("sides", "limit,troupe,helm", "which sides run")
	keep := flag.Bool("keep", false, "keep every side's logs (cluster, nats-server, services) and print where")
	profile := flag.String("profile", "", "write CPU profiles into this directory: the API server's over each side's phases (<side>-<n>-apiserver-<k>.pprof), each troupe service's over its whole run (troupe-<n>-<service>.pprof, $TROUPE_CPU_PROFILE) and its heap at its largest (troupe-<n>-<service>.heap.pprof, $TROUPE_HEAP_PROFILE)")
	only := flag.String("phases", strings.Join(phases, ","), "which phases run, in this order (install comes first; -phases install with -sides troupe -n 10000 measures what health and history hold per followed release)")
	flag.Parse()
	if err := setPhases(*only); err != nil {
		fail(err)
	}
	counts, err := ints(*ns)
	if err != nil {
		fail(err)
	}
	helmCounts, err := ints(*helmN)
	if err != nil {
		fail(err)
	}
	b, err := newBench(*par, *keep)
	if err != nil {
		fail(err)
	}
	if b.profile = *profile; b.profile != "" {
		if err := os.MkdirAll(b.profile, 0o755); err != nil {
			fail(err)
		}
	}
	defer b.close()
	var results []*result
	for _, n := range counts {
		for _, side := range strings.Split(*sides, ",") {
			if side == "helm" && !slices.Contains(helmCounts, n) {
				continue
			}
			fmt.Fprintf(os.Stderr, "bench-scale: %s, %d releases\n", side, n)
			r, err := b.run(side, n)
			if err != nil {
				fail(fmt.Errorf("%s, %d releases: %w", side, n, err))
			}
			results = append(results, r)
		}
	}
	report(os.Stdout, *par, results)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench-scale:", err)
	os.Exit(1)
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive counts, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// phases are what every side does to all its releases, in this order (-phases).
var phases = []string{"install", "upgrade", "rollback"}

// setPhases keeps the phases named in list (comma-separated), in their order.
func setPhases(list string) error {
	want := strings.Split(list, ",")
	var kept []string
	for _, p := range phases {
		if slices.Contains(want, p) {
			kept = append(kept, p)
		}
	}
	if len(kept) != len(want) || kept[0] != "install" || (slices.Contains(kept, "rollback") && !slices.Contains(kept, "upgrade")) {
		return fmt.Errorf("-phases %q: want install, then upgrade, then rollback (each optional, a rollback after an upgrade)", list)
	}
	phases = kept
	return nil
}

// upgradeSet is the upgrade's changed value: it changes the pod template, so every Deployment
// rolls out a new ReplicaSet (a replica count alone would not).
const upgradeSet = "ui.message=upgraded by bench-scale"

// result is one side's run at one release count.
type result struct {
	side   string
	n      int
	phases []phase
	procs  []usage // long-lived processes
	cli    usage   // the CLI processes of every phase together (troupe, helm)
	// requests is what the side asked of the API server over the phases, by "verb resource".
	requests map[string]float64
	// writes is what troupe stored in JetStream over the phases, by stream.
	writes map[string]uint64
}

// phase is one phase's wall time and each release's time from its request to ready.
type phase struct {
	name    string
	wall    time.Duration
	latency []time.Duration
}

type bench struct {
	root, tmp, chart string
	bin              string // troupe, the services, built for this run
	clusterBin       string // etcd, kube-apiserver, …, helm, nats-server (make cluster-bin, nats-bin)
	par              int
	keep             bool
	profile          string // -profile
}

func newBench(par int, keep bool) (*bench, error) {
	b := &bench{par: par, keep: keep}
	var err error
	if b.root, err = benchenv.Root(); err != nil {
		return nil, err
	}
	b.clusterBin = filepath.Join(b.root, "bin")
	b.chart = filepath.Join(b.root, "..", "shared", "fixtures", "podinfo", "charts", "podinfo")
	for _, need := range []string{"helm", "nats-server", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(b.clusterBin, need)); err != nil {
			return nil, fmt.Errorf("%s: %w (make cluster-bin nats-bin builds it)", need, err)
		}
	}
	if b.tmp, err = os.MkdirTemp("", "troupe-bench-scale-"); err != nil {
		return nil, err
	}
	b.bin = filepath.Join(b.tmp, "bin")
	// As `make build` and a deployment have them: the lean CLI, each service its own binary.
	for _, args := range [][]string{
		{"-tags", "lean", "-o", filepath.Join(b.bin, "troupe"), "./cmd/troupe"},
		{"-o", b.bin + "/", "./services/renderer/cmd/renderer", "./services/applier/cmd/applier",
			"./services/health/cmd/health", "./services/history/cmd/history"},
	} {
		build := exec.Command("go", append([]string{"build"}, args...)...)
		build.Dir = b.root
		if out, err := build.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build: %w\n%s", err, out)
		}
	}
	return b, nil
}

func (b *bench) close() {
	if !b.keep {
		_ = os.RemoveAll(b.tmp)
	}
}

func (b *bench) run(side string, n int) (*result, error) {
	ctx := context.Background()
	dir := filepath.Join(b.tmp, fmt.Sprintf("%s-%d", side, n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var r *result
	var err error
	switch side {
	case "limit":
		r, err = b.limit(ctx, dir, n)
	case "troupe":
		r, err = b.troupe(ctx, dir, n)
	case "helm":
		r, err = b.helm(ctx, dir, n)
	default:
		return nil, fmt.Errorf("unknown side %q (want limit, troupe or helm)", side)
	}
	if err != nil && b.keep {
		err = fmt.Errorf("%w (logs in %s)", err, dir)
	}
	if err == nil && !b.keep {
		_ = os.RemoveAll(dir)
	}
	return r, err
}

// namespaces are the releases' namespaces, one each, and the warm-up's.
func namespaces(n int) []string {
	out := make([]string, n)
	for i := range n {
		out[i] = fmt.Sprintf("scale-%d", i)
	}
	return out
}
