package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/troupe-dev/troupe/events"
)

// ReasonHookFailed: a chart's hook failed — a Job that failed, a Pod that did not succeed, a hook
// the API server refused — or was still running at the revision's deadline.
const ReasonHookFailed = "hook_failed"

// Hook delete policies, as Helm names them (helm.sh/hook-delete-policy).
const (
	policyBeforeCreation = "before-hook-creation"
	policySucceeded      = "hook-succeeded"
	policyFailed         = "hook-failed"
)

// hookPoll is how often a running hook is looked at.
const hookPoll = 200 * time.Millisecond

var (
	jobKind = schema.GroupKind{Group: "batch", Kind: "Job"}
	podKind = schema.GroupKind{Kind: "Pod"}
)

// hookItem is a hook on its way to the cluster.
type hookItem struct {
	*item
	hook events.BundleHook
}

// prepareHooks checks the hooks as Apply checks objects (kinds resolved, the namespace allowlist
// and the cluster-scoped switch on where each lands), before anything changes. A hook of a kind
// the bundle's own CRDs define is resolved once they are established.
func (a *Applier) prepareHooks(req Request) ([]*hookItem, error) {
	if len(req.Hooks) == 0 {
		return nil, nil
	}
	objs := make([]map[string]any, 0, len(req.Objects)+len(req.Hooks))
	for _, m := range req.Objects {
		if isCRD(refOf(&unstructured.Unstructured{Object: m})) {
			objs = append(objs, m) // for the scopes of the bundle's own kinds
		}
	}
	crds := len(objs)
	for _, h := range req.Hooks {
		objs = append(objs, h.Object)
	}
	items, err := a.prepare(Request{Release: req.Release, Revision: req.Revision, Objects: objs, Options: req.Options})
	if err != nil {
		return nil, hookError(err)
	}
	out := make([]*hookItem, 0, len(req.Hooks))
	for i, it := range items[crds:] {
		out = append(out, &hookItem{item: it, hook: req.Hooks[i]})
	}
	return out, nil
}

// RunHooks runs req's hooks (req.HookPhase, after the objects: a post phase) as Apply runs a pre
// phase, and applies nothing else; req.Objects are read only for the scopes of the bundle's own
// kinds. Every error is an *Error at stage hook.
func (a *Applier) RunHooks(ctx context.Context, req Request) ([]events.HookRun, error) {
	hooks, err := a.prepareHooks(req)
	if err != nil {
		return nil, err
	}
	return a.runHooks(ctx, req, hooks)
}

// runHooks runs hooks in a span of their own, "apply hooks <phase>" (see runPhase).
func (a *Applier) runHooks(ctx context.Context, req Request, hooks []*hookItem) (runs []events.HookRun, err error) {
	err = events.Stage(ctx, "apply hooks "+req.HookPhase, func(ctx context.Context) (err error) {
		runs, err = a.runPhase(ctx, req, hooks)
		return err
	})
	return runs, err
}

// runPhase runs hooks in their order, as Helm 4 runs a phase: each applied — an earlier object
// of its name deleted first when its delete policies say before-hook-creation (Helm's default
// when they say nothing), else applied over — then waited for until the revision's deadline (a
// Job until complete, a Pod until it succeeded, anything else only created). The first hook that
// fails stops the phase, and is deleted if its policies say hook-failed; the hooks that succeeded
// are deleted when theirs say hook-succeeded, the last first — once every hook ran, so a Secret a
// later Job mounts is there while it runs. A CustomResourceDefinition hook is never deleted:
// every custom resource of its kind would go with it.
func (a *Applier) runPhase(ctx context.Context, req Request, hooks []*hookItem) ([]events.HookRun, error) {
	if !req.HookDeadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, req.HookDeadline)
		defer cancel()
	}
	var deferred []*item
	for _, h := range hooks {
		if h.deferred {
			deferred = append(deferred, h.item)
		}
	}
	if len(deferred) > 0 {
		if err := a.resolve(deferred); err != nil {
			return nil, hookError(err)
		}
		for _, it := range deferred {
			if it.namespced && it.ref.Namespace == "" {
				it.ref.Namespace = req.Release.Namespace
				it.obj.SetNamespace(req.Release.Namespace)
				it.body = nil
			}
			if err := a.allowed(req.Release, it.ref); err != nil {
				return nil, hookError(err)
			}
		}
	}
	var runs []events.HookRun
	for _, h := range hooks {
		run, err := a.runHook(ctx, req, h)
		runs = append(runs, run)
		if err != nil {
			// As Helm: the hooks that succeeded before it go too when their policies say so.
			if !errors.Is(context.Cause(ctx), context.Canceled) {
				_ = a.deleteSucceeded(context.WithoutCancel(ctx), req.Release, hooks[:len(runs)-1], runs)
			}
			return runs, err
		}
	}
	if err := a.deleteSucceeded(ctx, req.Release, hooks, runs); err != nil {
		return runs, err
	}
	return runs, nil
}

// deleteSucceeded deletes the hooks whose policies say hook-succeeded, the last first, marking
// their runs deleted.
func (a *Applier) deleteSucceeded(ctx context.Context, rel events.Release, hooks []*hookItem, runs []events.HookRun) error {
	for i := len(hooks) - 1; i >= 0; i-- {
		if h := hooks[i]; slices.Contains(h.hook.DeletePolicies, policySucceeded) && !isCRD(h.ref) {
			if err := a.deleteHook(ctx, rel, h); err != nil {
				return &Error{Stage: events.StageHook, Reason: ReasonHookFailed, Objects: []ObjectError{{Ref: h.ref,
					Message: fmt.Sprintf("hook %s: hook-succeeded: %v", h.ref.Name, err)}}}
			}
			runs[i].Deleted = true
		}
	}
	return nil
}

// runHook runs one hook (see runHooks).
func (a *Applier) runHook(ctx context.Context, req Request, h *hookItem) (events.HookRun, error) {
	run := events.HookRun{ObjectRef: h.ref, Weight: h.hook.Weight, Started: time.Now().UTC()}
	policies := h.hook.DeletePolicies
	if len(policies) == 0 {
		policies = []string{policyBeforeCreation}
	}
	failed := func(err *Error) (events.HookRun, error) {
		run.Result, run.Duration, run.Message = events.HookFailed, events.Duration(time.Since(run.Started)), err.Detail()
		// Not when the work was taken away (the lease lost, a shutdown): the hook may be running
		// for whoever carries on.
		if slices.Contains(policies, policyFailed) && !isCRD(h.ref) && !errors.Is(context.Cause(ctx), context.Canceled) {
			run.Deleted = a.deleteHook(context.WithoutCancel(ctx), req.Release, h) == nil
		}
		err.Stage = events.StageHook
		return run, err
	}
	resource := a.client(req.Release).Resource(h.gvr).Namespace(h.ref.Namespace)
	live, err := resource.Get(ctx, h.ref.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return failed(objectError(h.ref, err))
	case !a.mayReplace(req, live):
		return failed(&Error{Reason: ReasonOwnershipConflict, Objects: []ObjectError{{Ref: h.ref,
			Message: fmt.Sprintf("hook %s: the object exists and is not this release's (a hook Helm left is taken over with options.adopt)", h.ref.Name)}}})
	case slices.Contains(policies, policyBeforeCreation) && !isCRD(h.ref):
		if err := a.deleteHook(ctx, req.Release, h); err != nil {
			return failed(objectError(h.ref, err))
		}
	}
	// Else one that exists is applied over (server-side, as Helm 4 applies hooks): a Job its
	// policies kept from an earlier run, unchanged, is complete already.
	h.body = nil
	if _, _, err := a.applyRaw(ctx, req.Release, h.item, false); err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = objectError(h.ref, err)
		}
		return failed(e)
	}
	if err := a.waitHook(ctx, req.Release, h); err != nil {
		return failed(err)
	}
	run.Result, run.Duration = events.HookSucceeded, events.Duration(time.Since(run.Started))
	return run, nil
}

// mayReplace says whether an existing object of a hook's name may be deleted and made again:
// when it is this release's, or — with options.adopt — when it is nobody's and Helm made it as
// a hook (a release moving from Helm: its hooks carry no troupe labels).
func (a *Applier) mayReplace(req Request, live *unstructured.Unstructured) bool {
	owner := ownerOf(live)
	if owner == req.Release {
		return true
	}
	_, helmHook := live.GetAnnotations()["helm.sh/hook"]
	return req.Options.Adopt && a.opts.AllowAdopt && owner.Name == "" && helmHook
}

// waitHook waits until the hook has run: a Job complete, a Pod succeeded; anything else is done
// once it exists. A failed Job or Pod, or one still running when ctx ends, is an *Error naming why.
func (a *Applier) waitHook(ctx context.Context, rel events.Release, h *hookItem) *Error {
	gk := h.gvr.GroupResource()
	kind := schema.GroupKind{Group: gk.Group, Kind: h.ref.Kind}
	if kind != jobKind && kind != podKind {
		return nil
	}
	resource := a.client(rel).Resource(h.gvr).Namespace(h.ref.Namespace)
	tick := time.NewTicker(hookPoll)
	defer tick.Stop()
	for {
		live, err := resource.Get(ctx, h.ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// A Job with ttlSecondsAfterFinished may be gone as soon as it finished; another
			// hook object deleted while it runs has not run.
			if ttl, ok, _ := unstructured.NestedInt64(h.obj.Object, "spec", "ttlSecondsAfterFinished"); ok && ttl >= 0 {
				return nil
			}
			return &Error{Reason: ReasonHookFailed, Objects: []ObjectError{{Ref: h.ref, Message: fmt.Sprintf("hook %s: deleted before it finished", h.ref.Name)}}}
		}
		if err != nil && ctx.Err() == nil {
			if e := objectError(h.ref, err); !e.Transient {
				return e
			}
		}
		if err == nil {
			done, why := hookDone(live)
			switch {
			case done && why == "":
				return nil
			case done:
				return &Error{Reason: ReasonHookFailed, Objects: []ObjectError{{Ref: h.ref, Message: a.hookFailure(ctx, rel, h, why)}}}
			}
		}
		select {
		case <-ctx.Done():
			return &Error{Reason: ReasonHookFailed, Objects: []ObjectError{{Ref: h.ref,
				Message: fmt.Sprintf("hook %s: still running at the revision's deadline%s", h.ref.Name, a.podsSay(context.WithoutCancel(ctx), rel, h))}}}
		case <-tick.C:
		}
	}
}

// hookDone reads a Job's or Pod's status: done, and why it failed ("" when it succeeded).
func hookDone(u *unstructured.Unstructured) (done bool, why string) {
	if u.GetKind() == "Pod" {
		phase, _, _ := unstructured.NestedString(u.Object, "status", "phase")
		switch phase {
		case "Succeeded":
			return true, ""
		case "Failed":
			reason, _, _ := unstructured.NestedString(u.Object, "status", "reason")
			msg, _, _ := unstructured.NestedString(u.Object, "status", "message")
			return true, strings.TrimSpace("the pod failed " + reason + " " + msg)
		}
		return false, ""
	}
	conditions, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["status"] != "True" {
			continue
		}
		switch m["type"] {
		case "Complete":
			return true, ""
		case "Failed":
			return true, fmt.Sprintf("the job failed: %v: %v", m["reason"], m["message"])
		}
	}
	return false, ""
}

// hookFailure says why a hook failed, with what its pods say.
func (a *Applier) hookFailure(ctx context.Context, rel events.Release, h *hookItem, why string) string {
	return fmt.Sprintf("hook %s: %s%s", h.ref.Name, why, a.podsSay(ctx, rel, h))
}

// podsSay is what the hook's pods say about a failure: each container's last termination
// (reason, exit code, message) or waiting reason, and the last lines of its log when the node
// keeps one; "" when there is nothing to say.
func (a *Applier) podsSay(ctx context.Context, rel events.Release, h *hookItem) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cs, err := kubernetes.NewForConfig(a.cfgFor(rel))
	if err != nil {
		return ""
	}
	var names []string
	switch h.ref.Kind {
	case "Pod":
		names = []string{h.ref.Name}
	case "Job":
		job, err := cs.BatchV1().Jobs(h.ref.Namespace).Get(ctx, h.ref.Name, metav1.GetOptions{})
		if err != nil {
			return ""
		}
		// This run's pods only (not an earlier run's, still going away, nor anyone's labelled alike).
		pods, err := cs.CoreV1().Pods(h.ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/controller-uid=" + string(job.UID)})
		if err != nil {
			return ""
		}
		for _, p := range pods.Items {
			names = append(names, p.Name)
		}
	}
	var says []string
	for _, name := range names[:min(len(names), 3)] {
		pod, err := cs.CoreV1().Pods(h.ref.Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		for _, c := range pod.Status.ContainerStatuses {
			var s string
			switch {
			case c.State.Terminated != nil && c.State.Terminated.ExitCode != 0:
				t := c.State.Terminated
				s = fmt.Sprintf("container %s exited %d (%s) %s", c.Name, t.ExitCode, t.Reason, t.Message)
			case c.LastTerminationState.Terminated != nil && c.LastTerminationState.Terminated.ExitCode != 0:
				t := c.LastTerminationState.Terminated
				s = fmt.Sprintf("container %s exited %d (%s) %s", c.Name, t.ExitCode, t.Reason, t.Message)
			case c.State.Waiting != nil:
				s = fmt.Sprintf("container %s waiting: %s %s", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
			default:
				continue
			}
			// The last lines of its log say why, on a node that keeps one — unless the applier
			// was told to keep logs out (a log may hold anything) and the chart does not ask as
			// Helm's helm.sh/hook-output-log-policy: hook-failed asks.
			tail := int64(5)
			if !a.opts.NoHookLogs || showLogs(h.hook) {
				if log, err := cs.CoreV1().Pods(h.ref.Namespace).GetLogs(name, &corev1.PodLogOptions{Container: c.Name, TailLines: &tail}).DoRaw(ctx); err == nil && len(strings.TrimSpace(string(log))) > 0 {
					s += "; its log ends: " + strings.TrimSpace(string(log))
				}
			}
			says = append(says, "pod "+name+": "+strings.TrimSpace(s))
		}
	}
	if len(says) == 0 {
		return ""
	}
	return " (" + strings.Join(says, "; ") + ")"
}

// showLogs says whether a hook's chart asks for its log when it fails.
func showLogs(h events.BundleHook) bool {
	annotations, _, _ := unstructured.NestedStringMap(h.Object, "metadata", "annotations")
	return strings.Contains(annotations["helm.sh/hook-output-log-policy"], policyFailed)
}

// hookDeleteWait bounds the wait for a deleted hook to be gone (a finalizer may hold it).
const hookDeleteWait = 30 * time.Second

// deleteHook deletes the hook's object, its dependents too (a Job's pods), and waits until it
// is gone, so that one of the same name can be created again.
func (a *Applier) deleteHook(ctx context.Context, rel events.Release, h *hookItem) error {
	ctx, cancel := context.WithTimeout(ctx, hookDeleteWait)
	defer cancel()
	resource := a.client(rel).Resource(h.gvr).Namespace(h.ref.Namespace)
	background := metav1.DeletePropagationBackground
	if err := resource.Delete(ctx, h.ref.Name, metav1.DeleteOptions{PropagationPolicy: &background}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	tick := time.NewTicker(hookPoll / 2)
	defer tick.Stop()
	for {
		if _, err := resource.Get(ctx, h.ref.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hook %s: still there %s after it was deleted (a finalizer?)", h.ref.Name, hookDeleteWait)
		case <-tick.C:
		}
	}
}

// hookError makes err, from checking or running hooks, fail the revision at stage hook.
func hookError(err error) error {
	var e *Error
	if errors.As(err, &e) {
		e.Stage = events.StageHook
	}
	return err
}
