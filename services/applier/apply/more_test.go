package apply_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

var streams = schema.GroupVersionResource{Group: "jetstream.nats.io", Version: "v1beta2", Resource: "streams"}
var crdsGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func stream(ns, name string, spec map[string]any) map[string]any {
	return map[string]any{"apiVersion": "jetstream.nats.io/v1beta2", "kind": "Stream",
		"metadata": map[string]any{"name": name, "namespace": ns}, "spec": spec}
}

// TestApplyNackCRDsThenCustomResources: the nack chart's CRDs and a Stream of theirs in one
// bundle: the CRDs are installed and Established first, then the Stream — validated against its
// CRD's schema once that exists, so an invalid one fails by name. Uninstalling keeps the CRDs
// unless asked.
func TestApplyNackCRDsThenCustomResources(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "nack"}
	a := newApplier(t, apply.Options{})
	objs := renderChart(t, rel, 1, "nats/helm/charts/nack")
	var crdCount int
	for _, o := range objs {
		if o["kind"] == "CustomResourceDefinition" {
			crdCount++
		}
	}
	require.Positive(t, crdCount)
	t.Cleanup(func() {
		for _, o := range objs {
			if o["kind"] == "CustomResourceDefinition" {
				name := o["metadata"].(map[string]any)["name"].(string)
				_ = dyn(t).Resource(crdsGVR).Delete(context.Background(), name, metav1.DeleteOptions{})
			}
		}
	})

	bad := stream(ns, "bad", map[string]any{"name": "orders", "subjects": "not-a-list"})
	_, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: append(append([]map[string]any{}, objs...), bad)})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonInvalidObject, reasonOf(err), err.Error())
	assert.Contains(t, err.Error(), "Stream "+ns+"/bad")

	// A custom resource's unknown field is an error naming it (server-side apply checks the
	// CRD's schema), not pruned without a word as a create or update would prune it.
	typo := stream(ns, "typo", map[string]any{"name": "orders", "subjects": []any{"orders.>"}, "storagee": "memory"})
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: append(append([]map[string]any{}, objs...), typo)})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonInvalidObject, reasonOf(err), err.Error())
	assert.Contains(t, err.Error(), "Stream "+ns+"/typo")
	assert.Contains(t, err.Error(), ".spec.storagee: field not declared in schema")

	good := stream(ns, "orders", map[string]any{"name": "orders", "subjects": []any{"orders.>"}, "storage": "memory"})
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: append(append([]map[string]any{}, objs...), good)})
	require.NoError(t, err)
	got := get(t, streams, ns, "orders")
	assert.Equal(t, "nack", got.GetLabels()["troupe.dev/release"])

	deleted, kept, err := a.Delete(t.Context(), rel, refs(res), false, nil)
	require.NoError(t, err)
	var keptKinds []string
	for _, k := range kept {
		keptKinds = append(keptKinds, k.Kind)
	}
	assert.Len(t, keptKinds, crdCount)
	assert.NotEmpty(t, deleted)
	for _, o := range objs {
		if o["kind"] == "CustomResourceDefinition" {
			name := o["metadata"].(map[string]any)["name"].(string)
			_, err := dyn(t).Resource(crdsGVR).Get(t.Context(), name, metav1.GetOptions{})
			assert.NoError(t, err, "CRD %s kept", name)
		}
	}
}

func refs(res *apply.Result) []events.ObjectRef {
	var out []events.ObjectRef
	for _, o := range res.Inventory {
		out = append(out, o.ObjectRef)
	}
	return out
}

// TestApplyOwnership: an object of another release, or of none, is not taken over — unless the
// request says adopt, and the applier allows adoption.
func TestApplyOwnership(t *testing.T) {
	ns := kube.Namespace(t)
	a := newApplier(t, apply.Options{})
	first := events.Release{Namespace: ns, Name: "first"}
	second := events.Release{Namespace: ns, Name: "second"}
	_, err := a.Apply(t.Context(), apply.Request{Release: first, Revision: 1, Objects: []map[string]any{configMap(ns, "shared", map[string]any{"by": "first"})}})
	require.NoError(t, err)
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Create(t.Context(), &corev1ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "handmade"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	_, err = a.Apply(t.Context(), apply.Request{Release: second, Revision: 1, Objects: []map[string]any{
		configMap(ns, "shared", map[string]any{"by": "second"}), configMap(ns, "handmade", nil), configMap(ns, "new", nil)}})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonOwnershipConflict, reasonOf(err))
	assert.Contains(t, err.Error(), "ConfigMap "+ns+"/shared: belongs to release "+ns+"/first")
	assert.Contains(t, err.Error(), "ConfigMap "+ns+"/handmade: exists and belongs to no release")
	assert.Equal(t, "first", get(t, configmaps, ns, "shared").Object["data"].(map[string]any)["by"])
	_, err = dyn(t).Resource(configmaps).Namespace(ns).Get(t.Context(), "new", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err))

	adopt := apply.Request{Release: second, Revision: 2, Options: events.Options{Adopt: true}, Objects: []map[string]any{
		configMap(ns, "shared", map[string]any{"by": "second"}), configMap(ns, "handmade", nil)}}
	_, err = a.Apply(t.Context(), adopt)
	require.Error(t, err, "an applier not started to allow adoption")
	assert.Equal(t, apply.ReasonAdoptNotAllowed, reasonOf(err))
	assert.Contains(t, err.Error(), "--allow-adopt")
	assert.Equal(t, "first", get(t, configmaps, ns, "shared").Object["data"].(map[string]any)["by"])

	_, err = newApplier(t, apply.Options{AllowAdopt: true}).Apply(t.Context(), adopt)
	require.NoError(t, err)
	shared := get(t, configmaps, ns, "shared")
	assert.Equal(t, "second", shared.Object["data"].(map[string]any)["by"])
	assert.Equal(t, "second", shared.GetLabels()["troupe.dev/release"])
	assert.Equal(t, "second", get(t, configmaps, ns, "handmade").GetLabels()["troupe.dev/release"])
}

// TestApplyRefusals: kinds no API serves, namespaces off the allowlist, cluster-scoped objects
// where they are denied, and a missing namespace each fail with their reason, naming the object.
func TestApplyRefusals(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	role := map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "troupe-test-" + ns}}
	cases := []struct {
		name    string
		opts    apply.Options
		rel     events.Release
		objects []map[string]any
		reason  string
		message string
	}{
		{"unknown kind", apply.Options{}, rel, []map[string]any{{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": map[string]any{"name": "w", "namespace": ns}}},
			apply.ReasonUnknownKind, "Widget " + ns + "/w: no API serves example.com/v1 Widget"},
		{"namespace not allowed", apply.Options{AllowNamespaces: []string{"elsewhere"}}, rel, []map[string]any{configMap(ns, "a", nil)},
			apply.ReasonNamespaceNotAllowed, "namespace " + ns + " is not on this applier's allowlist"},
		{"object in another namespace", apply.Options{AllowNamespaces: []string{ns}}, rel, []map[string]any{configMap("kube-system", "a", nil)},
			apply.ReasonNamespaceNotAllowed, "ConfigMap kube-system/a"},
		{"cluster-scoped denied", apply.Options{DenyClusterScoped: true}, rel, []map[string]any{role},
			apply.ReasonNamespaceNotAllowed, "does not apply cluster-scoped objects"},
		{"missing namespace", apply.Options{}, events.Release{Namespace: "nowhere-" + ns[:10], Name: "app"}, []map[string]any{configMap("nowhere-"+ns[:10], "a", nil)},
			apply.ReasonNamespaceNotFound, "does not exist (troupe release --create-namespace"},
		// Checked on the object as the API server takes it: a cluster-scoped kind given the
		// release's namespace (as the renderer gives kinds it does not know) is cluster-scoped.
		{"cluster-scoped with a namespace", apply.Options{DenyClusterScoped: true}, rel, []map[string]any{withNamespace(role, ns)},
			apply.ReasonNamespaceNotAllowed, "does not apply cluster-scoped objects"},
		{"cluster-scoped kind of the bundle's CRD", apply.Options{DenyClusterScoped: true}, rel, []map[string]any{crd(ns, "Cluster"),
			{"apiVersion": ns + ".example.com/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g", "namespace": ns}}},
			apply.ReasonNamespaceNotAllowed, "Gadget g: this applier does not apply cluster-scoped objects"},
		{"the release's own Namespace", apply.Options{DenyClusterScoped: true}, rel, []map[string]any{{"apiVersion": "v1", "kind": "Namespace",
			"metadata": map[string]any{"name": ns, "labels": map[string]any{"pod-security.kubernetes.io/enforce": "privileged"}}}},
			apply.ReasonNamespaceNotAllowed, "does not apply cluster-scoped objects"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := newApplier(t, c.opts).Apply(t.Context(), apply.Request{Release: c.rel, Revision: 1, Objects: c.objects})
			require.Error(t, err)
			assert.Equal(t, c.reason, reasonOf(err), err.Error())
			assert.Contains(t, err.Error(), c.message)
		})
	}
	_, err := kube.Client.CoreV1().ConfigMaps("kube-system").Get(t.Context(), "a", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err))

	for name, opts := range map[string]apply.Options{
		"denied": {DenyClusterScoped: true},       // cluster-scoped objects are denied
		"off":    {AllowNamespaces: []string{ns}}, // the namespace is off the allowlist
	} {
		t.Run("createNamespace "+name, func(t *testing.T) {
			target := name + "-" + ns[:20]
			_, err := newApplier(t, opts).Apply(t.Context(), apply.Request{
				Release: events.Release{Namespace: target, Name: "app"}, Revision: 1, Options: events.Options{CreateNamespace: true}})
			require.Error(t, err)
			assert.Equal(t, apply.ReasonNamespaceNotAllowed, reasonOf(err), err.Error())
			_, err = kube.Client.CoreV1().Namespaces().Get(t.Context(), target, metav1.GetOptions{})
			assert.True(t, apierrors.IsNotFound(err), "not created: %v", err)
		})
	}

	t.Run("createNamespace", func(t *testing.T) {
		target := "made-" + ns[:20]
		t.Cleanup(func() {
			_ = kube.Client.CoreV1().Namespaces().Delete(context.Background(), target, metav1.DeleteOptions{})
		})
		_, err := newApplier(t, apply.Options{}).Apply(t.Context(), apply.Request{Release: events.Release{Namespace: target, Name: "app"}, Revision: 1,
			Objects: []map[string]any{configMap(target, "a", nil)}, Options: events.Options{CreateNamespace: true}})
		require.NoError(t, err)
		get(t, configmaps, target, "a")
	})
}

// TestApplyImpersonation: impersonating the namespace's service account, the applier can do what
// the account may and no more: RBAC's denial fails the revision, by object.
func TestApplyImpersonation(t *testing.T) {
	ns := kube.Namespace(t)
	ctx := t.Context()
	_, err := kube.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "configmaps"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "create", "update", "patch", "delete"}}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = kube.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "deployer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "configmaps"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}}}, metav1.CreateOptions{})
	require.NoError(t, err)
	a := newApplier(t, apply.Options{ImpersonateServiceAccount: "deployer"})
	rel := events.Release{Namespace: ns, Name: "app"}

	_, err = a.Apply(ctx, apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{configMap(ns, "allowed", nil)}})
	require.NoError(t, err, "the account may manage config maps")
	secret := map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "denied", "namespace": ns}}
	_, err = a.Apply(ctx, apply.Request{Release: rel, Revision: 2, Objects: []map[string]any{configMap(ns, "allowed", nil), secret}})
	require.Error(t, err)
	assert.Equal(t, apply.ReasonForbidden, reasonOf(err))
	assert.Contains(t, err.Error(), "Secret "+ns+"/denied")
	assert.True(t, strings.Contains(err.Error(), "system:serviceaccount:"+ns+":deployer"), err.Error())
}

// TestDiff: a dry run says, per object, create / update (with the changed field in a unified
// diff) / unchanged / prune, and changes nothing.
func TestDiff(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	a := newApplier(t, apply.Options{})
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{
		configMap(ns, "same", map[string]any{"k": "v"}), configMap(ns, "changed", map[string]any{"k": "old"}), configMap(ns, "dropped", nil)}})
	require.NoError(t, err)
	before := get(t, configmaps, ns, "changed").GetResourceVersion()

	diffs, err := a.Diff(t.Context(), apply.Request{Release: rel, Revision: 2, Previous: res.Objects, Objects: []map[string]any{
		configMap(ns, "same", map[string]any{"k": "v"}), configMap(ns, "changed", map[string]any{"k": "new"}), configMap(ns, "added", nil)}})
	require.NoError(t, err)
	got := map[string]events.ObjectDiff{}
	for _, d := range diffs {
		got[d.Name] = d
	}
	assert.Equal(t, "unchanged", got["same"].Action)
	assert.Equal(t, "update", got["changed"].Action)
	assert.Contains(t, got["changed"].Diff, "-  k: old\n+  k: new")
	assert.Equal(t, "create", got["added"].Action)
	assert.Equal(t, "prune", got["dropped"].Action)
	assert.Equal(t, before, get(t, configmaps, ns, "changed").GetResourceVersion())
	_, err = dyn(t).Resource(configmaps).Namespace(ns).Get(t.Context(), "added", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err))
	get(t, configmaps, ns, "dropped")
}

// TestIntentBeforeTheFirstChange: Intent gets every object, namespaces defaulted, after
// validation and before anything changes (an error there changes nothing); Pending objects
// the bundle lacks are pruned, and one that belongs to another release is not taken as ours.
func TestIntentBeforeTheFirstChange(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	a := newApplier(t, apply.Options{})
	noNS := configMap("", "b", nil)
	delete(noNS["metadata"].(map[string]any), "namespace")
	objs := []map[string]any{configMap(ns, "a", nil), noNS}

	var got []events.ObjectRef
	_, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objs,
		Intent: func(_ context.Context, refs []events.ObjectRef) error { got = refs; return assert.AnError }})
	require.ErrorIs(t, err, assert.AnError)
	assert.ElementsMatch(t, []events.ObjectRef{
		{APIVersion: "v1", Kind: "ConfigMap", Namespace: ns, Name: "a"},
		{APIVersion: "v1", Kind: "ConfigMap", Namespace: ns, Name: "b"}}, got)
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing changed: %v", err)

	// Revision 1 applied without a record (as if killed): revision 2 drops b, knowing it only
	// from the pending intent, and prunes it.
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objs})
	require.NoError(t, err)
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: objs[:1], Pending: got})
	require.NoError(t, err)
	assert.Equal(t, []events.ObjectRef{got[1]}, res.Pruned)

	// A pending object that another release holds is neither taken over nor deleted.
	other := events.Release{Namespace: ns, Name: "other"}
	_, err = a.Apply(t.Context(), apply.Request{Release: other, Revision: 1, Objects: []map[string]any{configMap(ns, "c", nil)}})
	require.NoError(t, err)
	c := events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: ns, Name: "c"}
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Objects: []map[string]any{configMap(ns, "c", nil)}, Pending: []events.ObjectRef{c}})
	assert.Equal(t, apply.ReasonOwnershipConflict, reasonOf(err), "%v", err)
	res, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Objects: objs[:1], Pending: []events.ObjectRef{c}})
	require.NoError(t, err)
	assert.Empty(t, res.Pruned)
	_, err = kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "c", metav1.GetOptions{})
	assert.NoError(t, err, "the other release's object stays")
}

func withNamespace(obj map[string]any, ns string) map[string]any {
	c := map[string]any{}
	for k, v := range obj {
		c[k] = v
	}
	meta := map[string]any{"namespace": ns}
	for k, v := range obj["metadata"].(map[string]any) {
		meta[k] = v
	}
	c["metadata"] = meta
	return c
}

// crd is a CRD of kind Gadget in group <ns>.example.com, of scope ("Namespaced" or "Cluster").
func crd(ns, scope string) map[string]any {
	return map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "gadgets." + ns + ".example.com"},
		"spec": map[string]any{"group": ns + ".example.com", "scope": scope,
			"names": map[string]any{"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object"}}}}}}
}
