package health

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/troupe-dev/troupe/events"
)

// Reasons a revision fails its health stage with (release.failed, stage health).
const (
	ReasonCrashLoop        = "crash_loop"
	ReasonImagePull        = "image_pull"
	ReasonContainerConfig  = "container_config"
	ReasonJobFailed        = "job_failed"
	ReasonProgressDeadline = "progress_deadline_exceeded"
	ReasonObjectFailed     = "object_failed"
	ReasonTimeout          = "timeout"
)

// result is one object's health: a kstatus status, a message for people and, when Failed, the
// reason code the revision fails with.
type result struct {
	Status, Message, Reason string
}

// waitingFailures are the container waiting reasons that fail a revision at once: the kubelet
// retries them with growing back-off, but they do not mend on their own.
var waitingFailures = map[string]string{
	"CrashLoopBackOff":           ReasonCrashLoop,
	"ImagePullBackOff":           ReasonImagePull,
	"ErrImagePull":               ReasonImagePull,
	"InvalidImageName":           ReasonImagePull,
	"ErrImageNeverPull":          ReasonImagePull,
	"CreateContainerConfigError": ReasonContainerConfig,
	"CreateContainerError":       ReasonContainerConfig,
}

// compute is obj's health: kstatus (the library Flux and Helm 4 wait with), plus what troupe
// waits for beyond it — a Job complete (kstatus calls a running Job Current), a LoadBalancer
// Service with an ingress when waitLB (options.waitLoadBalancer; else a cluster IP is enough, as
// under Helm 4) — and fails fast on: a pod of the workload that crash-loops or cannot pull its
// image (pods are those of the workload's current revision, see podsOf). A workload still in
// progress says why its pods wait when the scheduler said (Unschedulable: 0/1 nodes are
// available: …). obj nil is NotFound.
func compute(obj *unstructured.Unstructured, pods []*unstructured.Unstructured, waitLB bool) result {
	if obj == nil {
		return result{Status: events.StatusNotFound, Message: "not found"}
	}
	res, err := status.Compute(obj)
	if err != nil {
		return result{Status: events.StatusUnknown, Message: err.Error()}
	}
	r := result{Status: string(res.Status), Message: res.Message}
	gk := obj.GroupVersionKind().GroupKind()
	switch {
	case gk.Group == "batch" && gk.Kind == "Job":
		if r.Status == events.StatusFailed {
			r.Reason = ReasonJobFailed
		} else if r.Status == events.StatusCurrent && !hasCondition(obj, "Complete") {
			r.Status = events.StatusInProgress
			r.Message = "Job not complete: " + res.Message
		}
	case gk.Group == "" && gk.Kind == "Service":
		if t, _, _ := unstructured.NestedString(obj.Object, "spec", "type"); t == "LoadBalancer" && r.Status == events.StatusCurrent && waitLB {
			if ingress, _, _ := unstructured.NestedSlice(obj.Object, "status", "loadBalancer", "ingress"); len(ingress) == 0 {
				r.Status, r.Message = events.StatusInProgress, "waiting for the load balancer's ingress"
			}
		}
	case gk.Group == "apps" && gk.Kind == "Deployment":
		if r.Status == events.StatusFailed {
			r.Reason = ReasonProgressDeadline
		}
	case gk.Group == "" && gk.Kind == "Pod":
		pods = []*unstructured.Unstructured{obj}
	}
	if r.Status != events.StatusCurrent && r.Status != events.StatusFailed {
		if reason, msg := failingPod(pods); reason != "" {
			return result{Status: events.StatusFailed, Message: msg, Reason: reason}
		}
		if why := unschedulable(pods); why != "" {
			r.Message += "; " + why
		}
	}
	if r.Status == events.StatusFailed && r.Reason == "" {
		r.Reason = ReasonObjectFailed
	}
	return r
}

// failingPod finds the first pod (by name) with a container waiting for a reason that does not
// mend on its own, and says which pod, container and reason.
func failingPod(pods []*unstructured.Unstructured) (reason, message string) {
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b *unstructured.Unstructured) int { return strings.Compare(a.GetName(), b.GetName()) })
	for _, p := range sorted {
		if p.GetDeletionTimestamp() != nil {
			continue
		}
		for _, field := range []string{"initContainerStatuses", "containerStatuses"} {
			statuses, _, _ := unstructured.NestedSlice(p.Object, "status", field)
			for _, s := range statuses {
				cs, _ := s.(map[string]any)
				why, _, _ := unstructured.NestedString(cs, "state", "waiting", "reason")
				code, ok := waitingFailures[why]
				if !ok {
					continue
				}
				name, _, _ := unstructured.NestedString(cs, "name")
				msg := fmt.Sprintf("pod %s: container %s: %s", p.GetName(), name, why)
				if detail, _, _ := unstructured.NestedString(cs, "state", "waiting", "message"); detail != "" {
					msg += ": " + detail
				}
				return code, msg
			}
		}
	}
	return "", ""
}

// unschedulable says why the first pod (by name) the scheduler could not place waits: its
// PodScheduled condition's reason and message (an unbound PersistentVolumeClaim, "0/1 nodes are
// available: 1 Insufficient ephemeral-storage"); "" when none waits so.
func unschedulable(pods []*unstructured.Unstructured) string {
	sorted := slices.Clone(pods)
	slices.SortFunc(sorted, func(a, b *unstructured.Unstructured) int { return strings.Compare(a.GetName(), b.GetName()) })
	for _, p := range sorted {
		conds, _, _ := unstructured.NestedSlice(p.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "PodScheduled" && m["status"] == string(metav1.ConditionFalse) {
				return fmt.Sprintf("pod %s: %v: %v", p.GetName(), m["reason"], m["message"])
			}
		}
	}
	return ""
}

func hasCondition(obj *unstructured.Unstructured, typ string) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == string(metav1.ConditionTrue) {
			return true
		}
	}
	return false
}

// workloadKinds are the kinds whose pods podsOf finds.
func isWorkload(group, kind string) bool {
	switch group + "/" + kind {
	case "apps/Deployment", "apps/StatefulSet", "apps/DaemonSet", "batch/Job":
		return true
	}
	return false
}

// podsOf picks, among a namespace's pods and ReplicaSets (byOwner: owner uid → objects), the pods
// of the workload's current revision, once its controller has observed its spec: a Deployment's newest ReplicaSet's (as kubectl rollout
// status finds it), a StatefulSet's update revision's, a DaemonSet's or Job's own. Pods of an
// older revision being replaced do not fail the new one.
func podsOf(obj *unstructured.Unstructured, byOwner func(uid string) []*unstructured.Unstructured) []*unstructured.Unstructured {
	if observed, ok, _ := unstructured.NestedInt64(obj.Object, "status", "observedGeneration"); obj.GetKind() != "Job" && (!ok || observed < obj.GetGeneration()) {
		// The controller has not seen the workload's new spec yet: which revision is current
		// (a Deployment's revision annotation, a StatefulSet's updateRevision) is not known, and
		// the pods still running are the previous revision's — a rollback's are not its own.
		return nil
	}
	uid := string(obj.GetUID())
	switch obj.GetKind() {
	case "Deployment":
		revision := obj.GetAnnotations()["deployment.kubernetes.io/revision"]
		var out []*unstructured.Unstructured
		for _, rs := range byOwner(uid) {
			if rs.GetKind() == "ReplicaSet" && rs.GetAnnotations()["deployment.kubernetes.io/revision"] == revision {
				out = append(out, byOwner(string(rs.GetUID()))...)
			}
		}
		return out
	case "StatefulSet":
		update, _, _ := unstructured.NestedString(obj.Object, "status", "updateRevision")
		var out []*unstructured.Unstructured
		for _, p := range byOwner(uid) {
			if update == "" || p.GetLabels()["controller-revision-hash"] == update {
				out = append(out, p)
			}
		}
		return out
	default:
		var out []*unstructured.Unstructured
		for _, p := range byOwner(uid) {
			if p.GetKind() == "Pod" {
				out = append(out, p)
			}
		}
		return out
	}
}
