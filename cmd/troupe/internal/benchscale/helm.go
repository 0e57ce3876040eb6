package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/troupe-dev/troupe/cmd/troupe/internal/benchenv"
)

// helm runs `helm upgrade --install --wait` for every release, par processes at once, then the
// upgrade, then `helm rollback --wait` to revision 1; each release's latency is its process's.
func (b *bench) helm(ctx context.Context, dir string, n int) (*result, error) {
	names := namespaces(n)
	kube, err := b.startCluster(ctx, dir, append(names, "scale-warm"))
	if err != nil {
		return nil, err
	}
	defer kube.Stop()
	helm := func(ns string, args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(b.clusterBin, "helm"), append(append([]string{}, args...),
			"-n", ns, "--wait", "--timeout", "15m", "--kubeconfig", kube.Kubeconfig)...)
	}
	var warm clis
	if err := warm.run(helm("scale-warm", "upgrade", "--install", "podinfo", b.chart)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var cli clis
	ms, err := b.measure(ctx, kube, "helm", n, clusterProcs(kube), clusterOrder)
	if err != nil {
		return nil, err
	}
	r := &result{side: "helm", n: n}
	for _, p := range phases {
		args := map[string][]string{
			"install":  {"upgrade", "--install", "podinfo", b.chart},
			"upgrade":  {"upgrade", "--install", "podinfo", b.chart, "--set", upgradeSet},
			"rollback": {"rollback", "podinfo", "1"},
		}[p]
		var mu sync.Mutex
		ph := phase{name: p}
		wall, err := benchenv.Parallel(names, b.par, func(_ int, ns string) error {
			start := time.Now()
			err := cli.run(helm(ns, args...))
			mu.Lock()
			ph.latency = append(ph.latency, time.Since(start))
			mu.Unlock()
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		ph.wall = wall
		r.phases = append(r.phases, ph)
	}
	if err := ms.done(ctx, r); err != nil {
		return nil, err
	}
	r.cli = cli.usage("helm (all processes)")
	return r, nil
}
