package health

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
)

var (
	podsGVR         = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	replicaSetsGVR  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	deploymentsGVR  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	statefulSetsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	daemonSetsGVR   = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
)

// watchKey names one shared watch: a resource, in one namespace or ("") all.
type watchKey struct {
	gvr       schema.GroupVersionResource
	namespace string
	// unlabelled watches every object, not only troupe's: those of a revision that adopted a
	// Helm release, which carry no troupe label yet.
	unlabelled bool
}

// watch is one informer, shared by every release that needs it, stopped when the last lets go
// (a watch of the whole cluster's pods or ReplicaSets only after lingering, idle).
type watch struct {
	informer cache.SharedIndexInformer
	stop     context.CancelFunc
	users    int
	idle     *time.Timer           // while lingering with no user
	failure  atomic.Pointer[error] // the last list or watch error, until the watch lists again
}

// linger is how long a watch of the whole cluster's pods or ReplicaSets is kept once no release
// progresses: releases that come one after another share one listing of the cluster's pods
// rather than each listing them again.
const linger = 2 * time.Minute

// lingers reports whether the watch of key lingers idle before it stops.
func (k watchKey) lingers() bool {
	return k.namespace == "" && (k.gvr == podsGVR || k.gvr == replicaSetsGVR)
}

// watches keeps one informer per resource and namespace that some release needs: the kinds of
// the inventories (only troupe's objects: those labelled with a release), and, while a release
// with workloads is progressing, the pods and ReplicaSets (to fail fast): of the whole cluster,
// or of its namespace under Options.PerNamespace.
// Changes are passed to changed, and the end of a watch's first listing to synced, from the
// informers' goroutines.
type watches struct {
	clients
	changed func(key watchKey, obj *unstructured.Unstructured)
	synced  func(key watchKey)

	mu sync.Mutex
	m  map[watchKey]*watch
}

// clients are what the watches list and watch with: pods and the apps/v1 workloads typed (in
// protobuf), ReplicaSets as their metadata, everything else dynamic.
type clients struct {
	dyn   dynamic.Interface
	typed kubernetes.Interface
	meta  metadata.Interface
}

func newWatches(c clients, changed func(watchKey, *unstructured.Unstructured), synced func(watchKey)) *watches {
	return &watches{clients: c, changed: changed, synced: synced, m: map[watchKey]*watch{}}
}

// byOwner indexes pods and ReplicaSets by their owners' uids.
const byOwner = "owner"

// acquire starts the watch of key unless it runs, and counts one more user.
func (w *watches) acquire(key watchKey, selector string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wt, ok := w.m[key]; ok {
		wt.users++
		if wt.idle != nil {
			wt.idle.Stop()
			wt.idle = nil
		}
		return
	}
	indexers := cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}
	if key.gvr == podsGVR || key.gvr == replicaSetsGVR {
		indexers[byOwner] = func(obj any) ([]string, error) {
			var uids []string
			for _, o := range obj.(*unstructured.Unstructured).GetOwnerReferences() {
				uids = append(uids, string(o.UID))
			}
			return uids, nil
		}
	}
	tweak := func(o *metav1.ListOptions) { o.LabelSelector = selector }
	var inf cache.SharedIndexInformer
	switch {
	case key.gvr == podsGVR && w.typed != nil:
		inf = coreinformers.NewFilteredPodInformer(w.typed, key.namespace, 0, indexers, tweak)
		_ = inf.SetTransform(podObject)
	case key.gvr == replicaSetsGVR && w.meta != nil:
		inf = metadatainformer.NewFilteredMetadataInformer(w.meta, key.gvr, key.namespace, 0, indexers, tweak).Informer()
		_ = inf.SetTransform(replicaSetObject)
	case key.gvr == deploymentsGVR && w.typed != nil:
		inf = appsinformers.NewFilteredDeploymentInformer(w.typed, key.namespace, 0, indexers, tweak)
		_ = inf.SetTransform(workloadObject)
	case key.gvr == statefulSetsGVR && w.typed != nil:
		inf = appsinformers.NewFilteredStatefulSetInformer(w.typed, key.namespace, 0, indexers, tweak)
		_ = inf.SetTransform(workloadObject)
	case key.gvr == daemonSetsGVR && w.typed != nil:
		inf = appsinformers.NewFilteredDaemonSetInformer(w.typed, key.namespace, 0, indexers, tweak)
		_ = inf.SetTransform(workloadObject)
	default:
		inf = dynamicinformer.NewFilteredDynamicInformer(w.dyn, key.gvr, key.namespace, 0, indexers, tweak).Informer()
		_ = inf.SetTransform(slim)
	}
	notify := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			w.changed(key, u)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			notify(obj)
		},
	})
	wt := &watch{informer: inf, users: 1}
	_ = inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() == nil { // not the watch being stopped
			wt.failure.Store(&err)
		}
	})
	ctx, stop := context.WithCancel(context.Background())
	wt.stop = stop
	go inf.Run(ctx.Done())
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
			w.synced(key)
		}
	}()
	w.m[key] = wt
}

// release counts one user less, and stops the watch when none is left.
func (w *watches) release(key watchKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wt, ok := w.m[key]
	if !ok {
		return
	}
	if wt.users--; wt.users > 0 {
		return
	}
	if !key.lingers() {
		wt.stop()
		delete(w.m, key)
		return
	}
	wt.idle = time.AfterFunc(linger, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.m[key] == wt && wt.users == 0 {
			wt.stop()
			delete(w.m, key)
		}
	})
}

// get returns the object the watch of key holds, and whether the watch has synced (before, a
// missing object may just not be listed yet).
func (w *watches) get(key watchKey, namespace, name string) (*unstructured.Unstructured, bool) {
	inf := w.informer(key)
	if inf == nil || !inf.HasSynced() {
		return nil, false
	}
	k := name
	if namespace != "" {
		k = namespace + "/" + name
	}
	obj, ok, _ := inf.GetIndexer().GetByKey(k)
	if !ok {
		return nil, true
	}
	return obj.(*unstructured.Unstructured), true
}

// owned returns what the watch of key holds that uid owns.
func (w *watches) owned(key watchKey, uid string) []*unstructured.Unstructured {
	inf := w.informer(key)
	if inf == nil {
		return nil
	}
	objs, _ := inf.GetIndexer().ByIndex(byOwner, uid)
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*unstructured.Unstructured))
	}
	return out
}

// failure is why the watch of key has not listed yet, if it failed to (forbidden, …).
func (w *watches) failure(key watchKey) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wt, ok := w.m[key]; ok && !wt.informer.HasSynced() {
		if err := wt.failure.Load(); err != nil {
			return *err
		}
	}
	return nil
}

func (w *watches) informer(key watchKey) cache.SharedIndexInformer {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wt, ok := w.m[key]; ok {
		return wt.informer
	}
	return nil
}

// count is the number of watches some release uses (not those lingering idle).
func (w *watches) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, wt := range w.m {
		if wt.users > 0 {
			n++
		}
	}
	return n
}

func (w *watches) stopAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, wt := range w.m {
		if wt.idle != nil {
			wt.idle.Stop()
		}
		wt.stop()
		delete(w.m, k)
	}
}

// slim drops what health never reads from a watched object before the informer keeps it:
// managed fields, the last-applied annotation, ConfigMap and Secret data, pod specs — most of
// the memory a watch of many objects would hold.
func slim(obj any) (any, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return obj, nil
	}
	u.SetManagedFields(nil)
	if a := u.GetAnnotations(); a != nil {
		if _, ok := a["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			delete(a, "kubectl.kubernetes.io/last-applied-configuration")
			u.SetAnnotations(a)
		}
	}
	switch u.GetKind() {
	case "ConfigMap", "Secret":
		delete(u.Object, "data")
		delete(u.Object, "binaryData")
		delete(u.Object, "stringData")
	case "Pod":
		delete(u.Object, "spec")
	case "ReplicaSet":
		delete(u.Object, "spec")
		delete(u.Object, "status")
	case "Deployment", "StatefulSet", "DaemonSet", "Job":
		// Their status is read from the spec's counts and strategy, never from the pods they
		// make: the pod template (most of a workload) goes, and a StatefulSet's claim templates.
		if spec, ok := u.Object["spec"].(map[string]any); ok {
			delete(spec, "template")
			delete(spec, "volumeClaimTemplates")
		}
	case "CronJob":
		if spec, ok := u.Object["spec"].(map[string]any); ok {
			delete(spec, "jobTemplate")
		}
	}
	return u, nil
}

// workloadObject is a typed Deployment, StatefulSet or DaemonSet as health reads objects:
// unstructured and slim, its pod template dropped before it is converted.
func workloadObject(obj any) (any, error) {
	var (
		kind string
		out  runtime.Object
	)
	switch o := obj.(type) {
	case *appsv1.Deployment:
		c := *o
		c.ManagedFields, c.Spec.Template = nil, corev1.PodTemplateSpec{}
		kind, out = "Deployment", &c
	case *appsv1.StatefulSet:
		c := *o
		c.ManagedFields, c.Spec.Template, c.Spec.VolumeClaimTemplates = nil, corev1.PodTemplateSpec{}, nil
		kind, out = "StatefulSet", &c
	case *appsv1.DaemonSet:
		c := *o
		c.ManagedFields, c.Spec.Template = nil, corev1.PodTemplateSpec{}
		kind, out = "DaemonSet", &c
	default:
		return obj, nil
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(out)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("apps/v1")
	u.SetKind(kind)
	return slim(u)
}

// podObject is a typed pod as health reads objects: unstructured, its status and metadata only
// (slim).
func podObject(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	meta := p.ObjectMeta
	meta.ManagedFields = nil // slim would drop them: not converted in the first place
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&corev1.Pod{ObjectMeta: meta, Status: p.Status})
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion("v1")
	u.SetKind("Pod")
	return slim(u)
}

// replicaSetObject is a ReplicaSet's metadata as health reads objects: unstructured, without
// managed fields.
func replicaSetObject(obj any) (any, error) {
	p, ok := obj.(*metav1.PartialObjectMetadata)
	if !ok {
		return obj, nil
	}
	meta := p.ObjectMeta
	meta.ManagedFields = nil
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&meta)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": m}}, nil
}
