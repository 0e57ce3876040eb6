package apply

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"github.com/pmezard/go-difflib/difflib"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
)

// maxDiff bounds one object's diff, as the catalog does.
const maxDiff = 32768

// Diff says what Apply would do with req, changing nothing: each object dry-run applied and
// compared with what the cluster has — create, update (with a unified diff of the object's
// YAML, server-managed fields left out), unchanged — and the previous revision's objects the
// bundle no longer has, prune. The validation is Apply's: an object the API server rejects is
// an error, as it would be on apply. Custom resources of CRDs the bundle would install cannot be
// dry-run before their CRD exists; they are reported as create.
func (a *Applier) Diff(ctx context.Context, req Request) ([]events.ObjectDiff, error) {
	items, err := a.prepare(req)
	if err != nil {
		return nil, err
	}
	diffs := make([]events.ObjectDiff, len(items))
	index := make(map[*item]int, len(items))
	for i, it := range items {
		index[it] = i
	}
	var mu sync.Mutex
	var errs []*Error
	a.each(ctx, items, func(ctx context.Context, it *item) {
		d, err := a.diffOne(ctx, req.Release, it)
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			return
		}
		diffs[index[it]] = d
	})
	if e := merge(errs); e != nil {
		return nil, e
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Options.PruneEnabled() {
		current := map[events.ObjectRef]bool{}
		for _, it := range items {
			current[it.ref] = true
		}
		for _, o := range req.Previous {
			if !current[o.ObjectRef] && !isCRD(o.ObjectRef) {
				diffs = append(diffs, events.ObjectDiff{ObjectRef: o.ObjectRef, Action: events.ActionPrune})
			}
		}
	}
	return diffs, nil
}

func (a *Applier) diffOne(ctx context.Context, rel events.Release, it *item) (events.ObjectDiff, *Error) {
	d := events.ObjectDiff{ObjectRef: it.ref, Action: events.ActionCreate}
	if it.deferred {
		return d, nil
	}
	out, err := a.apply(ctx, rel, it, true)
	if err != nil {
		return d, err.(*Error)
	}
	if out.GetResourceVersion() == "" {
		return d, nil
	}
	live, gerr := a.client(rel).Resource(it.gvr).Namespace(it.ref.Namespace).Get(ctx, it.ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(gerr) {
		return d, nil
	}
	if gerr != nil {
		return d, objectError(it.ref, gerr)
	}
	if owner := ownerOf(live); owner != rel {
		// Not this release's: whoever may request a dry run must not read it through the diff.
		whose := "belongs to no release"
		if owner.Name != "" {
			whose = "belongs to release " + owner.String()
		}
		d.Action = events.ActionUpdate
		d.Diff = fmt.Sprintf("%s exists and %s: its content is not shown (a real request fails with %s unless options.adopt)",
			describe(it.ref), whose, ReasonOwnershipConflict)
		return d, nil
	}
	before, after := withoutServerFields(live), withoutServerFields(out)
	if it.ref.APIVersion == "v1" && it.ref.Kind == "Secret" {
		redactSecret(before, after)
	}
	if reflect.DeepEqual(before, after) {
		d.Action = events.ActionUnchanged
		return d, nil
	}
	d.Action = events.ActionUpdate
	d.Diff = unifiedDiff(it.ref, before, after)
	return d, nil
}

// withoutServerFields is obj without what the server manages on its own.
func withoutServerFields(obj *unstructured.Unstructured) map[string]any {
	c := obj.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "generation", "uid", "creationTimestamp", "selfLink"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(c.Object, "status")
	return c.Object
}

// redactSecret replaces a Secret's values, in both versions, by what the diff may say of each
// key: (unchanged), (changed) against (old), (added), (removed). The kubectl annotation that
// copies the whole object goes too.
func redactSecret(before, after map[string]any) {
	for _, obj := range []map[string]any{before, after} {
		unstructured.RemoveNestedField(obj, "metadata", "annotations", "kubectl.kubernetes.io/last-applied-configuration")
	}
	for _, field := range []string{"data", "stringData"} {
		b, _ := before[field].(map[string]any)
		a, _ := after[field].(map[string]any)
		for k, bv := range b {
			av, ok := a[k]
			switch {
			case !ok:
				b[k] = "(removed)"
			case reflect.DeepEqual(av, bv):
				b[k], a[k] = "(unchanged)", "(unchanged)"
			default:
				b[k], a[k] = "(old)", "(changed)"
			}
		}
		for k := range a {
			if _, ok := b[k]; !ok {
				a[k] = "(added)"
			}
		}
	}
}

func unifiedDiff(ref events.ObjectRef, before, after map[string]any) string {
	a, _ := yaml.Marshal(before)
	b, _ := yaml.Marshal(after)
	name := describe(ref)
	text, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(string(a)), B: difflib.SplitLines(string(b)),
		FromFile: name + " (cluster)", ToFile: name + " (this revision)", Context: 3,
	})
	if err != nil {
		return fmt.Sprintf("diff: %v", err)
	}
	return events.Truncate(text, maxDiff)
}
