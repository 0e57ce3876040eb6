package charts_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/test/cluster"
)

// TestChartOnTheCluster installs the chart with ./bin/helm on a local cluster (RBAC on, pods run
// by kwok) and proves each service's grants with `kubectl auth can-i --as` its account: what it
// needs, and nothing beside. Every object is valid, every pod Ready.
func TestChartOnTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts a cluster")
	}
	kube := cluster.ForTest(t)
	for _, ns := range []string{"troupe", "team-a", "team-b", "team-c"} {
		_, err := exec.Command(filepath.Join(root(t), "bin", "kubectl"), "--kubeconfig", kube.Kubeconfig, "create", "namespace", ns).CombinedOutput()
		require.NoError(t, err)
	}
	chart := chartCopy(t)
	values := filepath.Join(t.TempDir(), "values.yaml")
	require.NoError(t, os.WriteFile(values, []byte("namespaces: [team-a, team-b]\napplier: {clusterScoped: {enabled: true}}\n"), 0o644))
	out, err := helmCLI(t, "install", "troupe", chart, "-n", "troupe", "--kubeconfig", kube.Kubeconfig, "-f", values, "--wait", "--timeout", "3m")
	require.NoError(t, err, out)

	deps, err := kube.Client.AppsV1().Deployments("troupe").List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, deps.Items, 4)
	for _, d := range deps.Items {
		assert.Equal(t, *d.Spec.Replicas, d.Status.ReadyReplicas, "%s: every pod Ready", d.Name)
	}
	sts, err := kube.Client.AppsV1().StatefulSets("troupe").Get(t.Context(), "troupe-nats", metav1.GetOptions{})
	require.NoError(t, err)
	assert.EqualValues(t, 3, sts.Status.ReadyReplicas, "three NATS servers")

	sa := func(svc string) string { return "system:serviceaccount:troupe:troupe-" + svc }
	deployer := func(ns string) string { return "system:serviceaccount:" + ns + ":troupe-deployer" }
	for _, c := range []struct {
		as, verb, what, ns string
		want               bool
	}{
		// renderer: discovery of CRDs and APIServices, reads of valuesFrom and lookup where releases go
		{sa("renderer"), "watch", "customresourcedefinitions.apiextensions.k8s.io", "", true},
		{sa("renderer"), "list", "apiservices.apiregistration.k8s.io", "", true},
		{sa("renderer"), "get", "secrets", "team-a", true},
		{sa("renderer"), "list", "configmaps", "team-b", true},
		{sa("renderer"), "get", "secrets", "team-c", false},
		{sa("renderer"), "get", "secrets", "kube-system", false},
		{sa("renderer"), "create", "configmaps", "team-a", false},
		{sa("renderer"), "delete", "customresourcedefinitions.apiextensions.k8s.io", "", false},
		// applier: impersonates one account per namespace, gets namespaces, nothing else itself
		{sa("applier"), "impersonate", "serviceaccounts/troupe-deployer", "team-a", true},
		{sa("applier"), "impersonate", "serviceaccounts/troupe-deployer", "team-b", true},
		{sa("applier"), "impersonate", "serviceaccounts/default", "team-a", false},
		{sa("applier"), "impersonate", "serviceaccounts/troupe-deployer", "team-c", false},
		{sa("applier"), "impersonate", "serviceaccounts/troupe-applier", "troupe", false},
		{sa("applier"), "impersonate", "users", "", false},
		{sa("applier"), "get", "namespaces", "", true},
		{sa("applier"), "create", "deployments.apps", "team-a", false},
		{sa("applier"), "get", "secrets", "team-a", false},
		{sa("applier"), "create", "customresourcedefinitions.apiextensions.k8s.io", "", false},
		// what applies run as: admin of their own namespace, cluster-scoped kinds by opt-in
		{deployer("team-a"), "create", "deployments.apps", "team-a", true},
		{deployer("team-a"), "create", "roles.rbac.authorization.k8s.io", "team-a", true},
		{deployer("team-a"), "create", "deployments.apps", "team-b", false},
		{deployer("team-a"), "create", "customresourcedefinitions.apiextensions.k8s.io", "", true},
		{deployer("team-a"), "create", "nodes", "", false},
		// health: watches where releases go
		{sa("health"), "watch", "deployments.apps", "team-a", true},
		{sa("health"), "list", "pods", "team-b", true},
		{sa("health"), "watch", "deployments.apps", "team-c", false},
		{sa("health"), "update", "deployments.apps", "team-a", false},
		{sa("health"), "delete", "pods", "team-a", false},
		// history: nothing
		{sa("history"), "get", "pods", "troupe", false},
		{sa("history"), "list", "secrets", "team-a", false},
		{sa("history"), "get", "namespaces", "", false},
	} {
		args := []string{"--kubeconfig", kube.Kubeconfig, "auth", "can-i", c.verb, c.what, "--as", c.as}
		if c.ns != "" {
			args = append(args, "-n", c.ns)
		}
		b, _ := exec.Command(filepath.Join(root(t), "bin", "kubectl"), args...).Output() // exit 1 for "no"
		got := strings.TrimSpace(string(b))
		assert.Equal(t, map[bool]string{true: "yes", false: "no"}[c.want], got, "%s may %s %s in %q", c.as, c.verb, c.what, c.ns)
	}

	// The history pods mount no token: they cannot reach the API as anybody.
	pods, err := kube.Client.CoreV1().Pods("troupe").List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=history"})
	require.NoError(t, err)
	require.NotEmpty(t, pods.Items)
	for _, p := range pods.Items {
		for _, v := range p.Spec.Volumes {
			assert.Nil(t, v.Projected, "%s: no service account token volume", p.Name)
		}
	}
}
