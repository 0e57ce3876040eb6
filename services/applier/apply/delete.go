package apply

import (
	"context"
	"slices"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/troupe-dev/troupe/events"
)

// Delete deletes the release's objects refs (given in apply order), for pruning and uninstalling:
// namespaced objects first, then cluster-scoped ones, CustomResourceDefinitions last and only
// when deleteCRDs (deleting one deletes every custom resource of its kind). An object annotated
// to be kept, or that no longer belongs to the release (taken over by another), stays and is
// reported as kept; one already gone is neither. Deletion is in the background: dependents
// (a Deployment's ReplicaSets) go after their owner, as `kubectl delete` does. adopted are the
// objects taken over from Helm and not applied since (AdoptedOf): the release's though they carry
// no troupe label.
func (a *Applier) Delete(ctx context.Context, rel events.Release, refs []events.ObjectRef, deleteCRDs bool, adopted map[events.ObjectRef]bool) (deleted, kept []events.ObjectRef, err error) {
	var namespaced, cluster, crds []*item
	var errs []*Error
	for _, ref := range slices.Backward(refs) {
		it := &item{ref: ref}
		gvk := schema.FromAPIVersionAndKind(ref.APIVersion, ref.Kind)
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			continue // its kind is gone, and the object with it
		}
		if err != nil {
			errs = append(errs, objectError(ref, err))
			continue
		}
		it.gvr = m.Resource
		switch {
		case isCRD(ref):
			crds = append(crds, it)
		case m.Scope.Name() == meta.RESTScopeNameNamespace:
			namespaced = append(namespaced, it)
		default:
			cluster = append(cluster, it)
		}
	}
	if e := merge(errs); e != nil {
		return nil, nil, e
	}
	if !deleteCRDs {
		for _, it := range crds {
			kept = append(kept, it.ref)
		}
		crds = nil
	}
	var mu sync.Mutex
	for _, group := range [][]*item{namespaced, cluster, crds} {
		a.each(ctx, group, func(ctx context.Context, it *item) {
			gone, stays, err := a.deleteOne(ctx, rel, it, adopted[it.ref])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs = append(errs, err)
			case gone:
				deleted = append(deleted, it.ref)
			case stays:
				kept = append(kept, it.ref)
			}
		})
		if e := merge(errs); e != nil {
			return deleted, kept, e
		}
	}
	return deleted, kept, ctx.Err()
}

func (a *Applier) deleteOne(ctx context.Context, rel events.Release, it *item, adopted bool) (deleted, kept bool, _ *Error) {
	res := a.client(rel).Resource(it.gvr).Namespace(it.ref.Namespace)
	live, err := res.Get(ctx, it.ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, false, nil
	}
	if err != nil {
		return false, false, objectError(it.ref, err)
	}
	owner := ownerOf(live)
	if (owner != rel && (owner.Name != "" || !adopted)) || keep(live.GetAnnotations()) {
		return false, true, nil
	}
	background := metav1.DeletePropagationBackground
	uid := live.GetUID()
	err = res.Delete(ctx, it.ref.Name, metav1.DeleteOptions{PropagationPolicy: &background, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return false, false, objectError(it.ref, err)
	}
	return true, false, nil
}
