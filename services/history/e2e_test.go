package history_test

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/applier"
	"github.com/troupe-dev/troupe/services/health"
	"github.com/troupe-dev/troupe/services/renderer"
	"github.com/troupe-dev/troupe/test/cluster"
)

var kube *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &kube)) }

// startAll runs the renderer, the applier and the health watcher beside e's history, on the
// test's cluster: the whole choreography.
func (e *env) startAll() {
	e.t.Helper()
	r, err := renderer.New(e.t.Context(), e.js, renderer.Options{})
	require.NoError(e.t, err)
	natstest.Run(e.t, r)
	a, err := applier.New(e.t.Context(), e.js, kube.Config, applier.Options{LeaseTTL: 5 * time.Second})
	require.NoError(e.t, err)
	natstest.Run(e.t, a)
	hOpts := health.Options{}
	hOpts.Subscriber.AckWait = 5 * time.Second
	h, err := health.New(e.t.Context(), e.js, kube.Config, hOpts)
	require.NoError(e.t, err)
	natstest.Run(e.t, h)
}

func manifests(value, fault string) string {
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

// TestRollbackEndToEnd: the whole choreography on the cluster. v1 ready, v2 ready; a rollback to
// the previous ready revision puts v1's objects back (current = 1, no new number); v3 asks
// rollbackOnFailure and crash-loops: health fails it, history rolls back to 1 on its own, and
// v1's objects are back again.
func TestRollbackEndToEnd(t *testing.T) {
	e := newEnv(t)
	e.startAll()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "web"}
	ask := func(value, fault string, opts events.Options) {
		t.Helper()
		ev, err := events.NewEvent("troupe/test", events.TypeRequested, rel, events.Requested{
			Source: events.Source{Manifests: &events.ManifestsSource{YAML: manifests(value, fault)}}, Options: opts})
		require.NoError(t, err)
		e.publish(ev)
	}
	configValue := func() string {
		cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "config", metav1.GetOptions{})
		require.NoError(t, err)
		return cm.Data["value"]
	}
	wait := func(what string, ok func(*historyapi.View) bool) *historyapi.View {
		t.Helper()
		var v *historyapi.View
		deadline := time.Now().Add(90 * time.Second)
		for {
			var err error
			v, err = e.svc.View(t.Context(), rel)
			if err == nil && ok(v) {
				return v
			}
			if time.Now().After(deadline) {
				timeline, _ := json.MarshalIndent(v, "", "  ")
				t.Fatalf("%s: not after 90s; history has:\n%s", what, timeline)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	ask("one", "", events.Options{})
	wait("v1 ready", func(v *historyapi.View) bool { return v.Current == 1 })
	ask("two", "", events.Options{})
	wait("v2 ready", func(v *historyapi.View) bool { return v.Current == 2 })
	assert.Equal(t, "two", configValue())

	rb, err := events.NewEvent("troupe/test", events.TypeRollbackRequested, rel, events.RollbackRequested{})
	require.NoError(t, err)
	e.publish(rb)
	v := wait("rolled back to 1", func(v *historyapi.View) bool { return v.Current == 1 })
	assert.Equal(t, historyapi.StateRolledBack, v.Get(2).State)
	assert.Equal(t, "one", configValue(), "v1's objects are back")
	dep, err := kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "one", dep.Spec.Template.Annotations["value"])
	assert.Equal(t, "1", dep.Annotations["troupe.dev/revision"])

	ask("three", cluster.FaultCrashLoop, events.Options{RollbackOnFailure: true})
	v = wait("v3 failed and rolled back to 1", func(v *historyapi.View) bool {
		r := v.Get(3)
		return r != nil && r.State == historyapi.StateRolledBack && v.Current == 1
	})
	assert.Equal(t, 3, v.Revisions[len(v.Revisions)-1].Revision, "the request after a rollback is revision 3")
	assert.Equal(t, "crash_loop", v.Get(3).Reason)
	assert.Equal(t, events.StageHealth, v.Get(3).Stage)
	assert.Equal(t, 1, v.Get(3).RolledBackTo)
	assert.Equal(t, "one", configValue())
	require.Eventually(t, func() bool {
		d, err := kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 1 && d.Spec.Template.Annotations["value"] == "one"
	}, 60*time.Second, 100*time.Millisecond, "v1's Deployment is available again")
}
