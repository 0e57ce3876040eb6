package health

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
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
	servicesGVR     = schema.GroupVersionResource{Version: "v1", Resource: "services"}
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
	changed func(key watchKey, namespace, name string)
	synced  func(key watchKey)

	mu sync.Mutex
	m  map[watchKey]*watch
}

// clients are what the watches list and watch with: pods, Services and the apps/v1 workloads
// typed (in protobuf), ReplicaSets as their metadata, everything else dynamic.
type clients struct {
	dyn   dynamic.Interface
	typed kubernetes.Interface
	meta  metadata.Interface
}

func newWatches(c clients, changed func(key watchKey, namespace, name string), synced func(watchKey)) *watches {
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
	indexers := cache.Indexers{} // objects are found by key, and pods and ReplicaSets by owner
	if key.gvr == podsGVR || key.gvr == replicaSetsGVR {
		indexers[byOwner] = func(obj any) ([]string, error) {
			m, err := meta.Accessor(obj)
			if err != nil {
				return nil, err
			}
			var uids []string
			for _, o := range m.GetOwnerReferences() {
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
	case key.gvr == servicesGVR && w.typed != nil:
		inf = coreinformers.NewFilteredServiceInformer(w.typed, key.namespace, 0, indexers, tweak)
	case key.gvr == replicaSetsGVR && w.meta != nil:
		inf = metadatainformer.NewFilteredMetadataInformer(w.meta, key.gvr, key.namespace, 0, indexers, tweak).Informer()
	case key.gvr == deploymentsGVR && w.typed != nil:
		inf = appsinformers.NewFilteredDeploymentInformer(w.typed, key.namespace, 0, indexers, tweak)
	case key.gvr == statefulSetsGVR && w.typed != nil:
		inf = appsinformers.NewFilteredStatefulSetInformer(w.typed, key.namespace, 0, indexers, tweak)
	case key.gvr == daemonSetsGVR && w.typed != nil:
		inf = appsinformers.NewFilteredDaemonSetInformer(w.typed, key.namespace, 0, indexers, tweak)
	default:
		inf = dynamicinformer.NewFilteredDynamicInformer(w.dyn, key.gvr, key.namespace, 0, indexers, tweak).Informer()
	}
	_ = inf.SetTransform(keep)
	notify := func(obj any) {
		if m, err := meta.Accessor(obj); err == nil {
			w.changed(key, m.GetNamespace(), m.GetName())
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
	u, err := readable(obj)
	if err != nil {
		return nil, true
	}
	return u, true
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
		if u, err := readable(o); err == nil {
			out = append(out, u)
		}
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

// What the watches hold, and what health reads. Informers keep objects slimmed of what health
// never reads (managed fields, labels and annotations but the two it reads, ConfigMap and Secret
// data, pod specs, workloads' pod templates: most of a watched object's memory) and, from a
// typed watch, typed: a Go struct takes a fraction of what the same object takes as unstructured
// maps. Health reads them unstructured (what kstatus reads), converted when read.

// keep is every watch's transform: obj as its informer keeps it.
func keep(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		m.SetLabels(only(m.GetLabels(), readLabel))
		m.SetAnnotations(only(m.GetAnnotations(), readAnnotation))
	}
	switch o := obj.(type) { // the informer's own copy: changed in place
	case *unstructured.Unstructured:
		return slim(o), nil
	case *corev1.Pod:
		o.Spec = corev1.PodSpec{}
	case *appsv1.Deployment:
		o.Spec.Template = corev1.PodTemplateSpec{}
	case *appsv1.StatefulSet:
		o.Spec.Template, o.Spec.VolumeClaimTemplates = corev1.PodTemplateSpec{}, nil
	case *appsv1.DaemonSet:
		o.Spec.Template = corev1.PodTemplateSpec{}
	}
	return obj, nil
}

// The only label and annotation health reads (kstatus reads none): a StatefulSet pod's revision,
// and a Deployment's and its ReplicaSets' (podsOf). The rest of an object's labels and
// annotations (Helm's, the last applied configuration) are a third of a slim object's memory.
const (
	readLabel      = "controller-revision-hash"
	readAnnotation = "deployment.kubernetes.io/revision"
)

// only is m with only key, nil when m does not have it.
func only(m map[string]string, key string) map[string]string {
	v, ok := m[key]
	if !ok {
		return nil
	}
	if len(m) == 1 {
		return m
	}
	return map[string]string{key: v}
}

// readable is what an informer keeps as health reads objects: unstructured and slim.
func readable(obj any) (*unstructured.Unstructured, error) {
	var gvk schema.GroupVersionKind
	switch o := obj.(type) {
	case *unstructured.Unstructured:
		return o, nil
	case *corev1.Pod:
		gvk = corev1.SchemeGroupVersion.WithKind("Pod")
	case *corev1.Service:
		gvk = corev1.SchemeGroupVersion.WithKind("Service")
	case *appsv1.Deployment:
		gvk = appsv1.SchemeGroupVersion.WithKind("Deployment")
	case *appsv1.StatefulSet:
		gvk = appsv1.SchemeGroupVersion.WithKind("StatefulSet")
	case *appsv1.DaemonSet:
		gvk = appsv1.SchemeGroupVersion.WithKind("DaemonSet")
	case *metav1.PartialObjectMetadata: // a ReplicaSet's metadata: its only watch of metadata
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&o.ObjectMeta)
		if err != nil {
			return nil, err
		}
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": m}}, nil
	default:
		return nil, fmt.Errorf("health: a watch holds a %T", obj)
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	return slim(u), nil
}

// slim drops from an unstructured object what health never reads (keep's list).
func slim(u *unstructured.Unstructured) *unstructured.Unstructured {
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
	return u
}
