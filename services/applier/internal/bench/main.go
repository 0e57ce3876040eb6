// Command bench measures the applier against the physical limit of the API server: the same
// objects — R releases of 10 objects each (3 ConfigMaps, a Secret, a ServiceAccount, a Service,
// a Role, a RoleBinding, a PodDisruptionBudget and a one-replica Deployment) — applied through the
// applier service (release.rendered in, release.applied out: lease, server-side dry run of every
// object, server-side apply, inventory) and applied directly with client-go's dynamic client
// (one server-side apply per object, nothing else), with the same number of requests in flight,
// on the same local cluster (built from source, `make cluster-bin`) and embedded NATS, in the
// same run. Rounds run each side in turn into fresh namespaces, the order rotating, each side
// starting on a settled cluster (controllers done, the API server quiet), the round's namespaces
// deleted at its end; the table shows medians. A third side applies with the apply package alone
// (no events, lease or inventory), to show what validating first costs on its own.
// Run by `make bench`.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/embedded"
	"github.com/troupe-dev/troupe/services/applier"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/test/cluster"
)

type config struct {
	releases, rounds, releasesAtOnce, inflight int
	cpuprofile                                 string
	durable                                    bool
}

func main() {
	var c config
	flag.IntVar(&c.releases, "releases", 100, "releases per round, 10 objects each")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds per side")
	flag.IntVar(&c.releasesAtOnce, "concurrency", 16, "releases the applier works on at once")
	flag.IntVar(&c.inflight, "kube-requests", 64, "API requests in flight, on both sides")
	flag.BoolVar(&c.durable, "durable", true, "etcd syncs its writes to disk, as in production (the tests' cluster does not)")
	cpuprofile := flag.String("cpuprofile", "", "write CPU profiles of this process, one per side and round, to <this>.<side>.<round>")
	flag.Parse()
	c.cpuprofile = *cpuprofile
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	kube, err := cluster.Start(ctx, cluster.Options{Durable: c.durable})
	if err != nil {
		return fmt.Errorf("%w (build the cluster binaries with `make cluster-bin`)", err)
	}
	defer kube.Stop()
	cfg := rest.CopyConfig(kube.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit on either side: the API server is the limit

	dev, err := embedded.StartDev(ctx, os.Getenv("BENCH_NATS_DIR"))
	if err != nil {
		return err
	}
	defer dev.Close()
	js := dev.JS
	o := applier.Options{Concurrency: c.releasesAtOnce, Apply: apply.Options{Concurrency: c.inflight}}
	if path := os.Getenv("BENCH_LOG"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		log := zerolog.New(f).With().Timestamp().Logger()
		o.Logger = &log
	}
	svc, err := applier.New(ctx, js, cfg, o)
	if err != nil {
		return err
	}
	svcCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = svc.Start(svcCtx) }()
	<-svc.Ready()
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}

	lib, err := apply.New(cfg, apply.Options{Concurrency: c.inflight})
	if err != nil {
		return err
	}
	type side struct {
		name  string
		run   func(namespaces []string) (time.Duration, error)
		times []time.Duration
	}
	sides := []*side{
		{name: "direct", run: func(ns []string) (time.Duration, error) { return applyDirect(ctx, dyn, ns, c.inflight) }},
		{name: "library", run: func(ns []string) (time.Duration, error) { return applyLibrary(ctx, lib, ns, c.releasesAtOnce) }},
		{name: "applier", run: func(ns []string) (time.Duration, error) { return applyThrough(ctx, js, ns) }},
	}
	for round := range c.rounds {
		// Each round starts with another side, and ends with its namespaces deleted: no side
		// always comes first, or always runs on a cluster grown by the others.
		var made []string
		for i := range sides {
			sd := sides[(round+i)%len(sides)]
			ns, err := namespaces(ctx, kube, fmt.Sprintf("%s-%d", sd.name, round), c.releases)
			if err != nil {
				return err
			}
			made = append(made, ns...)
			before := requestCounts(ctx, kube)
			stopProfile, err := profile(c.cpuprofile, sd.name, round)
			if err != nil {
				return err
			}
			cpuBefore := cpuTime()
			d, err := sd.run(ns)
			cpu := cpuTime() - cpuBefore
			stopProfile()
			if err != nil {
				return fmt.Errorf("%s: %w", sd.name, err)
			}
			if os.Getenv("BENCH_REQUESTS") != "" {
				fmt.Fprintf(os.Stderr, "  %s: this process used %s of CPU\n", sd.name, cpu.Round(time.Millisecond))
				for k, v := range requestCounts(ctx, kube) {
					if n := v - before[k]; n >= 10 {
						fmt.Fprintf(os.Stderr, "  %s: %6.0f %s\n", sd.name, n, k)
					}
				}
			}
			sd.times = append(sd.times, d)
			if err := settle(ctx, kube); err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "round %d: %s %s\n", round+1, sd.name, d.Round(time.Millisecond))
		}
		if err := deleteNamespaces(ctx, kube, made); err != nil {
			return err
		}
		if err := settle(ctx, kube); err != nil {
			return err
		}
	}
	direct, library, through := sides[0].times, sides[1].times, sides[2].times

	objects := float64(c.releases * 10)
	dm, lm, am := median(direct), median(library), median(through)
	fmt.Printf("Applying %d releases × 10 objects: through the applier vs client-go server-side apply directly, same run,\n", c.releases)
	fmt.Printf("%d rounds, each side in turn (the order rotating), on a settled cluster; medians; %d requests in flight on every side\n\n", c.rounds, c.inflight)
	fmt.Println("| path | time | objects/s | vs direct |")
	fmt.Println("|---|---:|---:|---:|")
	fmt.Printf("| client-go SSA directly (1 request per object) | %s | %.0f | 1.00× |\n", dm.Round(time.Millisecond), objects/dm.Seconds())
	fmt.Printf("| troupe apply library alone (dry run + apply per object, the largest without a dry run) | %s | %.0f | %.2f× |\n", lm.Round(time.Millisecond), objects/lm.Seconds(), dm.Seconds()/lm.Seconds())
	fmt.Printf("| troupe applier service (the same, plus events, lease, inventory) | %s | %.0f | %.2f× |\n", am.Round(time.Millisecond), objects/am.Seconds(), dm.Seconds()/am.Seconds())
	verdict := "NOT met"
	if dm.Seconds()/am.Seconds() >= 0.8 {
		verdict = "met"
	}
	fmt.Printf("\ntarget: applier ≥ 0.8× direct — %s\n", verdict)
	return nil
}

// settle waits until the controllers are done with what a round applied — every Deployment
// available, then the API server quiet (under 10 requests a second from anyone) — so that no
// round pays for the one before it.
func settle(ctx context.Context, kube *cluster.Cluster) error {
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		list, err := kube.Client.AppsV1().Deployments("").List(ctx, metav1.ListOptions{LabelSelector: "app=app"})
		if err != nil {
			return err
		}
		available := true
		for _, d := range list.Items {
			if d.Status.AvailableReplicas < 1 || d.Status.ObservedGeneration < d.Generation {
				available = false
				break
			}
		}
		if available {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	total := func() float64 {
		var n float64
		for _, v := range requestCounts(ctx, kube) {
			n += v
		}
		return n
	}
	last := total()
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		now := total()
		if now-last < 10 {
			return nil
		}
		last = now
	}
	return fmt.Errorf("the cluster did not settle in 2m")
}

// deleteNamespaces deletes namespaces and waits until they are gone.
func deleteNamespaces(ctx context.Context, kube *cluster.Cluster, names []string) error {
	for _, n := range names {
		if err := kube.Client.CoreV1().Namespaces().Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	for _, n := range names {
		for {
			_, err := kube.Client.CoreV1().Namespaces().Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("namespace %s not deleted in 5m", n)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// namespaces creates n namespaces for one round.
func namespaces(ctx context.Context, kube *cluster.Cluster, prefix string, n int) ([]string, error) {
	var out []string
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

// objects are one release's 10 objects.
func objects(ns string) []map[string]any {
	name := "app"
	meta := func(n string) map[string]any {
		return map[string]any{"name": n, "namespace": ns, "labels": map[string]any{"app": name}}
	}
	var out []map[string]any
	for i := range 3 {
		out = append(out, map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(fmt.Sprintf("%s-%d", name, i)), "data": map[string]any{"key": fmt.Sprint(i)}})
	}
	return append(out,
		map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta(name), "stringData": map[string]any{"password": "x"}},
		map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)},
		map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta(name), "spec": map[string]any{"selector": map[string]any{"app": name}, "ports": []any{map[string]any{"port": int64(80)}}}},
		map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(name), "rules": []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"}, "verbs": []any{"get"}}}},
		map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(name), "roleRef": map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": []any{map[string]any{"kind": "ServiceAccount", "name": name, "namespace": ns}}},
		map[string]any{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name), "spec": map[string]any{"maxUnavailable": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": name}}}},
		map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name), "spec": map[string]any{"replicas": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}}, "spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "nginx"}}}}}},
	)
}

var resources = map[string]schema.GroupVersionResource{
	"ConfigMap": {Version: "v1", Resource: "configmaps"}, "Secret": {Version: "v1", Resource: "secrets"},
	"ServiceAccount": {Version: "v1", Resource: "serviceaccounts"}, "Service": {Version: "v1", Resource: "services"},
	"Role":                {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
	"RoleBinding":         {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"PodDisruptionBudget": {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"},
	"Deployment":          {Group: "apps", Version: "v1", Resource: "deployments"},
}

// applyDirect applies every release's objects with one server-side apply each, workers at once.
func applyDirect(ctx context.Context, dyn dynamic.Interface, namespaces []string, workers int) (time.Duration, error) {
	work := make(chan map[string]any)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for m := range work {
				u := &unstructured.Unstructured{Object: m}
				_, err := dyn.Resource(resources[u.GetKind()]).Namespace(u.GetNamespace()).Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "bench", Force: true})
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, ns := range namespaces {
		for _, m := range objects(ns) {
			work <- m
		}
	}
	close(work)
	wg.Wait()
	return time.Since(start), first
}

// applyLibrary applies every release with the apply package alone, releases at once.
func applyLibrary(ctx context.Context, lib *apply.Applier, namespaces []string, releases int) (time.Duration, error) {
	work := make(chan string)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	start := time.Now()
	for range releases {
		wg.Go(func() {
			for ns := range work {
				_, err := lib.Apply(ctx, apply.Request{Release: events.Release{Namespace: ns, Name: "app"}, Revision: 1, Objects: objects(ns)})
				if err != nil {
					mu.Lock()
					first = cmp.Or(first, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, ns := range namespaces {
		work <- ns
	}
	close(work)
	wg.Wait()
	return time.Since(start), first
}

// applyThrough publishes a release.requested per namespace (a release named app there), numbers
// it as the renderer would, then — timed — publishes the release.rendered of each and waits for
// every release.applied.
func applyThrough(ctx context.Context, js jetstream.JetStream, namespaces []string) (time.Duration, error) {
	store, err := events.OpenObjects(ctx, js, events.BucketBundles)
	if err != nil {
		return 0, err
	}
	pub := events.NewPublisher(js, events.Names{})
	type ready struct{ request, rendered event.Event }
	var all []ready
	for _, ns := range namespaces {
		rel := events.Release{Namespace: ns, Name: "app"}
		data, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String(), Objects: objects(ns)})
		if err != nil {
			return 0, err
		}
		digest, size, err := store.Put(ctx, bytes.NewReader(data))
		if err != nil {
			return 0, err
		}
		req, err := events.NewEvent("troupe/bench", events.TypeRequested, rel, events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}})
		if err != nil {
			return 0, err
		}
		rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: digest, Size: size})
		if err != nil {
			return 0, err
		}
		events.WithRevision(&rendered, 1)
		all = append(all, ready{request: req, rendered: rendered})
	}
	sub, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"troupe.release.*.*.applied", "troupe.release.*.*.failed"}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return 0, err
	}
	// The requests, numbered as the renderer numbers them before it renders: not the applier's
	// work, so not timed.
	revisions, err := events.NewRevisions(ctx, js, events.Names{})
	if err != nil {
		return 0, err
	}
	for _, r := range all {
		ack, err := pub.Publish(ctx, r.request)
		if err != nil {
			return 0, err
		}
		rel, _ := events.ReleaseOf(r.request)
		if _, err := revisions.Of(ctx, rel, ack.Sequence); err != nil {
			return 0, err
		}
	}
	// One long pull, not Next: an ordered consumer's Next re-creates the consumer for every
	// message, work the server would do on the applier's time.
	msgs, err := sub.Messages()
	if err != nil {
		return 0, err
	}
	defer msgs.Stop()
	waited := time.AfterFunc(2*time.Minute, msgs.Stop)
	defer waited.Stop()
	// Encoded before the clock starts: in a deployment the renderer, not the applier's machine,
	// does that.
	var rendered []*nats.Msg
	for _, r := range all {
		m, err := events.Names{}.Message(r.rendered)
		if err != nil {
			return 0, err
		}
		rendered = append(rendered, m)
	}
	var busy time.Duration
	var first time.Time
	start := time.Now()
	for _, m := range rendered {
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return 0, err
		}
	}
	for done := 0; done < len(all); {
		msg, err := msgs.Next()
		if err != nil {
			return 0, fmt.Errorf("waiting for release.applied (%d of %d): %w", done, len(all), err)
		}
		if strings.HasSuffix(msg.Subject(), ".failed") {
			return 0, fmt.Errorf("%s: %s", msg.Subject(), msg.Data())
		}
		done++
		if first.IsZero() {
			first = time.Now()
		}
		if os.Getenv("BENCH_REQUESTS") == "" {
			continue // the subject says applied: decoding is for the statistics below
		}
		e, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			return 0, err
		}
		if a, err := events.Data[events.Applied](e); err == nil {
			busy += time.Duration(a.ApplyTime)
		}
	}
	if os.Getenv("BENCH_REQUESTS") != "" {
		fmt.Fprintf(os.Stderr, "  applier: %s to the first release.applied; releases applying at once on average: %.1f\n",
			first.Sub(start).Round(time.Millisecond), busy.Seconds()/time.Since(start).Seconds())
	}
	return time.Since(start), nil
}

// profile starts a CPU profile of this process into <path>.<side>.<round> when path is set.
func profile(path, side string, round int) (stop func(), _ error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(fmt.Sprintf("%s.%s.%d", path, side, round+1))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// requestCounts reads the API server's request counters, by verb, resource and dry run.
func requestCounts(ctx context.Context, kube *cluster.Cluster) map[string]float64 {
	raw, err := kube.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	out := map[string]float64{}
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		i := strings.LastIndex(line, " ")
		var v float64
		fmt.Sscan(line[i+1:], &v)
		labels := line[len("apiserver_request_total{"):i]
		var keep []string
		for _, l := range strings.Split(strings.TrimSuffix(labels, "}"), ",") {
			if strings.HasPrefix(l, "verb=") || strings.HasPrefix(l, "resource=") || strings.HasPrefix(l, "dry_run=") {
				keep = append(keep, l)
			}
		}
		out[strings.Join(keep, ",")] += v
	}
	return out
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
