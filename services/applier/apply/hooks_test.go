package apply_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/test/cluster"
)

var jobs = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}

// hookJob is a Job hook for phases, with a weight and delete policies; fault (cluster.Fault…)
// makes its pod fail, or never run.
func hookJob(name string, weight int, fault string, policies []string, phases ...string) events.BundleHook {
	annotations := map[string]any{}
	if fault != "" {
		annotations[cluster.FaultAnnotation] = fault
	}
	return events.BundleHook{Events: phases, Weight: weight, DeletePolicies: policies, Object: map[string]any{
		"apiVersion": "batch/v1", "kind": "Job",
		"metadata": map[string]any{"name": name, "annotations": map[string]any{"helm.sh/hook": strings.Join(phases, ",")}},
		"spec": map[string]any{"backoffLimit": int64(0), "template": map[string]any{
			"metadata": map[string]any{"annotations": annotations},
			"spec": map[string]any{"restartPolicy": "Never", "containers": []any{
				map[string]any{"name": "run", "image": "busybox:1.36", "command": []any{"true"}}}}}}}}
}

func hookConfigMap(name string, weight int, policies []string, phases ...string) events.BundleHook {
	return events.BundleHook{Events: phases, Weight: weight, DeletePolicies: policies, Object: configMap("", name, map[string]any{"hook": "yes"})}
}

func rv(t *testing.T, gvr schema.GroupVersionResource, ns, name string) int {
	t.Helper()
	n, err := strconv.Atoi(get(t, gvr, ns, name).GetResourceVersion())
	require.NoError(t, err)
	return n
}

func exists(t *testing.T, gvr schema.GroupVersionResource, ns, name string) bool {
	t.Helper()
	_, err := dyn(t).Resource(gvr).Namespace(ns).Get(t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(t, err)
	return true
}

// TestHooksRunBeforeTheObjects: a revision's pre-phase hooks run in their order, each waited for
// (a Job until complete) before the next, and all of them before any regular object is applied;
// a hook-succeeded hook is gone afterwards, a hook with no policy stays (before-hook-creation)
// and is created afresh the next time; hooks of other phases do not run; HooksRan hears what ran.
func TestHooksRunBeforeTheObjects(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "db"}
	a := newApplier(t, apply.Options{})
	hooks := []events.BundleHook{
		hookJob("db-migrate", -5, "", nil, events.HookPreInstall, events.HookPreUpgrade),
		hookConfigMap("db-init", 0, []string{"hook-succeeded"}, events.HookPreInstall),
		hookJob("db-upgrade-only", 1, "", nil, events.HookPreUpgrade),
		hookJob("db-uses-init", 2, "", nil, events.HookPreInstall),
	}
	cms, err := dyn(t).Resource(configmaps).Namespace(ns).Watch(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	defer cms.Stop()
	phase := func(p string) []events.BundleHook {
		var out []events.BundleHook
		for _, h := range hooks {
			for _, e := range h.Events {
				if e == p {
					out = append(out, h)
				}
			}
		}
		return out
	}
	var heard []events.HookRun
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{configMap("", "db-config", map[string]any{"a": "1"})},
		Hooks: phase(events.HookPreInstall), HookPhase: events.HookPreInstall,
		HooksRan: func(_ context.Context, runs []events.HookRun) error {
			assert.False(t, exists(t, configmaps, ns, "db-config"), "no object applied before the hooks ran")
			heard = runs
			return nil
		}})
	require.NoError(t, err)
	require.Len(t, res.Hooks, 3)
	assert.Equal(t, []string{"db-migrate", "db-init", "db-uses-init"}, []string{res.Hooks[0].Name, res.Hooks[1].Name, res.Hooks[2].Name})
	// HooksRan heard the phase before the hook-succeeded ones were deleted, as they ran.
	require.Len(t, heard, 3)
	for i := range heard {
		assert.Equal(t, res.Hooks[i].ObjectRef, heard[i].ObjectRef)
	}
	// hook-succeeded: deleted once the whole phase succeeded, not before the Job after it ran.
	deletedAt := 0
	for ev := range cms.ResultChan() {
		if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type == watch.Deleted && u.GetName() == "db-init" {
			deletedAt, err = strconv.Atoi(u.GetResourceVersion())
			require.NoError(t, err)
			break
		}
	}
	assert.Greater(t, deletedAt, rv(t, jobs, ns, "db-uses-init"), "db-init was there until the Job after it completed")
	for _, h := range res.Hooks {
		assert.Equal(t, events.HookSucceeded, h.Result)
		assert.Equal(t, ns, h.Namespace)
	}
	assert.False(t, res.Hooks[0].Deleted)
	assert.True(t, res.Hooks[1].Deleted)
	assert.False(t, res.Hooks[2].Deleted)
	job := get(t, jobs, ns, "db-migrate")
	assert.NotEmpty(t, job.Object["status"].(map[string]any)["completionTime"], "waited for: complete")
	assert.Less(t, rv(t, jobs, ns, "db-migrate"), rv(t, configmaps, ns, "db-config"), "the Job completed before the ConfigMap was created")
	assert.False(t, exists(t, configmaps, ns, "db-init"), "hook-succeeded: deleted")
	assert.False(t, exists(t, jobs, ns, "db-upgrade-only"), "a pre-upgrade hook does not run on install")
	for _, o := range res.Objects {
		assert.NotEqual(t, "db-migrate", o.Name, "hooks are not inventory")
	}

	up, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: []map[string]any{configMap("", "db-config", map[string]any{"a": "2"})},
		Previous: res.Objects, Hooks: phase(events.HookPreUpgrade), HookPhase: events.HookPreUpgrade})
	require.NoError(t, err)
	require.Len(t, up.Hooks, 2)
	assert.NotEqual(t, job.GetUID(), get(t, jobs, ns, "db-migrate").GetUID(), "before-hook-creation: created afresh")
	assert.True(t, exists(t, jobs, ns, "db-upgrade-only"))
	assert.False(t, exists(t, configmaps, ns, "db-init"), "a pre-install hook does not run on upgrade")
	assert.Empty(t, up.Pruned, "hooks are never pruned")
	assert.True(t, exists(t, jobs, ns, "db-migrate"))
}

// TestFailingHookStopsTheRevision: a hook Job whose pod fails fails the revision at stage hook,
// naming the hook and what its pod said, before any regular object is applied; hook-failed
// deletes it; one still running at the revision's deadline fails it, saying what its pod waits
// for; a hook whose name an object of no release holds is refused and that object left
// alone; a hook off the namespace allowlist is refused before anything changes.
func TestFailingHookStopsTheRevision(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "db"}
	a := newApplier(t, apply.Options{})
	objects := []map[string]any{configMap("", "db-config", map[string]any{"a": "1"})}
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: objects, HookPhase: events.HookPreInstall,
		Hooks: []events.BundleHook{hookJob("db-ok", 0, "", nil, events.HookPreInstall), hookJob("db-broken", 1, cluster.FaultFail, []string{"hook-failed"}, events.HookPreInstall),
			hookJob("db-never", 2, "", nil, events.HookPreInstall)}})
	var e *apply.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, events.StageHook, e.Stage)
	assert.Equal(t, apply.ReasonHookFailed, e.Reason)
	assert.Contains(t, e.Detail(), "hook db-broken: the job failed")
	assert.Contains(t, e.Detail(), "exited 1 (Error) troupe test fault")
	require.Len(t, res.Hooks, 2)
	assert.Equal(t, events.HookFailed, res.Hooks[1].Result)
	assert.True(t, res.Hooks[1].Deleted)
	assert.False(t, exists(t, jobs, ns, "db-broken"), "hook-failed: deleted")
	assert.False(t, exists(t, jobs, ns, "db-never"), "the phase stopped at the failure")
	assert.False(t, exists(t, configmaps, ns, "db-config"), "no regular object applied")

	_, err = dyn(t).Resource(configmaps).Namespace(ns).Create(t.Context(), &unstructured.Unstructured{Object: configMap(ns, "someone-elses", map[string]any{"mine": "yes"})}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: objects, HookPhase: events.HookPreInstall,
		Hooks: []events.BundleHook{hookConfigMap("someone-elses", 0, nil, events.HookPreInstall)}})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, events.StageHook, e.Stage)
	assert.Equal(t, apply.ReasonOwnershipConflict, e.Reason)
	assert.Equal(t, map[string]any{"mine": "yes"}, get(t, configmaps, ns, "someone-elses").Object["data"], "left alone")

	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Objects: objects, HookPhase: events.HookPreInstall,
		HookDeadline: time.Now().Add(2 * time.Second), Hooks: []events.BundleHook{hookJob("db-stuck", 0, cluster.FaultImagePull, nil, events.HookPreInstall)}})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, events.StageHook, e.Stage)
	assert.Equal(t, apply.ReasonHookFailed, e.Reason)
	assert.Contains(t, e.Detail(), "hook db-stuck: still running at the revision's deadline")
	assert.Contains(t, e.Detail(), "waiting: ImagePullBackOff")
	assert.False(t, exists(t, configmaps, ns, "db-config"))

	fenced := newApplier(t, apply.Options{AllowNamespaces: []string{ns}})
	elsewhere := hookConfigMap("elsewhere", 0, nil, events.HookPreInstall)
	elsewhere.Object["metadata"].(map[string]any)["namespace"] = "kube-system"
	_, err = fenced.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Objects: objects, HookPhase: events.HookPreInstall, Hooks: []events.BundleHook{elsewhere}})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, events.StageHook, e.Stage)
	assert.Equal(t, apply.ReasonNamespaceNotAllowed, e.Reason)
	assert.False(t, exists(t, configmaps, "kube-system", "elsewhere"))
	assert.False(t, exists(t, configmaps, ns, "db-config"))
}

// TestArgoCDHooks: argo-cd's redis-secret-init hooks (a ServiceAccount, Role, RoleBinding and the
// Job that uses them, pre-install and pre-upgrade, before-hook-creation) run in Helm's kind order
// before the chart's objects (its CRDs among them), and again, created afresh, on upgrade.
func TestArgoCDHooks(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "argocd"}
	a := newApplier(t, apply.Options{})
	b := renderBundle(t, rel, 1, "argo-cd/argo-cd")
	phase := func(p string) []events.BundleHook {
		var out []events.BundleHook
		for _, h := range b.Hooks {
			for _, e := range h.Events {
				if e == p {
					out = append(out, h)
				}
			}
		}
		return out
	}
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: b.Objects, Hooks: phase(events.HookPreInstall), HookPhase: events.HookPreInstall})
	require.NoError(t, err)
	var kinds []string
	for _, h := range res.Hooks {
		assert.Equal(t, events.HookSucceeded, h.Result, h.Name)
		kinds = append(kinds, h.Kind)
	}
	assert.Equal(t, []string{"ServiceAccount", "Role", "RoleBinding", "Job"}, kinds)
	job := get(t, jobs, ns, res.Hooks[3].Name)
	assert.Less(t, rv(t, jobs, ns, job.GetName()), rv(t, deployments, ns, "argocd-server"), "the hook Job completed before the Deployments were created")

	b = renderBundle(t, rel, 2, "argo-cd/argo-cd")
	up, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Objects: b.Objects, Previous: res.Objects, Hooks: phase(events.HookPreUpgrade), HookPhase: events.HookPreUpgrade})
	require.NoError(t, err)
	require.Len(t, up.Hooks, 4)
	assert.NotEqual(t, job.GetUID(), get(t, jobs, ns, job.GetName()).GetUID(), "before-hook-creation: the Job was created afresh")
}

// TestCRDsAreUpgraded: unlike Helm (helm/helm#8972), a revision whose bundle changes a CRD
// upgrades it — here a new storage version beside the old; a revision whose CRD drops a version
// still in its storedVersions (objects may be stored in it) is refused with the API server's
// reason, and changes nothing.
func TestCRDsAreUpgraded(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "crds"}
	a := newApplier(t, apply.Options{})
	version := func(name string, storage bool) map[string]any {
		return map[string]any{"name": name, "served": true, "storage": storage,
			"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
	}
	def := func(versions ...any) map[string]any {
		c := crd(ns, "Namespaced")
		c["spec"].(map[string]any)["versions"] = versions
		return c
	}
	res, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{def(version("v1", true))}})
	require.NoError(t, err)
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	name := "gadgets." + ns + ".example.com"

	up, err := a.Apply(t.Context(), apply.Request{Release: rel, Revision: 2, Previous: res.Objects,
		Objects: []map[string]any{def(version("v1", false), version("v2", true))}})
	require.NoError(t, err)
	versions, _, _ := unstructured.NestedSlice(get(t, crds, "", name).Object, "spec", "versions")
	assert.Len(t, versions, 2, "upgraded: v2 added")

	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 3, Previous: up.Objects,
		Objects: []map[string]any{def(version("v2", true))}})
	var e *apply.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, apply.ReasonInvalidObject, e.Reason)
	assert.Contains(t, e.Detail(), "storedVersions")
	assert.Contains(t, e.Detail(), "v1")
	versions, _, _ = unstructured.NestedSlice(get(t, crds, "", name).Object, "spec", "versions")
	assert.Len(t, versions, 2, "refused: unchanged")
}
