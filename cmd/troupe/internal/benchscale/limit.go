package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"

	"github.com/troupe-dev/troupe/cmd/troupe/internal/benchenv"
	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// limit applies the objects troupe's renderer makes for each release with client-go's
// server-side apply, par releases at once, and waits for each release's objects with kstatus:
// the work any deployment system asks of the cluster, and nothing else.
func (b *bench) limit(ctx context.Context, dir string, n int) (*result, error) {
	names := namespaces(n)
	// Rendered before any clock, in process, by troupe's renderer: the same objects troupe
	// applies (revision 1's again for the rollback).
	install, err := b.render(ctx, names, nil)
	if err != nil {
		return nil, err
	}
	upgrade, err := b.render(ctx, names, []string{upgradeSet})
	if err != nil {
		return nil, err
	}
	warm, err := b.render(ctx, []string{"scale-warm"}, nil)
	if err != nil {
		return nil, err
	}
	kube, err := b.startCluster(ctx, dir, append(names, "scale-warm"))
	if err != nil {
		return nil, err
	}
	defer kube.Stop()
	cfg := rest.CopyConfig(kube.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit: the cluster's own is measured
	l, err := newLimiter(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer l.stop()
	// One release first, untimed, as the other sides warm up: discovery, the informers' sync.
	if _, err := l.phase(ctx, warm, 1); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	ms, err := b.measure(ctx, kube, "limit", n, clusterProcs(kube), clusterOrder)
	if err != nil {
		return nil, err
	}
	r := &result{side: "limit", n: n}
	for _, p := range []struct {
		name    string
		objects [][]map[string]any
	}{{"install", install}, {"upgrade", upgrade}, {"rollback", install}} {
		if !slices.Contains(phases, p.name) {
			continue
		}
		ph, err := l.phase(ctx, p.objects, b.par)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.name, err)
		}
		ph.name = p.name
		r.phases = append(r.phases, ph)
	}
	if err := ms.done(ctx, r); err != nil {
		return nil, err
	}
	return r, nil
}

// render renders the podinfo chart for a release "podinfo" in each namespace, with set.
func (b *bench) render(ctx context.Context, names []string, set []string) ([][]map[string]any, error) {
	rd, err := render.New(render.Options{SourceRoots: []string{filepath.Dir(b.chart)}})
	if err != nil {
		return nil, err
	}
	out := make([][]map[string]any, len(names))
	for i, ns := range names {
		o, err := rd.Render(ctx, render.Input{Release: events.Release{Namespace: ns, Name: "podinfo"}, Revision: 1,
			Request: events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: b.chart}}, Set: set}})
		if err != nil {
			return nil, err
		}
		var bundle events.Bundle
		if err := json.Unmarshal(o.Bundle, &bundle); err != nil {
			return nil, err
		}
		out[i] = bundle.Objects
	}
	return out, nil
}

// limiter applies and watches.
type limiter struct {
	dyn    dynamic.Interface
	mapper *restmapper.DeferredDiscoveryRESTMapper
	inf    dynamicinformer.DynamicSharedInformerFactory
	ctx    context.Context // the informers' life
	cancel context.CancelFunc

	mu       sync.Mutex
	informed map[schema.GroupVersionResource]bool
	seen     map[string]*unstructured.Unstructured // the latest object the informers saw, by key
	waits    map[string]*wait                      // by object key
}

// wait is one object a release waits for: Current at generation gen or later.
type wait struct {
	gen int64
	rel *releaseWait
}

type releaseWait struct {
	left  int
	start time.Time
	done  chan time.Time
}

func newLimiter(ctx context.Context, cfg *rest.Config) (*limiter, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &limiter{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc)),
		inf: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0), ctx: ctx, cancel: cancel,
		informed: map[schema.GroupVersionResource]bool{}, seen: map[string]*unstructured.Unstructured{}, waits: map[string]*wait{}}
	return l, nil
}

func (l *limiter) stop() { l.cancel(); l.inf.Shutdown() }

func key(gvr schema.GroupVersionResource, ns, name string) string {
	return gvr.String() + "|" + ns + "/" + name
}

// inform starts an informer of every object of gvr, once.
func (l *limiter) inform(ctx context.Context, gvr schema.GroupVersionResource) error {
	l.mu.Lock()
	if l.informed[gvr] {
		l.mu.Unlock()
		return nil
	}
	l.informed[gvr] = true
	l.mu.Unlock()
	in := l.inf.ForResource(gvr).Informer()
	on := func(obj any) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		l.observe(key(gvr, u.GetNamespace(), u.GetName()), u)
	}
	if _, err := in.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: on, UpdateFunc: func(_, o any) { on(o) }}); err != nil {
		return err
	}
	l.inf.Start(l.ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), in.HasSynced) {
		return fmt.Errorf("informer of %s did not sync", gvr)
	}
	return nil
}

// observe keeps u as the latest of k and ends the wait for it when it is Current.
func (l *limiter) observe(k string, u *unstructured.Unstructured) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[k] = u
	l.check(k)
}

// check ends k's wait if the latest object seen is Current at the generation applied. Under mu.
func (l *limiter) check(k string) {
	w, ok := l.waits[k]
	u := l.seen[k]
	if !ok || u == nil || u.GetGeneration() < w.gen {
		return
	}
	if res, err := status.Compute(u); err != nil || res.Status != status.CurrentStatus {
		return
	}
	delete(l.waits, k)
	if w.rel.left--; w.rel.left == 0 {
		w.rel.done <- time.Now()
	}
}

// phase applies every release's objects, par releases at once, and returns the wall time until
// all are Current and each release's time from its first apply to its last object Current.
func (l *limiter) phase(ctx context.Context, releases [][]map[string]any, par int) (phase, error) {
	idx := make([]string, len(releases))
	rels := make([]*releaseWait, len(releases))
	for i := range releases {
		rels[i] = &releaseWait{left: len(releases[i]), done: make(chan time.Time, 1)}
	}
	start := time.Now()
	_, err := benchenv.Parallel(idx, par, func(i int, _ string) error {
		rw := rels[i]
		rw.start = time.Now()
		for _, obj := range releases[i] {
			if err := l.apply(ctx, obj, rw); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return phase{}, err
	}
	ph := phase{}
	deadline := time.After(15 * time.Minute)
	for i, rw := range rels {
		select {
		case at := <-rw.done:
			ph.latency = append(ph.latency, at.Sub(rw.start))
		case <-deadline:
			return phase{}, fmt.Errorf("release %d of %d not Current after 15 minutes", i, len(rels))
		}
	}
	ph.wall = time.Since(start)
	return ph, nil
}

// apply server-side applies obj and waits for it, through the informer of its kind.
func (l *limiter) apply(ctx context.Context, obj map[string]any, rw *releaseWait) error {
	u := &unstructured.Unstructured{Object: obj}
	gvk := u.GroupVersionKind()
	mapping, err := l.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	if err := l.inform(ctx, mapping.Resource); err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = l.dyn.Resource(mapping.Resource)
	if ns := u.GetNamespace(); ns != "" {
		ri = l.dyn.Resource(mapping.Resource).Namespace(ns)
	}
	got, err := ri.Apply(ctx, u.GetName(), u.DeepCopy(), metav1.ApplyOptions{FieldManager: "bench-scale-limit", Force: true})
	if err != nil {
		return fmt.Errorf("apply %s %s/%s: %w", gvk.Kind, u.GetNamespace(), u.GetName(), err)
	}
	k := key(mapping.Resource, got.GetNamespace(), got.GetName())
	l.mu.Lock()
	defer l.mu.Unlock()
	l.waits[k] = &wait{gen: got.GetGeneration(), rel: rw}
	if cur, ok := l.seen[k]; !ok || cur.GetGeneration() < got.GetGeneration() {
		l.seen[k] = got // the informer has not seen it yet
	}
	l.check(k)
	return nil
}
