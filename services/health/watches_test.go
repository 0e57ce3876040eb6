package health

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
)

// What the watches keep of a workload (typed, without its pod template or managed fields), read
// back as health reads it, gives the same health as the whole object, in every state a rollout
// passes through.
func TestSlimWorkloadsKeepTheirHealth(t *testing.T) {
	meta := func(gen int64) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: "w", Namespace: "ns", Generation: gen, UID: "u1",
			Labels:        map[string]string{"app.kubernetes.io/managed-by": "troupe", "helm.sh/chart": "podinfo-6.9.0"},
			Annotations:   map[string]string{"deployment.kubernetes.io/revision": "2", "meta.helm.sh/release-name": "w"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "troupe", Operation: metav1.ManagedFieldsOperationApply}}}
	}
	template := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "w"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "ghcr.io/stefanprodan/podinfo:6.9.0"}}},
	}
	progressing := func(reason string) []appsv1.DeploymentCondition {
		return []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: reason}}
	}
	objects := map[string]runtime.Object{
		"deployment rolling out": &appsv1.Deployment{ObjectMeta: meta(2), Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Template: template},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 1, ReadyReplicas: 2, AvailableReplicas: 2, Conditions: progressing("ReplicaSetUpdated")}},
		"deployment not observed": &appsv1.Deployment{ObjectMeta: meta(3), Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Template: template},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2}},
		"deployment ready": &appsv1.Deployment{ObjectMeta: meta(2), Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Template: template},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 2, AvailableReplicas: 2,
				Conditions: append(progressing("NewReplicaSetAvailable"), appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue})}},
		"deployment past its progress deadline": &appsv1.Deployment{ObjectMeta: meta(2), Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2), Template: template},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 1, Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}}},
		"statefulset partitioned": &appsv1.StatefulSet{ObjectMeta: meta(1), Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3), Template: template,
			UpdateStrategy:       appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](2)}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}}}},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: 3, ReadyReplicas: 3, CurrentReplicas: 2, UpdatedReplicas: 1, CurrentRevision: "a", UpdateRevision: "b"}},
		"statefulset rolling": &appsv1.StatefulSet{ObjectMeta: meta(1), Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](3), Template: template},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: 3, ReadyReplicas: 2, CurrentReplicas: 2, UpdatedReplicas: 1, CurrentRevision: "a", UpdateRevision: "b"}},
		"daemonset scheduling": &appsv1.DaemonSet{ObjectMeta: meta(1), Spec: appsv1.DaemonSetSpec{Template: template},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, UpdatedNumberScheduled: 1, NumberAvailable: 1, NumberReady: 1}},
		"daemonset ready": &appsv1.DaemonSet{ObjectMeta: meta(1), Spec: appsv1.DaemonSetSpec{Template: template},
			Status: appsv1.DaemonSetStatus{ObservedGeneration: 1, DesiredNumberScheduled: 3, CurrentNumberScheduled: 3, UpdatedNumberScheduled: 3, NumberAvailable: 3, NumberReady: 3}},
	}
	seen := map[string]bool{}
	for name, obj := range objects {
		t.Run(name, func(t *testing.T) {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj.DeepCopyObject())
			require.NoError(t, err)
			whole := &unstructured.Unstructured{Object: m}
			var kind string
			switch obj.(type) {
			case *appsv1.Deployment:
				kind = "Deployment"
			case *appsv1.StatefulSet:
				kind = "StatefulSet"
			case *appsv1.DaemonSet:
				kind = "DaemonSet"
			}
			whole.SetAPIVersion("apps/v1")
			whole.SetKind(kind)

			kept, err := keep(obj.DeepCopyObject())
			require.NoError(t, err)
			assert.IsType(t, obj, kept, "kept typed")
			slim, err := readable(kept)
			require.NoError(t, err)
			assert.Equal(t, kind, slim.GetKind())
			_, hasTemplate, _ := unstructured.NestedFieldNoCopy(slim.Object, "spec", "template")
			_, hasClaims, _ := unstructured.NestedFieldNoCopy(slim.Object, "spec", "volumeClaimTemplates")
			assert.False(t, hasTemplate || hasClaims, "no pod or claim templates kept")
			assert.Empty(t, slim.GetManagedFields())
			assert.Empty(t, slim.GetLabels())
			assert.Equal(t, map[string]string{"deployment.kubernetes.io/revision": "2"}, slim.GetAnnotations(), "the one annotation health reads")

			want, got := compute(whole, nil, false), compute(slim, nil, false)
			assert.Equal(t, want, got)
			seen[string(want.Status)] = true
		})
	}
	assert.Len(t, seen, 3, "the cases cover InProgress, Current and Failed: %v", seen)
}
