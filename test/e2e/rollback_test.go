package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/test/cluster"
)

// webManifests is a ConfigMap holding value and a Deployment whose pods carry it, and fault
// (cluster.FaultAnnotation) when not empty.
func webManifests(value, fault string) string {
	annotations := fmt.Sprintf("value: %q", value)
	if fault != "" {
		annotations += fmt.Sprintf(", %s: %q", cluster.FaultAnnotation, fault)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: ConfigMap
metadata: {name: config}
data: {value: %q}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {%s}
    spec:
      containers: [{name: web, image: nginx}]
`, value, annotations)
}

// waitHistory polls `troupe history` until ok holds of the release's revisions, and returns them.
func waitHistory(t *testing.T, name, ns, what string, ok func([]revision) bool) []revision {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		r := troupe(t, "history", name, "-n", ns, "-o", "json")
		var revs []revision
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &revs) == nil && ok(revs) {
			return revs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 90s; history has:\n%s", what, r)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func get(revs []revision, n int) *revision {
	for i := range revs {
		if revs[i].Revision == n {
			return &revs[i]
		}
	}
	return nil
}

// TestRollbackPutsTheObjectsBack: v1 ready, v2 ready; a rollback to the previous ready revision
// puts v1's objects back (current = 1, no new number); v3 asks rollbackOnFailure and
// crash-loops: health fails it, history rolls back to 1 on its own, and v1's objects are back
// again.
func TestRollbackPutsTheObjectsBack(t *testing.T) {
	ns := env.kube.Namespace(t)
	dir := t.TempDir()
	ask := func(value, fault string, flags ...string) {
		t.Helper()
		path := filepath.Join(dir, value+".yaml")
		require.NoError(t, os.WriteFile(path, []byte(webManifests(value, fault)), 0o644))
		r := troupe(t, append([]string{"release", "web", path, "-n", ns}, flags...)...)
		require.Equal(t, 0, r.code, r)
	}
	configValue := func() string {
		cm, err := env.kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "config", metav1.GetOptions{})
		require.NoError(t, err)
		return cm.Data["value"]
	}

	ask("one", "")
	waitHistory(t, "web", ns, "v1 ready", func(revs []revision) bool { return current(revs) == 1 })
	ask("two", "")
	waitHistory(t, "web", ns, "v2 ready", func(revs []revision) bool { return current(revs) == 2 })
	assert.Equal(t, "two", configValue())

	r := troupe(t, "rollback", "web", "-n", ns)
	require.Equal(t, 0, r.code, r)
	revs := waitHistory(t, "web", ns, "rolled back to 1", func(revs []revision) bool { return current(revs) == 1 })
	assert.Equal(t, "rolled-back", get(revs, 2).State)
	assert.Equal(t, "one", configValue(), "v1's objects are back")
	dep, err := env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "one", dep.Spec.Template.Annotations["value"])
	assert.Equal(t, "1", dep.Annotations["troupe.dev/revision"])

	ask("three", cluster.FaultCrashLoop, "--rollback-on-failure")
	revs = waitHistory(t, "web", ns, "v3 failed and rolled back to 1", func(revs []revision) bool {
		r := get(revs, 3)
		return r != nil && r.State == "rolled-back" && current(revs) == 1
	})
	assert.Equal(t, 3, revs[len(revs)-1].Revision, "the request after a rollback is revision 3")
	assert.Equal(t, "crash_loop", get(revs, 3).Reason)
	assert.Equal(t, "health", get(revs, 3).Stage)
	assert.Equal(t, 1, get(revs, 3).RolledBackTo)
	assert.Equal(t, "one", configValue())
	require.Eventually(t, func() bool {
		d, err := env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 1 && d.Spec.Template.Annotations["value"] == "one"
	}, 60*time.Second, 100*time.Millisecond, "v1's Deployment is available again")
}
