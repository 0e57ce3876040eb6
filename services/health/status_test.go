package health

import (
	"testing"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
)

func object(t *testing.T, y string) *unstructured.Unstructured {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(j); err != nil { // integers as int64, as from the API server
		t.Fatal(err)
	}
	return u
}

// The rules troupe adds to kstatus: a running Job is not ready, a LoadBalancer Service waits for
// its ingress only when the release asks (options.waitLoadBalancer), a missing object is NotFound.
func TestComputeBeyondKstatus(t *testing.T) {
	running := object(t, `{apiVersion: batch/v1, kind: Job, metadata: {name: j, generation: 1}, spec: {}, status: {startTime: "2026-01-01T00:00:00Z", active: 1}}`)
	assert.Equal(t, events.StatusInProgress, compute(running, nil, false).Status, "kstatus calls a running Job Current")
	complete := object(t, `{apiVersion: batch/v1, kind: Job, metadata: {name: j, generation: 1}, spec: {}, status: {startTime: "2026-01-01T00:00:00Z", succeeded: 1, conditions: [{type: Complete, status: "True"}]}}`)
	assert.Equal(t, events.StatusCurrent, compute(complete, nil, false).Status)
	jobFailed := object(t, `{apiVersion: batch/v1, kind: Job, metadata: {name: j, generation: 1}, spec: {}, status: {failed: 6, conditions: [{type: Failed, status: "True"}]}}`)
	assert.Equal(t, result{Status: events.StatusFailed, Message: "Job Failed. failed: 6/1", Reason: ReasonJobFailed}, compute(jobFailed, nil, false))

	lb := object(t, `{apiVersion: v1, kind: Service, metadata: {name: s}, spec: {type: LoadBalancer, clusterIP: 10.0.0.9}}`)
	assert.Equal(t, events.StatusCurrent, compute(lb, nil, false).Status, "a cluster IP is enough, as under Helm 4")
	assert.Equal(t, events.StatusInProgress, compute(lb, nil, true).Status, "waitLoadBalancer: the ingress too")
	lb.Object["status"] = map[string]any{"loadBalancer": map[string]any{"ingress": []any{map[string]any{"ip": "1.2.3.4"}}}}
	assert.Equal(t, events.StatusCurrent, compute(lb, nil, true).Status)
	cluster := object(t, `{apiVersion: v1, kind: Service, metadata: {name: s}, spec: {clusterIP: 10.0.0.9}}`)
	assert.Equal(t, events.StatusCurrent, compute(cluster, nil, false).Status)

	assert.Equal(t, events.StatusNotFound, compute(nil, nil, false).Status)
	cm := object(t, `{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}`)
	assert.Equal(t, events.StatusCurrent, compute(cm, nil, false).Status, "no notion of readiness: Current when it exists")
}

// A workload's pods fail it fast, but only those of its current revision, and not once it is
// Current.
func TestPodsFailWorkloadsFast(t *testing.T) {
	dep := object(t, `{apiVersion: apps/v1, kind: Deployment, metadata: {name: web, uid: d1, generation: 2, annotations: {deployment.kubernetes.io/revision: "2"}},
		spec: {replicas: 1, progressDeadlineSeconds: 600}, status: {observedGeneration: 2, replicas: 1, updatedReplicas: 1}}`)
	oldRS := object(t, `{apiVersion: apps/v1, kind: ReplicaSet, metadata: {name: web-a, uid: r1, ownerReferences: [{uid: d1}], annotations: {deployment.kubernetes.io/revision: "1"}}}`)
	newRS := object(t, `{apiVersion: apps/v1, kind: ReplicaSet, metadata: {name: web-b, uid: r2, ownerReferences: [{uid: d1}], annotations: {deployment.kubernetes.io/revision: "2"}}}`)
	oldPod := object(t, `{apiVersion: v1, kind: Pod, metadata: {name: web-a-1, ownerReferences: [{uid: r1}]}, status: {phase: Running, containerStatuses: [{name: app, state: {waiting: {reason: CrashLoopBackOff}}}]}}`)
	newPod := object(t, `{apiVersion: v1, kind: Pod, metadata: {name: web-b-1, ownerReferences: [{uid: r2}]}, status: {phase: Pending, containerStatuses: [{name: app, state: {waiting: {reason: ErrImagePull, message: "not found"}}}]}}`)
	all := []*unstructured.Unstructured{oldRS, newRS, oldPod, newPod}
	byOwner := func(uid string) []*unstructured.Unstructured {
		var out []*unstructured.Unstructured
		for _, o := range all {
			for _, ref := range o.GetOwnerReferences() {
				if string(ref.UID) == uid {
					out = append(out, o)
				}
			}
		}
		return out
	}
	pods := podsOf(dep, byOwner)
	assert.Equal(t, []*unstructured.Unstructured{newPod}, pods, "the old revision's crash-looping pod is not the new one's")
	assert.Equal(t, result{Status: events.StatusFailed, Reason: ReasonImagePull, Message: "pod web-b-1: container app: ErrImagePull: not found"}, compute(dep, pods, false))

	all = all[:3] // the new pod gone: only the old crash-looping one is left
	assert.Equal(t, events.StatusInProgress, compute(dep, podsOf(dep, byOwner), false).Status)

	// A pod the scheduler cannot place says why.
	pending := object(t, `{apiVersion: v1, kind: Pod, metadata: {name: web-b-2, ownerReferences: [{uid: r2}]}, status: {phase: Pending,
		conditions: [{type: PodScheduled, status: "False", reason: Unschedulable, message: "0/1 nodes are available: 1 Insufficient ephemeral-storage."}]}}`)
	all = []*unstructured.Unstructured{oldRS, newRS, pending}
	got := compute(dep, podsOf(dep, byOwner), false)
	assert.Equal(t, events.StatusInProgress, got.Status)
	assert.Contains(t, got.Message, "; pod web-b-2: Unschedulable: 0/1 nodes are available: 1 Insufficient ephemeral-storage.")

	// A rollback just applied: the controller has not observed generation 3 yet, so the revision
	// annotation still names the crash-looping revision, whose pods are not the rollback's.
	all = []*unstructured.Unstructured{oldRS, newRS, oldPod, newPod}
	dep.SetGeneration(3)
	assert.Empty(t, podsOf(dep, byOwner))
	assert.Equal(t, events.StatusInProgress, compute(dep, podsOf(dep, byOwner), false).Status)
}

// TestStatusWordsAreKstatus: the statuses health publishes are the events catalog's words, and
// those are kstatus's own.
func TestStatusWordsAreKstatus(t *testing.T) {
	for want, got := range map[status.Status]string{
		status.CurrentStatus: events.StatusCurrent, status.InProgressStatus: events.StatusInProgress,
		status.FailedStatus: events.StatusFailed, status.TerminatingStatus: events.StatusTerminating,
		status.NotFoundStatus: events.StatusNotFound, status.UnknownStatus: events.StatusUnknown,
	} {
		assert.Equal(t, string(want), got)
	}
}
