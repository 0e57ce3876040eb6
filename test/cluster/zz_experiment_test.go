package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

func objs(ns string, rel int) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	name := fmt.Sprintf("r%d", rel)
	add := func(o map[string]any) { out = append(out, &unstructured.Unstructured{Object: o}) }
	meta := func(n string) map[string]any {
		return map[string]any{"name": n, "namespace": ns, "labels": map[string]any{"app": name}}
	}
	for i := range 3 {
		add(map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(fmt.Sprintf("%s-cm%d", name, i)), "data": map[string]any{"a": "b", "c": fmt.Sprint(i)}})
	}
	add(map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": meta(name + "-s"), "stringData": map[string]any{"p": "x"}})
	add(map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name)})
	add(map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": meta(name), "spec": map[string]any{"selector": map[string]any{"app": name}, "ports": []any{map[string]any{"port": int64(80)}}}})
	add(map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(name), "rules": []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"}, "verbs": []any{"get"}}}})
	add(map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(name), "roleRef": map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": []any{map[string]any{"kind": "ServiceAccount", "name": name, "namespace": ns}}})
	add(map[string]any{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta(name), "spec": map[string]any{"maxUnavailable": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": name}}}})
	add(map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name), "spec": map[string]any{"replicas": int64(1), "selector": map[string]any{"matchLabels": map[string]any{"app": name}},
		"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}}, "spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "nginx"}}}}}})
	return out
}

var gvr = map[string]schema.GroupVersionResource{
	"ConfigMap": {Version: "v1", Resource: "configmaps"}, "Secret": {Version: "v1", Resource: "secrets"},
	"ServiceAccount": {Version: "v1", Resource: "serviceaccounts"}, "Service": {Version: "v1", Resource: "services"},
	"Role": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}, "RoleBinding": {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
	"PodDisruptionBudget": {Group: "policy", Version: "v1", Resource: "poddisruptionbudgets"}, "Deployment": {Group: "apps", Version: "v1", Resource: "deployments"},
}

func TestZZExperiment(t *testing.T) {
	c := ForTest(t)
	cfg := rest.CopyConfig(c.Config)
	cfg.QPS, cfg.Burst = -1, 0
	dc := dynamic.NewForConfigOrDie(cfg)
	ctx := context.Background()
	run := func(label string, ns string, dry []string, conc int) {
		_, _ = c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		var all []*unstructured.Unstructured
		for r := range 100 {
			all = append(all, objs(ns, r)...)
		}
		start := time.Now()
		ch := make(chan *unstructured.Unstructured)
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for o := range ch {
					_, err := dc.Resource(gvr[o.GetKind()]).Namespace(ns).Apply(ctx, o.GetName(), o, metav1.ApplyOptions{FieldManager: "x", Force: true, DryRun: dry})
					if err != nil {
						t.Error(err)
					}
				}
			})
		}
		for _, o := range all {
			ch <- o
		}
		close(ch)
		wg.Wait()
		d := time.Since(start)
		t.Logf("%s conc=%d: %d objects in %s = %.0f/s", label, conc, len(all), d, float64(len(all))/d.Seconds())
	}
	for i, conc := range []int{16, 64, 16} {
		run("direct", fmt.Sprintf("d%d", i), nil, conc)
		run("dryrun", fmt.Sprintf("x%d", i), []string{"All"}, conc)
		run("dry+apply(dry)", fmt.Sprintf("y%d", i), []string{"All"}, conc)
		run("dry+apply(real)", fmt.Sprintf("y%d", i), nil, conc)
	}
}
