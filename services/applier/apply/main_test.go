package apply_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/services/renderer/render"
	"github.com/troupe-dev/troupe/test/cluster"
)

var kube *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &kube)) }

// fixtures is the shared fixtures directory beside the repository.
func fixtures(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	require.NoError(t, err)
	for d := wd; filepath.Dir(d) != d; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return filepath.Join(d, "..", "shared", "fixtures")
		}
	}
	t.Fatal("no go.work above the test")
	return ""
}

// renderChart renders a fixture chart as the renderer does, into the release's namespace, and
// returns the bundle's objects.
func renderChart(t testing.TB, rel events.Release, revision int, chart string, set ...string) []map[string]any {
	t.Helper()
	return renderBundle(t, rel, revision, chart, set...).Objects
}

// renderBundle renders a fixture chart as the renderer does and returns the bundle, hooks too.
func renderBundle(t testing.TB, rel events.Release, revision int, chart string, set ...string) *events.Bundle {
	t.Helper()
	r, err := render.New(render.Options{CacheSize: -1, SourceRoots: []string{fixtures(t)}})
	require.NoError(t, err)
	out, err := r.Render(context.Background(), render.Input{Release: rel, Revision: revision, Request: events.Requested{
		Source: events.Source{Helm: &events.HelmSource{Path: filepath.Join(fixtures(t), chart)}}, Set: set}})
	require.NoError(t, err)
	b, err := events.ReadBundle(out.Bundle)
	require.NoError(t, err)
	return b
}

func newApplier(t testing.TB, o apply.Options) *apply.Applier {
	t.Helper()
	a, err := apply.New(kube.Config, o)
	require.NoError(t, err)
	return a
}

func dyn(t testing.TB) dynamic.Interface {
	t.Helper()
	d, err := dynamic.NewForConfig(kube.Config)
	require.NoError(t, err)
	return d
}

var (
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	configmaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	services    = schema.GroupVersionResource{Version: "v1", Resource: "services"}
)

func get(t testing.TB, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u, err := dyn(t).Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return u
}

func configMap(ns, name string, data map[string]any) map[string]any {
	m := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": name}, "data": data}
	if ns != "" {
		m["metadata"].(map[string]any)["namespace"] = ns
	}
	return m
}

type (
	corev1ConfigMap      = corev1.ConfigMap
	corev1ServiceAccount = corev1.ServiceAccount
)

// reasonOf is the reason code of an apply error, "" for another error.
func reasonOf(err error) string {
	if e, ok := errors.AsType[*apply.Error](err); ok {
		return e.Reason
	}
	return ""
}
