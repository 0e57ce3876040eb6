package e2e

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestChartHooks: a chart's hook Jobs run across the services as Helm runs them, each phase on
// the stream: the pre-install Job before the objects (the applier), the post-install Job once
// every object is ready (the health watcher's release.settled, then the applier), and only
// then release.ready; `--wait`, `troupe trace` and `troupe history` show the phases. An upgrade
// whose post-upgrade hook fails ends failed at stage hook, naming the hook.
func TestChartHooks(t *testing.T) {
	ns := env.kube.Namespace(t)
	chart := filepath.Join(env.root, "test", "e2e", "testdata", "hooks")
	r := troupe(t, "release", "hooks", chart, "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	for _, s := range []string{"hooked       pre-install: Job/hooks-pre", "settled      1 objects ready; post-install hooks due",
		"hooked       post-install: Job/hooks-post", "ready "} {
		assert.Contains(t, r.stdout, s)
	}
	for _, job := range []string{"hooks-pre", "hooks-post"} {
		j, err := env.kube.Client.BatchV1().Jobs(ns).Get(t.Context(), job, metav1.GetOptions{})
		require.NoError(t, err, job)
		assert.NotNil(t, j.Status.CompletionTime, "%s ran to completion", job)
	}

	tr := traceOf(t, "hooks", ns)
	assert.Equal(t, []string{"release.requested troupe/cli", "release.rendered troupe/renderer", "release.hooked troupe/applier",
		"release.applied troupe/applier", "release.settled troupe/health", "release.hooked troupe/applier", "release.ready troupe/health"}, tr.seen)
	assert.Equal(t, []string{"render", "hook", "apply", "health", "hook", "health"}, tr.stages)
	assert.Equal(t, "ready", tr.Ended)

	r = troupe(t, "history", "hooks", "-n", ns, "-o", "json")
	require.Equal(t, 0, r.code, r)
	var revs []struct {
		Revision int `json:"revision"`
		Hooks    []struct {
			Phase string `json:"phase"`
			Hooks []struct {
				Name   string `json:"name"`
				Result string `json:"result"`
			} `json:"hooks"`
		} `json:"hooks"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &revs), r.stdout)
	require.Len(t, revs, 1)
	var phases []string
	for _, h := range revs[0].Hooks {
		require.Len(t, h.Hooks, 1)
		phases = append(phases, h.Phase+" "+h.Hooks[0].Name+" "+h.Hooks[0].Result)
	}
	assert.Equal(t, []string{"pre-install hooks-pre succeeded", "post-install hooks-post succeeded"}, phases)

	r = troupe(t, "release", "hooks", chart, "-n", ns, "--set", "failPost=true", "--wait")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stdout, "hooked       pre-upgrade: Job/hooks-pre")
	assert.Contains(t, r.stderr, "failed at hook (hook_failed)")
	assert.Contains(t, r.stderr, "hook hooks-post: the job failed")
}

// TestFixtureChartsBecomeReady: real charts written elsewhere install with --wait and end ready on
// the local cluster — Bitnami's postgresql (a StatefulSet whose claims the default StorageClass
// binds, containers requesting ephemeral-storage), argo-cd (CRDs in its templates, the
// redis-secret-init pre-install hooks), nats (a StatefulSet and its headless Service), nack (its
// CRDs in crds/ and the JetStream controller).
func TestFixtureChartsBecomeReady(t *testing.T) {
	fixtures := filepath.Join(env.root, "..", "shared", "fixtures")
	for name, chart := range map[string]string{
		"pg":     "postgresql/postgresql",
		"argocd": "argo-cd/argo-cd",
		"nats":   "nats/helm/charts/nats",
		"nack":   "nats/helm/charts/nack",
	} {
		t.Run(name, func(t *testing.T) {
			ns := env.kube.Namespace(t)
			r := troupe(t, "release", name, filepath.Join(fixtures, chart), "-n", ns, "--wait", "--timeout", "3m")
			require.Equal(t, 0, r.code, r)
			assert.Contains(t, r.stdout, "ready ")
		})
	}
}
