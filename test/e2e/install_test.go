package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// installed checks troupe's installation in ns: every Deployment with each of its replicas Ready,
// the three NATS servers, the provisioning Job of revision complete.
func installed(t *testing.T, ns, name string, revision int) {
	t.Helper()
	kube := env.kube.Client
	deps, err := kube.AppsV1().Deployments(ns).List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, deps.Items, 4, "the four services")
	for _, d := range deps.Items {
		assert.Equal(t, *d.Spec.Replicas, d.Status.ReadyReplicas, "%s: every replica Ready", d.Name)
	}
	sts, err := kube.AppsV1().StatefulSets(ns).Get(t.Context(), name+"-nats", metav1.GetOptions{})
	require.NoError(t, err)
	assert.EqualValues(t, 3, sts.Status.ReadyReplicas, "three NATS servers")
	job, err := kube.BatchV1().Jobs(ns).Get(t.Context(), name+"-provision-"+strconv.Itoa(revision), metav1.GetOptions{})
	require.NoError(t, err)
	assert.EqualValues(t, 1, job.Status.Succeeded, "the provisioning Job of revision %d ran", revision)
}

// TestInstall: `troupe install` renders troupe's own chart with troupe's renderer and applies it
// with troupe's apply library, waits until it is ready, refuses a second install, upgrades with
// --upgrade (pruning what the new values no longer make), and its --dry-run output applies to the
// cluster as it is.
func TestInstall(t *testing.T) {
	ns, apps, keys := "troupe-install", "troupe-install-apps", t.TempDir()
	t.Cleanup(func() {
		for _, n := range []string{ns, apps} {
			_ = env.kube.Client.CoreV1().Namespaces().Delete(t.Context(), n, metav1.DeleteOptions{})
		}
	})
	args := []string{"-n", ns, "--kubeconfig", env.kube.Kubeconfig, "--keys", keys, "--timeout", "3m", "--set", "namespaces={" + apps + "}"}
	r := troupe(t, append([]string{"install"}, args...)...)
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, ns+"/troupe: revision 1 ready")
	assert.Contains(t, r.stdout, "kubectl -n "+ns+" port-forward svc/troupe-nats 4222")
	installed(t, ns, "troupe", 1)
	_, err := env.kube.Client.CoreV1().ServiceAccounts(apps).Get(t.Context(), "troupe-deployer", metav1.GetOptions{})
	require.NoError(t, err, "the namespace releases go to is made, with the account applies run as")
	creds, err := os.ReadFile(filepath.Join(keys, "cli.creds"))
	require.NoError(t, err, "the CLI's credentials are written beside the keys")
	secret, err := env.kube.Client.CoreV1().Secrets(ns).Get(t.Context(), "troupe-cli-creds", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, string(creds), string(secret.Data["cli.creds"]), "the CLI holds the credentials the cluster's Secret holds")

	r = troupe(t, append([]string{"install"}, args...)...)
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "troupe is installed in "+ns+" (revision 1): upgrade it with --upgrade")

	r = troupe(t, append([]string{"install", "--upgrade", "--set", "podDisruptionBudget.enabled=false", "--set", "history.replicas=1"}, args...)...)
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, ns+"/troupe: revision 2 applied")
	assert.Regexp(t, `[1-9][0-9]* pruned`, r.stdout)
	installed(t, ns, "troupe", 2)
	pdbs, err := env.kube.Client.PolicyV1().PodDisruptionBudgets(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=troupe"})
	require.NoError(t, err)
	assert.Empty(t, pdbs.Items, "the PDBs the new values no longer make are pruned")
	_, err = env.kube.Client.BatchV1().Jobs(ns).Get(t.Context(), "troupe-provision-1", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "revision 1's Job is pruned: %v", err)
	h, err := env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "troupe-history", metav1.GetOptions{})
	require.NoError(t, err)
	assert.EqualValues(t, 1, *h.Spec.Replicas)

	r = troupe(t, "install", "--upgrade", "-n", "nowhere", "--kubeconfig", env.kube.Kubeconfig, "--keys", keys)
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "--upgrade: troupe is not installed in nowhere")
	// Other keys than those the installed NATS trusts would lock every service out: refused.
	r = troupe(t, append([]string{"install", "--upgrade"}, append(args[:4:4], "--keys", t.TempDir(), "--set", "namespaces={"+apps+"}")...)...)
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "not the keys the installed NATS trusts")
	r = troupe(t, "install", "-n", ns, "--set", "logLevel=loud", "--dry-run", "--keys", keys)
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "logLevel")

	// --dry-run reads no cluster; what it prints applies with kubectl as it is (another release
	// name: the cluster-scoped roles are named after it).
	dry := "troupe-dry"
	t.Cleanup(func() {
		_ = env.kube.Client.CoreV1().Namespaces().Delete(t.Context(), dry, metav1.DeleteOptions{})
	})
	r = troupe(t, "install", "--dry-run", "-n", dry, "--name", "troupe-dry", "--keys", keys, "--kubeconfig", "/nonexistent", "--set", "namespaces={"+dry+"}")
	require.Equal(t, 0, r.code, r)
	assert.True(t, strings.HasPrefix(r.stdout, "---\napiVersion: v1\nkind: Namespace\n"), "the Namespace first")
	kubectl := exec.Command(filepath.Join(env.root, "bin", "kubectl"), "--kubeconfig", env.kube.Kubeconfig, "apply", "--server-side", "-f", "-")
	kubectl.Stdin = bytes.NewBufferString(r.stdout)
	out, err := kubectl.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Eventually(t, func() bool {
		deps, err := env.kube.Client.AppsV1().Deployments(dry).List(t.Context(), metav1.ListOptions{})
		if err != nil || len(deps.Items) != 4 {
			return false
		}
		for _, d := range deps.Items {
			if d.Status.ReadyReplicas != *d.Spec.Replicas {
				return false
			}
		}
		job, err := env.kube.Client.BatchV1().Jobs(dry).Get(t.Context(), "troupe-dry-provision-1", metav1.GetOptions{})
		return err == nil && job.Status.Succeeded == 1
	}, 3*time.Minute, time.Second, "the --dry-run output's services become Ready, its Job completes")
	installed(t, dry, "troupe-dry", 1)
}
