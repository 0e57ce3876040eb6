package apply_test

import (
	"net/http"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

func actions(inv []events.AppliedObject) map[string]string {
	out := map[string]string{}
	for _, o := range inv {
		out[o.Kind+"/"+o.Name] = o.Action
	}
	return out
}

// TestApplyPodinfoUpgradeAndReapply: podinfo from the fixtures is created; applying it again
// changes nothing; an upgrade with one changed value changes that field of that object only.
func TestApplyPodinfoUpgradeAndReapply(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "web"}
	a := newApplier(t, apply.Options{})
	objs := renderChart(t, rel, 1, "podinfo/charts/podinfo")
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objs})
	require.NoError(t, err)
	require.Len(t, res.Inventory, len(objs))
	for _, o := range res.Inventory {
		assert.Equal(t, "created", o.Action, "%s", o.Name)
	}
	dep := get(t, deployments, ns, "web-podinfo")
	assert.Equal(t, map[string]string{"app.kubernetes.io/managed-by": "troupe", "troupe.dev/release": "web", "troupe.dev/release-namespace": ns},
		pick(dep.GetLabels(), "app.kubernetes.io/managed-by", "troupe.dev/release", "troupe.dev/release-namespace"))
	assert.Equal(t, "1", dep.GetAnnotations()["troupe.dev/revision"])
	managers := map[string]bool{}
	for _, f := range dep.GetManagedFields() {
		managers[f.Manager+" "+string(f.Operation)] = true
	}
	assert.True(t, managers["troupe Apply"], "server-side applied by field manager troupe: %v", managers)

	svc := get(t, services, ns, "web-podinfo")
	time.Sleep(1100 * time.Millisecond) // managed fields times count seconds: a write now would show
	again, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: renderChart(t, rel, 2, "podinfo/charts/podinfo"), Previous: res.Objects})
	require.NoError(t, err)
	for _, o := range again.Inventory {
		assert.Equal(t, "unchanged", o.Action, "%s", o.Name)
	}
	assert.Equal(t, troupeTime(dep), troupeTime(get(t, deployments, ns, "web-podinfo")), "troupe wrote nothing")
	assert.Equal(t, svc.GetResourceVersion(), get(t, services, ns, "web-podinfo").GetResourceVersion(), "nothing written")
	assert.Equal(t, "1", get(t, deployments, ns, "web-podinfo").GetAnnotations()["troupe.dev/revision"], "the revision that last changed it")

	svcBefore := get(t, services, ns, "web-podinfo")
	up, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Objects: renderChart(t, rel, 3, "podinfo/charts/podinfo", "replicaCount=3"), Previous: again.Objects})
	require.NoError(t, err)
	acts := actions(up.Inventory)
	assert.Equal(t, "configured", acts["Deployment/web-podinfo"])
	delete(acts, "Deployment/web-podinfo")
	for k, v := range acts {
		assert.Equal(t, "unchanged", v, k)
	}
	after := get(t, deployments, ns, "web-podinfo")
	assert.Equal(t, int64(3), nested(after, "spec", "replicas"))
	assert.Equal(t, "3", after.GetAnnotations()["troupe.dev/revision"])
	assert.Equal(t, stable(dep, "spec", "replicas"), stable(after, "spec", "replicas"), "only spec.replicas changed")
	assert.Equal(t, svcBefore.GetResourceVersion(), get(t, services, ns, "web-podinfo").GetResourceVersion(), "the service was not written")
}

// TestApplyInvalidObjectChangesNothing: one object the API server rejects fails the revision,
// named with the server's message, and every object of the previous revision stays exactly as it
// was (nothing of the new revision was written, not even its valid objects).
func TestApplyInvalidObjectChangesNothing(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	a := newApplier(t, apply.Options{})
	v1 := []map[string]any{configMap(ns, "a", map[string]any{"v": "1"}), configMap(ns, "b", map[string]any{"v": "1"})}
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: v1})
	require.NoError(t, err)
	beforeA, beforeB := get(t, configmaps, ns, "a"), get(t, configmaps, ns, "b")

	bad := map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "broken", "namespace": ns},
		"spec": map[string]any{"ports": []any{map[string]any{"port": int64(99999)}}}}
	v2 := []map[string]any{configMap(ns, "a", map[string]any{"v": "2"}), configMap(ns, "c", map[string]any{"v": "2"}), bad}
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: v2, Previous: res.Objects})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonInvalidObject, reasonOf(err))
	assert.Contains(t, err.Error(), "Service "+ns+"/broken")
	assert.Contains(t, err.Error(), "spec.ports[0].port")
	assert.Equal(t, beforeA.GetResourceVersion(), get(t, configmaps, ns, "a").GetResourceVersion())
	assert.Equal(t, beforeB.GetResourceVersion(), get(t, configmaps, ns, "b").GetResourceVersion(), "not pruned")
	_, err = dyn(t).Resource(configmaps).Namespace(ns).Get(t.Context(), "c", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the valid new object was not created either")
}

// TestApplyPrunesWhatLeftTheBundle: an object the next revision no longer has is deleted, unless
// annotated to be kept; prune: false keeps everything.
func TestApplyPrunesWhatLeftTheBundle(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	a := newApplier(t, apply.Options{})
	kept := configMap(ns, "kept", nil)
	kept["metadata"].(map[string]any)["annotations"] = map[string]any{"helm.sh/resource-policy": "keep"}
	v1 := []map[string]any{configMap(ns, "a", nil), configMap(ns, "b", nil), configMap(ns, "c", nil), kept}
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: v1})
	require.NoError(t, err)

	no := false
	res2, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: v1[:1], Previous: res.Objects, Options: events.Options{Prune: &no}})
	require.NoError(t, err)
	assert.Empty(t, res2.Pruned)
	get(t, configmaps, ns, "b")

	res3, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Objects: v1[:1], Previous: res.Objects})
	require.NoError(t, err)
	var pruned, keptRefs []string
	for _, r := range res3.Pruned {
		pruned = append(pruned, r.Name)
	}
	for _, r := range res3.Kept {
		keptRefs = append(keptRefs, r.Name)
	}
	assert.ElementsMatch(t, []string{"b", "c"}, pruned)
	assert.Equal(t, []string{"kept"}, keptRefs)
	for _, name := range []string{"b", "c"} {
		_, err := dyn(t).Resource(configmaps).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), name)
	}
	get(t, configmaps, ns, "kept")
	get(t, configmaps, ns, "a")
}

func pick(m map[string]string, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[k] = m[k]
	}
	return out
}

func nested(u *unstructured.Unstructured, path ...string) any {
	v, _, _ := unstructured.NestedFieldNoCopy(u.Object, path...)
	return v
}

// stable is u without what the server changes on any write and troupe's revision annotation,
// and without the field at path: what must not change when only path does.
func stable(u *unstructured.Unstructured, path ...string) map[string]any {
	c := u.DeepCopy()
	for _, f := range []string{"managedFields", "resourceVersion", "generation"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(c.Object, "metadata", "annotations", "troupe.dev/revision")
	unstructured.RemoveNestedField(c.Object, "metadata", "annotations", "deployment.kubernetes.io/revision") // the controller's
	unstructured.RemoveNestedField(c.Object, "status")
	unstructured.RemoveNestedField(c.Object, path...)
	return c.Object
}

// troupeTime is when troupe's apply last changed u (its managed fields entry's time).
func troupeTime(u *unstructured.Unstructured) string {
	for _, f := range u.GetManagedFields() {
		if f.Manager == "troupe" && f.Operation == metav1.ManagedFieldsOperationApply && f.Subresource == "" {
			return f.Time.String()
		}
	}
	return ""
}

// TestApplyUnknownFieldFails: a field the object's schema does not have (a typo, a value indented
// one level too deep) is an error naming the object and the field — not a warning, and not
// applied without it. Dry runs too. (Custom resources: see the nack test.)
func TestApplyUnknownFieldFails(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	a := newApplier(t, apply.Options{})
	typo := map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "web", "namespace": ns},
		"spec": map[string]any{"ports": []any{map[string]any{"port": int64(80), "targetport": int64(8080)}}}}
	objects := []map[string]any{configMap(ns, "a", nil), typo}

	_, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objects})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonInvalidObject, reasonOf(err))
	assert.Contains(t, err.Error(), "Service "+ns+"/web")
	assert.Contains(t, err.Error(), "targetport: field not declared in schema")
	_, err = dyn(t).Resource(configmaps).Namespace(ns).Get(t.Context(), "a", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing of the revision was applied")

	_, err = a.Diff(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objects})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "targetport: field not declared in schema")
}

// TestApplyLeadsWithoutADryRun: a revision dry-runs every object but the first to be applied
// (the largest of the first stage): that one's own apply validates it, and goes first, alone,
// so a bundle with an invalid object still changes nothing — whether the invalid one is the first or another (both are named when
// both are). Whose the first object is, when the release does not know it yet, is checked by
// reading it: one that belongs to another release is not taken.
func TestApplyLeadsWithoutADryRun(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	var mu sync.Mutex
	var dryRuns, writes, reads []string // the names of the objects PATCHed or read, in order
	validation := map[string]string{}   // each object's last write's fieldValidation
	cfg := rest.CopyConfig(kube.Config)
	cfg.Wrap(func(next http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			name := path.Base(r.URL.Path)
			mu.Lock()
			switch {
			case r.Method == http.MethodPatch && r.URL.Query().Get("dryRun") != "":
				dryRuns = append(dryRuns, name)
			case r.Method == http.MethodPatch:
				writes = append(writes, name)
				validation[name] = r.URL.Query().Get("fieldValidation")
			case r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/namespaces/"+ns+"/"):
				reads = append(reads, name)
			}
			mu.Unlock()
			return next.RoundTrip(r)
		})
	})
	a, err := apply.New(cfg, apply.Options{})
	require.NoError(t, err)
	requests := func() (dry, written, read []string) {
		mu.Lock()
		defer mu.Unlock()
		dry, written, read, dryRuns, writes, reads = dryRuns, writes, reads, nil, nil, nil
		return dry, written, read
	}
	service := func(name string, port int64) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"ports": []any{map[string]any{"port": port}}}}
	}
	port := func(name string) any {
		return get(t, services, ns, name).Object["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)["port"]
	}

	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{service("s", 80), configMap(ns, "c", map[string]any{"v": "1"})}})
	require.NoError(t, err)
	dry, written, read := requests()
	assert.Equal(t, []string{"c"}, dry, "the lead is not dry-run")
	assert.Equal(t, []string{"s"}, read, "whose the new lead is: read")
	assert.Equal(t, []string{"s", "c"}, written, "the lead is applied first")
	assert.Equal(t, map[string]string{"Service/s": "created", "ConfigMap/c": "created"}, actions(res.Inventory))
	mu.Lock()
	assert.Equal(t, map[string]string{"s": "Strict", "c": "Ignore"}, validation,
		"the lead's apply validates strictly, in its dry run's stead; the others' were validated")
	mu.Unlock()

	// Another release's first object is the first release's: not taken, nothing written.
	other := events.Release{Namespace: ns, Name: "other"}
	_, err = a.Apply(t.Context(), apply.Request{Release: other, Revision: 1, Objects: []map[string]any{service("s", 90), configMap(ns, "d", nil)}})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonOwnershipConflict, reasonOf(err), "%v", err)
	assert.Contains(t, err.Error(), "Service "+ns+"/s: belongs to release "+rel.String())
	_, written, _ = requests()
	assert.Empty(t, written)
	assert.EqualValues(t, 80, port("s"))
	_, err = dyn(t).Resource(configmaps).Namespace(ns).Get(t.Context(), "d", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "%v", err)

	res, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Previous: res.Objects,
		Objects: []map[string]any{service("s", 81), configMap(ns, "c", map[string]any{"v": "2"})}})
	require.NoError(t, err)
	dry, written, read = requests()
	assert.Equal(t, []string{"c"}, dry, "the lead is not dry-run")
	assert.Empty(t, read, "nor read: the release knows it")
	assert.Equal(t, []string{"s", "c"}, written, "the lead is applied first")
	assert.Equal(t, map[string]string{"Service/s": "configured", "ConfigMap/c": "configured"}, actions(res.Inventory))
	assert.EqualValues(t, 81, port("s"))
	c := get(t, configmaps, ns, "c")

	// The lead invalid: its apply fails, and nothing else is written.
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Previous: res.Objects,
		Objects: []map[string]any{service("s", 99999), configMap(ns, "c", map[string]any{"v": "3"})}})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonInvalidObject, reasonOf(err))
	assert.Contains(t, err.Error(), "Service "+ns+"/s")
	assert.Contains(t, err.Error(), "spec.ports[0].port")
	_, written, _ = requests()
	assert.Equal(t, []string{"s"}, written, "nothing after the lead's failed apply")
	assert.EqualValues(t, 81, port("s"))
	assert.Equal(t, c.GetResourceVersion(), get(t, configmaps, ns, "c").GetResourceVersion())

	// Another object invalid (a ConfigMap key with a space, smaller than the Service that
	// leads): the lead (valid, changed) is not written either.
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Previous: res.Objects,
		Objects: []map[string]any{service("s", 82), configMap(ns, "c", map[string]any{"v": "3"}), configMap(ns, "t", map[string]any{"a b": "x"})}})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonInvalidObject, reasonOf(err))
	assert.Contains(t, err.Error(), "ConfigMap "+ns+"/t")
	assert.NotContains(t, err.Error(), "Service "+ns+"/s")
	dry, written, _ = requests()
	if assert.Len(t, dry, 3) {
		assert.ElementsMatch(t, []string{"c", "t"}, dry[:2])
		assert.Equal(t, "s", dry[2], "s leads: dry-run only once another failed, to be named if it fails too")
	}
	assert.Empty(t, written)
	assert.EqualValues(t, 81, port("s"))
	assert.Equal(t, c.GetResourceVersion(), get(t, configmaps, ns, "c").GetResourceVersion())

	// Both invalid: both named.
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Previous: res.Objects,
		Objects: []map[string]any{service("s", 99999), service("t", 99999)}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Service "+ns+"/s")
	assert.Contains(t, err.Error(), "Service "+ns+"/t")
	_, written, _ = requests()
	assert.Empty(t, written)

	// Of the stage's objects, the largest leads: its dry run is the costliest to spare.
	_, err = a.Apply(t.Context(), apply.Request{Release: events.Release{Namespace: ns, Name: "big"}, Revision: 1,
		Objects: []map[string]any{service("u", 80), configMap(ns, "large", map[string]any{"v": strings.Repeat("x", 1000)})}})
	require.NoError(t, err)
	dry, written, read = requests()
	assert.Equal(t, []string{"u"}, dry, "the largest is not dry-run")
	assert.Equal(t, []string{"large"}, read)
	assert.Equal(t, []string{"large", "u"}, written, "the largest is applied first")
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
