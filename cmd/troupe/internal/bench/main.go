// Command bench measures troupe end to end against Helm on one local cluster, in one run: the
// time from `troupe release --wait` to ready vs `helm upgrade --install --wait` for the podinfo
// fixture chart (p50 of installs and of upgrades, the two interleaved), and throughput: distinct
// releases requested at once until all are ready vs as many helm processes with the same
// parallelism. Then each fixture chart (podinfo, argo-cd with its pre-install hook Job,
// postgresql with its StatefulSet and volume claim, nats): p50 of installs with --wait, hooks
// running on both sides. Both sides are separate processes — the troupe CLI and `troupe dev` with its
// services, the helm CLI built from the module proxy — so each pays what a user pays.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/cmd/troupe/internal/benchenv"
	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/test/cluster"
)

func main() {
	n := flag.Int("n", 10, "installs and upgrades per side")
	many := flag.Int("releases", 100, "releases of the throughput run")
	par := flag.Int("parallel", 10, "processes at once in the throughput run, on both sides")
	chartsN := flag.Int("charts-n", 3, "installs per side of each fixture chart (0: none)")
	headline := flag.Bool("headline", true, "run the podinfo installs, upgrades and throughput")
	flag.Parse()
	if err := run(*n, *many, *par, *chartsN, *headline); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type env struct {
	root, bin, tmp, chart, nats string
	kube                        *cluster.Cluster
}

func run(n, many, par, chartsN int, headline bool) error {
	ctx := context.Background()
	e := &env{}
	var err error
	if e.root, err = benchenv.Root(); err != nil {
		return err
	}
	e.bin = filepath.Join(e.root, "bin")
	e.chart = filepath.Join(e.root, "..", "shared", "fixtures", "podinfo", "charts", "podinfo")
	if e.tmp, err = os.MkdirTemp("", "troupe-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(e.tmp)
	for _, args := range [][]string{{"-tags", "lean", "-o", filepath.Join(e.tmp, "troupe")}, {"-o", filepath.Join(e.tmp, "troupe-dev")}} {
		build := exec.Command("go", append(append([]string{"build"}, args...), "./cmd/troupe")...)
		build.Dir = e.root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build troupe: %w\n%s", err, out)
		}
	}
	if _, err := os.Stat(filepath.Join(e.bin, "helm")); err != nil {
		return fmt.Errorf("helm: %w (make cluster-bin builds it)", err)
	}
	if e.kube, err = cluster.Start(ctx, cluster.Options{}); err != nil {
		return err
	}
	defer e.kube.Stop()
	stop, err := e.startDev()
	if err != nil {
		return err
	}
	defer stop()

	// One warm-up each: first-use costs (chart upload, discovery caches, image-less pods) are
	// not what a user waits for on the hundredth release.
	if _, err := e.troupe("warm", "warm-t", "--create-namespace"); err != nil {
		return err
	}
	if _, err := e.helm("warm", "warm-h", "--create-namespace"); err != nil {
		return err
	}

	if headline {
		if err := e.headline(ctx, n, many, par); err != nil {
			return err
		}
	}
	if chartsN > 0 {
		return e.fixtureCharts(chartsN)
	}
	return nil
}

// fixtureCharts installs each fixture chart k times per side, interleaved, each in a namespace
// of its own made and settled beforehand, and prints the p50s and their ratio.
func (e *env) fixtureCharts(k int) error {
	fixtures := filepath.Join(e.root, "..", "shared", "fixtures")
	charts := []struct {
		name, path string
		args       []string
	}{
		{"podinfo", "podinfo/charts/podinfo", nil},
		// argo-cd's CRDs are cluster-wide: one release owns them (installed once, untimed,
		// below), and every timed install of either side leaves them out. Its ClusterRoles
		// are named after the release: every install has a name of its own.
		{"argo-cd", "argo-cd/argo-cd", []string{"--set", "crds.install=false"}},
		{"postgresql", "postgresql/postgresql", nil},
		{"nats", "nats/helm/charts/nats", nil},
	}
	if err := e.namespaces("fc-argocd-crds"); err != nil {
		return err
	}
	if _, err := timed(exec.Command(filepath.Join(e.tmp, "troupe"), "release", "argo-cd", filepath.Join(fixtures, "argo-cd/argo-cd"),
		"-n", "fc-argocd-crds", "--wait", "--timeout", "5m", "--server", e.nats, "--creds", e.creds("cli"))); err != nil {
		return err
	}
	type result struct{ t, h []time.Duration }
	results := make([]result, len(charts))
	for c, ch := range charts {
		for i := range k {
			if err := e.namespaces(fmt.Sprintf("fc-%d-t-%d", c, i), fmt.Sprintf("fc-%d-h-%d", c, i)); err != nil {
				return err
			}
		}
		path := filepath.Join(fixtures, ch.path)
		for i := range k {
			d, err := timed(exec.Command(filepath.Join(e.tmp, "troupe"), append([]string{"release", fmt.Sprintf("%s-t%d", ch.name, i), path, "-n", fmt.Sprintf("fc-%d-t-%d", c, i),
				"--wait", "--timeout", "5m", "--server", e.nats, "--creds", e.creds("cli")}, ch.args...)...))
			if err != nil {
				return err
			}
			results[c].t = append(results[c].t, d)
			if d, err = timed(exec.Command(filepath.Join(e.bin, "helm"), append([]string{"upgrade", "--install", fmt.Sprintf("%s-h%d", ch.name, i), path, "-n", fmt.Sprintf("fc-%d-h-%d", c, i),
				"--wait", "--timeout", "5m", "--kubeconfig", e.kube.Kubeconfig}, ch.args...)...)); err != nil {
				return err
			}
			results[c].h = append(results[c].h, d)
		}
	}
	fmt.Printf("\nfixture charts, install with --wait (hooks run on both sides), p50 of %d per side\n\n", k)
	fmt.Println("| chart | troupe release --wait | helm upgrade --install --wait | troupe / helm |")
	fmt.Println("|---|---:|---:|---:|")
	worst := 0.0
	for c, ch := range charts {
		t, h := p50(results[c].t), p50(results[c].h)
		worst = max(worst, t.Seconds()/h.Seconds())
		fmt.Printf("| %s | %s | %s | %.2f× |\n", ch.name, t.Round(time.Millisecond), h.Round(time.Millisecond), t.Seconds()/h.Seconds())
	}
	fmt.Printf("\ntarget: ≤ 0.5× helm on every chart (worst %.2f×)\n", worst)
	return nil
}

// headline is the podinfo installs and upgrades, then the throughput run.
func (e *env) headline(ctx context.Context, n, many, par int) error {
	var ti, hi, tu, hu []time.Duration
	for i := range n {
		if err := e.namespaces(fmt.Sprintf("t-%d", i), fmt.Sprintf("h-%d", i)); err != nil {
			return err
		}
	}
	for i := range n {
		d, err := e.troupe("podinfo", fmt.Sprintf("t-%d", i))
		if err != nil {
			return err
		}
		ti = append(ti, d)
		if d, err = e.helm("podinfo", fmt.Sprintf("h-%d", i)); err != nil {
			return err
		}
		hi = append(hi, d)
	}
	for i := range n {
		d, err := e.troupe("podinfo", fmt.Sprintf("t-%d", i), "--set", "replicaCount=2")
		if err != nil {
			return err
		}
		tu = append(tu, d)
		if d, err = e.helm("podinfo", fmt.Sprintf("h-%d", i), "--set", "replicaCount=2"); err != nil {
			return err
		}
		hu = append(hu, d)
	}

	var nsT, nsH []string
	for i := range many {
		nsT, nsH = append(nsT, fmt.Sprintf("many-t-%d", i)), append(nsH, fmt.Sprintf("many-h-%d", i))
	}
	if err := e.namespaces(append(nsT, nsH...)...); err != nil {
		return err
	}
	tAll, err := e.troupeMany(ctx, nsT, par)
	if err != nil {
		return err
	}
	hAll, err := benchenv.Parallel(nsH, par, func(_ int, ns string) error { _, err := e.helm("podinfo", ns); return err })
	if err != nil {
		return err
	}

	fmt.Printf("troupe vs helm on one local cluster (kube-apiserver %s, kwok node), podinfo fixture chart, same run\n\n", "v1.37")
	fmt.Println("| what | troupe release --wait | helm upgrade --install --wait | troupe / helm |")
	fmt.Println("|---|---:|---:|---:|")
	row := func(what string, t, h time.Duration) {
		fmt.Printf("| %s | %s | %s | %.2f× |\n", what, t.Round(time.Millisecond), h.Round(time.Millisecond), t.Seconds()/h.Seconds())
	}
	row(fmt.Sprintf("install, p50 of %d", n), p50(ti), p50(hi))
	row(fmt.Sprintf("upgrade (replicaCount=2), p50 of %d", n), p50(tu), p50(hu))
	fmt.Printf("\n| throughput: %d releases, %d processes at once | time until all ready | releases/s | vs helm |\n", many, par)
	fmt.Println("|---|---:|---:|---:|")
	fmt.Printf("| troupe (requested at once, services deploy) | %s | %.1f | %.2f× |\n", tAll.Round(time.Millisecond), float64(many)/tAll.Seconds(), hAll.Seconds()/tAll.Seconds())
	fmt.Printf("| helm (one process per release) | %s | %.1f | 1.00× |\n", hAll.Round(time.Millisecond), float64(many)/hAll.Seconds())
	fmt.Printf("\ntargets: p50 ≤ 0.5× helm (install %.2f×, upgrade %.2f×); throughput ≥ 3× helm (%.2f×)\n",
		p50(ti).Seconds()/p50(hi).Seconds(), p50(tu).Seconds()/p50(hu).Seconds(), hAll.Seconds()/tAll.Seconds())
	return nil
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// namespaces creates the namespaces and waits until the controllers have settled them: neither
// side's clock should run while the cluster sets up namespaces the other side will use.
func (e *env) namespaces(names ...string) error {
	return benchenv.Settle(context.Background(), e.kube.Client, names...)
}

// creds is the path of identity's credentials, which `troupe dev` writes under its store.
func (e *env) creds(identity string) string {
	return filepath.Join(e.tmp, "store", "creds", identity+".creds")
}

var natsURL = regexp.MustCompile(`NATS JetStream at (nats://[0-9.:]+)`)

// startDev runs `troupe dev` against the cluster, as a process.
func (e *env) startDev() (func(), error) {
	cmd := exec.Command(filepath.Join(e.tmp, "troupe"), "dev", "--kubeconfig", e.kube.Kubeconfig, "--nats-listen", "127.0.0.1:-1",
		"--http-listen", "127.0.0.1:0", "--store-dir", filepath.Join(e.tmp, "store"), "--log-level", "warn")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if m := natsURL.FindStringSubmatch(lines.Text()); m != nil {
			e.nats = m[1]
		}
		if strings.Contains(lines.Text(), "troupe dev: ready") {
			go func() {
				for lines.Scan() {
				}
			}()
			return func() { _ = cmd.Process.Signal(syscall.SIGINT); _ = cmd.Wait() }, nil
		}
	}
	return nil, fmt.Errorf("troupe dev exited before it was ready")
}

func timed(cmd *exec.Cmd) (time.Duration, error) {
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return d, nil
}

func (e *env) troupe(name, ns string, args ...string) (time.Duration, error) {
	return timed(exec.Command(filepath.Join(e.tmp, "troupe"), append([]string{"release", name, e.chart, "-n", ns, "--wait", "--server", e.nats, "--creds", e.creds("cli")}, args...)...))
}

func (e *env) helm(name, ns string, args ...string) (time.Duration, error) {
	return timed(exec.Command(filepath.Join(e.bin, "helm"), append([]string{"upgrade", "--install", name, e.chart, "-n", ns, "--wait",
		"--kubeconfig", e.kube.Kubeconfig, "--timeout", "5m"}, args...)...))
}

// troupeMany requests one release per namespace, par CLI processes at once, and returns the time
// until the stream holds release.ready for all of them.
func (e *env) troupeMany(ctx context.Context, namespaces []string, par int) (time.Duration, error) {
	viewer := events.ConnOptions{Server: e.nats, CredsFile: e.creds("viewer")} // its replies on the viewer's own inbox prefix
	nc, err := viewer.Connect("troupe-bench")
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	filter, _ := events.Names{}.TypeFilter(events.TypeReady)
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for _, ns := range namespaces {
		want[ns+"/podinfo"] = true
	}
	ready := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		r, _, err := events.Names{}.ParseSubject(m.Subject())
		if err == nil && want[r.String()] {
			delete(want, r.String())
			if len(want) == 0 {
				close(ready)
			}
		}
	})
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	start := time.Now()
	requested, err := benchenv.Parallel(namespaces, par, func(_ int, ns string) error {
		_, err := timed(exec.Command(filepath.Join(e.tmp, "troupe"), "release", "podinfo", e.chart, "-n", ns, "--server", e.nats, "--creds", e.creds("cli")))
		return err
	})
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(os.Stderr, "troupe: %d releases requested by the CLI in %s\n", len(namespaces), requested.Round(time.Millisecond))
	select {
	case <-ready:
		return time.Since(start), nil
	case <-time.After(10 * time.Minute):
		return 0, fmt.Errorf("not every release was ready after 10 minutes")
	}
}
