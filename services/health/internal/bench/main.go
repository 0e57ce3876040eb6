// Command bench measures the health watcher, run as its own process (cmd/health) against a local
// cluster built from source (`make cluster-bin`) and an embedded NATS server:
//
//   - latency: R releases (a ConfigMap and a one-replica Deployment each) applied at once; for
//     each, the time from its last object becoming Current — seen by this process's own watch of
//     the same API server, judged by kstatus — to its release.ready arriving from the stream;
//     p50 and p99.
//   - memory: N ready releases (ConfigMap, Secret, ServiceAccount, Service, Deployment each)
//     followed at once; the watcher's resident memory (VmRSS) and its peak (VmHWM).
//
// Run by `make bench`.
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
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/embedded"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/test/cluster"
)

func main() {
	releases := flag.Int("releases", 100, "releases of the latency measurement")
	watched := flag.Int("watched", 1000, "ready releases of the memory measurement")
	flag.Parse()
	if err := run(context.Background(), *releases, *watched); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, releases, watched int) error {
	kube, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return fmt.Errorf("%w (build the cluster binaries with `make cluster-bin`)", err)
	}
	defer kube.Stop()
	cfg := rest.CopyConfig(kube.Config)
	cfg.QPS, cfg.Burst = -1, 0
	dir, err := os.MkdirTemp("", "troupe-health-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := kube.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	dev, err := embedded.StartDev(ctx, dir)
	if err != nil {
		return err
	}
	defer dev.Close()
	srv, js := dev.Server, dev.JS

	// The watcher, built and run as it runs anywhere.
	bin := filepath.Join(dir, "health")
	build := exec.Command("go", "build", "-o", bin, "./services/health/cmd/health")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("build cmd/health: %w", err)
	}
	watcher := exec.CommandContext(ctx, bin, "--server", srv.ClientURL(), "--kubeconfig", kubeconfig, "--http-listen", "127.0.0.1:0", "--log-level", "warn")
	watcher.Stderr = os.Stderr
	if err := watcher.Start(); err != nil {
		return err
	}
	defer func() { _ = watcher.Process.Kill(); _ = watcher.Wait() }()
	time.Sleep(2 * time.Second) // its consumer exists before the first release.applied

	lib, err := apply.New(cfg, apply.Options{Concurrency: 64})
	if err != nil {
		return err
	}
	b := &bench{ctx: ctx, js: js, lib: lib, kube: kube, pub: events.NewPublisher(js, events.Names{})}

	// Latency.
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	currentAt := b.watchDeployments(dyn)
	ns, err := b.namespaces("latency", 1)
	if err != nil {
		return err
	}
	var rels []events.Release
	for i := range releases {
		rels = append(rels, events.Release{Namespace: ns[0], Name: fmt.Sprintf("app-%d", i)})
	}
	readyAt, err := b.run(rels, func(rel events.Release) []map[string]any {
		return []map[string]any{configMap(rel), deployment(rel)}
	})
	if err != nil {
		return err
	}
	var lat []time.Duration
	for _, rel := range rels {
		c, ok := currentAt(rel.Namespace, rel.Name)
		for wait := time.Now().Add(10 * time.Second); !ok && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond) // this process's own watch may be behind the stream
			c, ok = currentAt(rel.Namespace, rel.Name)
		}
		if !ok {
			return fmt.Errorf("%s: ready, but this process never saw its Deployment Current", rel)
		}
		lat = append(lat, readyAt[rel].Sub(c))
	}
	slices.Sort(lat)

	// Memory.
	nss, err := b.namespaces("watched", 10)
	if err != nil {
		return err
	}
	rels = nil
	for i := range watched {
		rels = append(rels, events.Release{Namespace: nss[i%len(nss)], Name: fmt.Sprintf("app-%d", i)})
	}
	start := time.Now()
	if _, err := b.run(rels, func(rel events.Release) []map[string]any {
		return []map[string]any{configMap(rel), secret(rel), serviceAccount(rel), service(rel), deployment(rel)}
	}); err != nil {
		return err
	}
	took := time.Since(start)
	time.Sleep(5 * time.Second) // steady state: ready, watching
	rss, hwm := memory(watcher.Process.Pid)

	fmt.Printf("Health watcher (cmd/health, its own process) on a local cluster and embedded NATS\n\n")
	fmt.Println("| measure | result | target |")
	fmt.Println("|---|---:|---:|")
	fmt.Printf("| last object Current → release.ready on the stream, p50 (%d releases at once) | %s | < 50 ms |\n", releases, pct(lat, 50))
	fmt.Printf("| the same, p99 | %s | |\n", pct(lat, 99))
	fmt.Printf("| the same, max | %s | |\n", lat[len(lat)-1].Round(100*time.Microsecond))
	fmt.Printf("| resident memory following %d ready releases (%d objects) | %.0f MiB | < 150 MiB |\n", watched, watched*5, rss)
	fmt.Printf("| peak resident memory | %.0f MiB | |\n", hwm)
	fmt.Printf("\n(%d releases applied and ready in %s)\n", watched, took.Round(time.Second))
	verdict := "met"
	if pct(lat, 50) >= 50*time.Millisecond || rss >= 150 {
		verdict = "NOT met"
	}
	fmt.Printf("targets: %s\n", verdict)
	return nil
}

type bench struct {
	ctx  context.Context
	js   jetstream.JetStream
	lib  *apply.Applier
	kube *cluster.Cluster
	pub  *events.Publisher
}

// run applies every release (32 at once) with the applier library, publishes each one's
// release.requested and release.applied as the services would, and returns when each
// release.ready arrived.
func (b *bench) run(rels []events.Release, objects func(events.Release) []map[string]any) (map[events.Release]time.Time, error) {
	sub, err := b.js.OrderedConsumer(b.ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"troupe.release.*.*.ready", "troupe.release.*.*.failed"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, err
	}
	msgs, err := sub.Messages()
	if err != nil {
		return nil, err
	}
	defer msgs.Stop()
	readyAt := map[events.Release]time.Time{}
	done := make(chan error, 1)
	go func() {
		for len(readyAt) < len(rels) {
			msg, err := msgs.Next()
			if err != nil {
				done <- err
				return
			}
			at := time.Now()
			e, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
			if err != nil {
				done <- err
				return
			}
			rel, _ := events.ReleaseOf(e)
			if e.Type() == events.TypeFailed {
				done <- fmt.Errorf("%s failed: %s", rel, e.Data())
				return
			}
			readyAt[rel] = at
		}
		done <- nil
	}()
	work := make(chan events.Release)
	errs := make(chan error, len(rels))
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for rel := range work {
				errs <- b.applyOne(rel, objects(rel))
			}
		})
	}
	for _, rel := range rels {
		work <- rel
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return nil, err
		}
	}
	select {
	case err := <-done:
		return readyAt, err
	case <-time.After(5 * time.Minute):
		return nil, fmt.Errorf("%d of %d releases ready after 5m", len(readyAt), len(rels))
	}
}

func (b *bench) applyOne(rel events.Release, objs []map[string]any) error {
	req, err := events.NewEvent("troupe/bench", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}})
	if err != nil {
		return err
	}
	events.WithRevision(&req, 1)
	res, err := b.lib.Apply(b.ctx, apply.Request{Release: rel, Revision: 1, Objects: objs})
	if err != nil {
		return err
	}
	applied, err := events.Derive(req, "troupe/applier", events.TypeApplied, events.Applied{
		Bundle: "sha256:" + strings.Repeat("0", 64), Inventory: res.Inventory})
	if err != nil {
		return err
	}
	if _, err := b.pub.Publish(b.ctx, req); err != nil {
		return err
	}
	_, err = b.pub.Publish(b.ctx, applied)
	return err
}

// watchDeployments watches every Deployment and returns when each was first seen Current.
func (b *bench) watchDeployments(dyn dynamic.Interface) func(ns, name string) (time.Time, bool) {
	var mu sync.Mutex
	seen := map[string]time.Time{}
	inf := dynamicinformer.NewFilteredDynamicInformer(dyn, schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"},
		"", 0, cache.Indexers{}, nil).Informer()
	check := func(obj any) {
		at := time.Now()
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		if r, err := status.Compute(u); err == nil && r.Status == status.CurrentStatus {
			mu.Lock()
			k := u.GetNamespace() + "/" + u.GetLabels()["troupe.dev/release"]
			if _, ok := seen[k]; !ok {
				seen[k] = at
			}
			mu.Unlock()
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: check, UpdateFunc: func(_, o any) { check(o) }})
	go inf.Run(b.ctx.Done())
	cache.WaitForCacheSync(b.ctx.Done(), inf.HasSynced)
	return func(ns, name string) (time.Time, bool) {
		mu.Lock()
		defer mu.Unlock()
		t, ok := seen[ns+"/"+name]
		return t, ok
	}
}

func (b *bench) namespaces(prefix string, n int) ([]string, error) {
	var out []string
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := b.kube.Client.CoreV1().Namespaces().Create(b.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

func meta(rel events.Release) map[string]any {
	return map[string]any{"name": rel.Name, "namespace": rel.Namespace, "labels": map[string]any{"app": rel.Name}}
}

func configMap(rel events.Release) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(rel), "data": map[string]any{"key": "value"}}
}

func secret(rel events.Release) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta(rel), "stringData": map[string]any{"password": "x"}}
}

func serviceAccount(rel events.Release) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(rel)}
}

func service(rel events.Release) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta(rel),
		"spec": map[string]any{"selector": map[string]any{"app": rel.Name}, "ports": []any{map[string]any{"port": int64(80)}}}}
}

func deployment(rel events.Release) map[string]any {
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(rel), "spec": map[string]any{
		"replicas": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": rel.Name}},
		"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": rel.Name}},
			"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx"}}}}}}
}

// memory reads a process's resident memory and its peak, in MiB.
func memory(pid int) (rss, hwm float64) {
	raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

func pct(ds []time.Duration, p int) time.Duration {
	i := (len(ds)*p + 99) / 100
	return ds[min(max(i-1, 0), len(ds)-1)].Round(100 * time.Microsecond)
}
