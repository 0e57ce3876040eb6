package health

import (
	"fmt"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/troupe-dev/troupe/events"
)

// tracker follows one revision of one release. Its state and pending delivery belong to the
// release's worker (the workqueue hands a release to one worker at a time); what it watches
// (watchKeys, podWatches, gone) is guarded by watcher.mu, as the index is.
type tracker struct {
	rel     events.Release
	rec     record      // the record it was started or resumed with
	cause   event.Event // the release.applied
	objects []tracked
	waitLB  bool   // options.waitLoadBalancer
	resumed bool   // followed again after a restart: a terminal event may be out already
	kvRev   uint64 // the KV revision of the record as this tracker last read or wrote it

	state   state
	pending *delivery // decided, not delivered yet

	watchKeys  []watchKey
	podWatches []string // namespaces
	gone       bool
}

// tracked is one object of a followed revision.
type tracked struct {
	ref      events.ObjectRef
	key      watchKey
	gvr      schema.GroupVersionResource
	workload bool
}

type objectKey struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

// newTracker is the tracker of rel's revision rec records: its objects (kinds resolved to
// resources), request time and deadline from the release.applied, its state from rec.
func (s *watcher) newTracker(rel events.Release, rec record, applied event.Event, a *events.Applied) *tracker {
	cause := applied // what health's events derive from: its context, not its payload (a as decoded)
	cause.DataEncoded = nil
	t := &tracker{rel: rel, rec: rec, cause: cause, waitLB: a.Options.WaitLoadBalancer}
	requested := events.RequestTime(applied)
	if requested.IsZero() {
		requested = applied.Time()
	}
	timeout := time.Duration(a.Options.Timeout)
	if timeout <= 0 {
		timeout = events.DefaultTimeout
	}
	t.state = state{phase: rec.Phase, requested: requested, deadline: requested.Add(timeout),
		progress: rec.Progress, degradations: rec.Degradations, bundle: a.Bundle, postHooks: a.PostHooks, hooksDone: rec.HooksDone}
	for _, o := range a.Inventory {
		gv, _ := schema.ParseGroupVersion(o.APIVersion)
		tr := tracked{ref: o.ObjectRef, workload: isWorkload(gv.Group, o.Kind)}
		if m, err := s.mapping(gv.WithKind(o.Kind)); err == nil {
			tr.gvr = m.Resource
			tr.key = watchKey{gvr: m.Resource, unlabelled: a.Adopted}
			if (s.opts.PerNamespace || a.Adopted) && m.Scope.Name() == meta.RESTScopeNameNamespace {
				tr.key.namespace = o.Namespace
			}
		}
		t.objects = append(t.objects, tr)
	}
	return t
}

// record is t's record in state st.
func (t *tracker) record(st state) record {
	r := t.rec
	r.Phase, r.Progress, r.Degradations, r.HooksDone = st.phase, st.progress, st.degradations, st.hooksDone
	return r
}

func (s *watcher) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil && meta.IsNoMatchError(err) {
		s.mapper.Reset() // a CRD installed since discovery was read
		m, err = s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	return m, err
}

// tracker is the revision of rel followed, or nil.
func (s *watcher) tracker(rel events.Release) *tracker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.releases[rel]
}

// track makes t the revision of its release followed: its watches acquired, its objects
// indexed, and its release queued to be judged.
func (s *watcher) track(t *tracker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releases[t.rel] = t
	for _, o := range t.objects {
		if o.gvr.Empty() {
			continue
		}
		if !slices.Contains(t.watchKeys, o.key) {
			t.watchKeys = append(t.watchKeys, o.key)
			selector := releaseLabel
			if o.key.unlabelled {
				selector = ""
			}
			s.watches.acquire(o.key, selector)
		}
		k := objectKey{gvr: o.gvr, namespace: o.ref.Namespace, name: o.ref.Name}
		s.byObject[k] = append(s.byObject[k], t)
	}
	if t.state.phase == phaseProgressing {
		s.watchPods(t)
	}
	s.queue.Add(t.rel)
}

// settle moves t to st, the state its delivered decision led to; a failed or superseded
// revision is let go.
func (s *watcher) settle(t *tracker, st state) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.state = st
	if st.phase == phaseFailed || st.phase == phaseSuperseded {
		s.untrackLocked(t)
	}
}

func (s *watcher) untrack(t *tracker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.untrackLocked(t)
}

// untrackLocked lets t go: watches released, index entries removed. Caller holds s.mu.
func (s *watcher) untrackLocked(t *tracker) {
	if t.gone {
		return
	}
	t.gone = true
	if s.releases[t.rel] == t {
		delete(s.releases, t.rel)
	}
	for _, k := range t.watchKeys {
		s.watches.release(k)
	}
	for _, o := range t.objects {
		k := objectKey{gvr: o.gvr, namespace: o.ref.Namespace, name: o.ref.Name}
		s.byObject[k] = without(s.byObject[k], t)
		if len(s.byObject[k]) == 0 {
			delete(s.byObject, k)
		}
	}
	s.unwatchPodsLocked(t)
}

// watchPods watches the pods and ReplicaSets of the namespaces of t's workloads, while t
// progresses: what fails it fast. Caller holds s.mu.
func (s *watcher) watchPods(t *tracker) {
	for _, o := range t.objects {
		if !o.workload || slices.Contains(t.podWatches, o.ref.Namespace) {
			continue
		}
		ns := o.ref.Namespace
		t.podWatches = append(t.podWatches, ns)
		s.watches.acquire(s.podKey(podsGVR, ns), "")
		s.watches.acquire(s.podKey(replicaSetsGVR, ns), "")
		s.byNamespace[ns] = append(s.byNamespace[ns], t)
	}
}

// podKey is the watch of gvr (pods or ReplicaSets) that a workload in namespace ns needs: the
// one of the whole cluster, shared by every release progressing, unless the watcher watches per
// namespace. A thousand releases progressing at once are then two watches, not two thousand:
// each watch an informer here and a watcher in the API server.
func (s *watcher) podKey(gvr schema.GroupVersionResource, ns string) watchKey {
	if s.opts.PerNamespace {
		return watchKey{gvr: gvr, namespace: ns}
	}
	return watchKey{gvr: gvr}
}

func (s *watcher) unwatchPods(t *tracker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unwatchPodsLocked(t)
}

// unwatchPodsLocked lets the watches of watchPods go. Caller holds s.mu.
func (s *watcher) unwatchPodsLocked(t *tracker) {
	for _, ns := range t.podWatches {
		s.watches.release(s.podKey(podsGVR, ns))
		s.watches.release(s.podKey(replicaSetsGVR, ns))
		s.byNamespace[ns] = without(s.byNamespace[ns], t)
		if len(s.byNamespace[ns]) == 0 {
			delete(s.byNamespace, ns)
		}
	}
	t.podWatches = nil
}

// changed is called by the watches for every change of a watched object: the releases it
// concerns are queued to be judged.
func (s *watcher) changed(key watchKey, namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if key.gvr == podsGVR || key.gvr == replicaSetsGVR {
		for _, t := range s.byNamespace[namespace] {
			s.queue.Add(t.rel)
		}
		return
	}
	for _, t := range s.byObject[objectKey{gvr: key.gvr, namespace: namespace, name: name}] {
		s.queue.Add(t.rel)
	}
}

// synced is called by the watches once a watch has listed what exists: the releases using it
// can be judged now, even if nothing changes.
func (s *watcher) synced(key watchKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.releases {
		pods := (key.gvr == podsGVR || key.gvr == replicaSetsGVR) && slices.ContainsFunc(t.podWatches, func(ns string) bool { return s.podKey(key.gvr, ns) == key })
		if pods || slices.Contains(t.watchKeys, key) {
			s.queue.Add(t.rel)
		}
	}
}

// observe is what the watches hold of t's objects.
func (s *watcher) observe(t *tracker) observation {
	s.mu.Lock()
	podWatches := slices.Clone(t.podWatches)
	s.mu.Unlock()
	obs := observation{objects: make([]observed, len(t.objects)), complete: true}
	for i, o := range t.objects {
		r, ok := s.statusOf(o, podWatches, t.waitLB)
		obs.complete = obs.complete && ok
		obs.objects[i] = observed{reason: r.Reason, ObjectStatus: events.ObjectStatus{ObjectRef: o.ref, Status: r.Status,
			Message: events.Truncate(r.Message, maxObjectMessage)}}
	}
	return obs
}

// statusOf is one object's health, with its pods when their namespace is watched; ok is false
// while a watch it needs has not listed yet.
func (s *watcher) statusOf(o tracked, podWatches []string, waitLB bool) (_ result, ok bool) {
	if o.gvr.Empty() {
		return result{Status: events.StatusUnknown, Message: fmt.Sprintf("the cluster serves no %s %s", o.ref.APIVersion, o.ref.Kind)}, true
	}
	obj, ok := s.watches.get(o.key, o.ref.Namespace, o.ref.Name)
	if !ok {
		msg := "not observed yet"
		if err := s.watches.failure(o.key); err != nil {
			msg = fmt.Sprintf("cannot watch %s: %v", o.gvr.GroupResource(), err)
		}
		return result{Status: events.StatusUnknown, Message: msg}, false
	}
	var pods []*unstructured.Unstructured
	if obj != nil && o.workload && slices.Contains(podWatches, o.ref.Namespace) {
		pk, rk := s.podKey(podsGVR, o.ref.Namespace), s.podKey(replicaSetsGVR, o.ref.Namespace)
		pods = podsOf(obj, func(uid string) []*unstructured.Unstructured {
			return append(s.watches.owned(rk, uid), s.watches.owned(pk, uid)...)
		})
	}
	return compute(obj, pods, waitLB), true
}

func without(ts []*tracker, t *tracker) []*tracker {
	out := ts[:0]
	for _, x := range ts {
		if x != t {
			out = append(out, x)
		}
	}
	return out
}
