package e2e

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// creations records, in the order the API server made them (resource versions), the
// ConfigMaps and Jobs created in a namespace from now until stop.
type creations struct {
	stop func() []string
}

func record(t *testing.T, ns string) creations {
	t.Helper()
	d, err := dynamic.NewForConfig(env.kube.Config)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	type made struct {
		rv   int
		name string
	}
	got := make(chan made, 256)
	var watches []watch.Interface
	for _, gvr := range []schema.GroupVersionResource{{Version: "v1", Resource: "configmaps"}, {Group: "batch", Version: "v1", Resource: "jobs"}} {
		list, err := d.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		w, err := d.Resource(gvr).Namespace(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()}) // from now: not what is there
		require.NoError(t, err)
		watches = append(watches, w)
		go func() {
			for ev := range w.ResultChan() {
				if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type == watch.Added && u.GetName() != "kube-root-ca.crt" {
					rv, _ := strconv.Atoi(u.GetResourceVersion())
					got <- made{rv, u.GetKind() + "/" + u.GetName()}
				}
			}
		}()
	}
	return creations{stop: func() []string {
		time.Sleep(500 * time.Millisecond) // the watches catch up with what the step did
		cancel()
		for _, w := range watches {
			w.Stop()
		}
		var all []made
		for {
			select {
			case m := <-got:
				all = append(all, m)
				continue
			default:
			}
			break
		}
		slices.SortFunc(all, func(a, b made) int { return a.rv - b.rv })
		var names []string
		for _, m := range all {
			names = append(names, m.name)
		}
		return names
	}}
}

// present lists the ConfigMaps and Jobs in ns.
func present(t *testing.T, ns string) []string {
	t.Helper()
	var out []string
	cms, err := env.kube.Client.CoreV1().ConfigMaps(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	for _, c := range cms.Items {
		if c.Name != "kube-root-ca.crt" {
			out = append(out, "ConfigMap/"+c.Name)
		}
	}
	jobs, err := env.kube.Client.BatchV1().Jobs(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	for _, j := range jobs.Items {
		if j.DeletionTimestamp == nil {
			out = append(out, "Job/"+j.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestHooksAsHelmRunsThem: the same chart — hooks of every phase, weights and delete policies —
// installed, upgraded, rolled back and uninstalled by the Helm CLI in one namespace and by troupe
// in another, on the same cluster: after each step the same hook objects exist, and the objects
// were created in the same order.
func TestHooksAsHelmRunsThem(t *testing.T) {
	chart := filepath.Join(env.root, "test", "e2e", "testdata", "helm-hooks")
	helmNS, troupeNS := env.kube.Namespace(t), env.kube.Namespace(t)
	helm := helmCLI(t, helmNS)
	steps := []struct {
		name   string
		helm   []string
		troupe []string
	}{
		{"install", []string{"upgrade", "--install", "app", chart, "--set", "value=1"}, []string{"release", "app", chart, "--set", "value=1", "--wait"}},
		{"upgrade", []string{"upgrade", "--install", "app", chart, "--set", "value=2"}, []string{"release", "app", chart, "--set", "value=2", "--wait"}},
		{"rollback", []string{"rollback", "app", "1"}, []string{"rollback", "app", "1", "--wait"}},
		{"uninstall", []string{"uninstall", "app"}, []string{"uninstall", "app", "--wait"}},
	}
	for _, step := range steps {
		h := record(t, helmNS)
		helm(append(step.helm, "--wait", "--timeout", "2m")...)
		helmMade, helmThere := h.stop(), present(t, helmNS)

		tr := record(t, troupeNS)
		r := troupe(t, append(step.troupe, "-n", troupeNS)...)
		require.Equal(t, 0, r.code, "troupe %s: %s", step.name, r)
		troupeMade, troupeThere := tr.stop(), present(t, troupeNS)

		assert.Equal(t, helmMade, troupeMade, "%s: objects created, in order", step.name)
		assert.Equal(t, helmThere, troupeThere, "%s: objects there after", step.name)
		t.Logf("%s: made %v; there %v", step.name, helmMade, helmThere)
	}
}
