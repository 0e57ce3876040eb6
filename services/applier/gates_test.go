package applier_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier"
)

// gated stores a bundle of objs and publishes the release.rendered of revision for request,
// naming gates (as the renderer does, from the request and the namespace's policy).
func (e *env) gated(request event.Event, revision int, objs []map[string]any, gates []string, opts events.Options) event.Event {
	e.t.Helper()
	return e.renderedBundle(request, revision, objs, nil, gates, opts)
}

// verdict publishes gate's verdict on the revision rendered, as the gate would (derived from it);
// change alters the verdict before it is published (another revision, another bundle).
func (e *env) verdict(rendered event.Event, gate string, approve bool, findings []events.Finding, change ...func(*events.Verdict)) {
	e.t.Helper()
	r, err := events.Data[events.Rendered](rendered)
	require.NoError(e.t, err)
	v := events.Verdict{Gate: gate, Revision: events.Revision(rendered), Bundle: r.Bundle, Findings: findings}
	for _, c := range change {
		c(&v)
	}
	typ, data, key := events.TypeApproved, any(events.Approved(v)), v.Bundle
	if !approve {
		v.Reason, v.Message = "policy_violation", "2 rules broken"
		typ, data = events.TypeRejected, events.Rejected(v)
	}
	ev, err := events.Derive(rendered, "troupe/gate-"+gate, typ, data, key, time.Now().String())
	require.NoError(e.t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(e.t.Context(), ev)
	require.NoError(e.t, err)
}

func (e *env) requireGate(ns, gate string, trust bool) {
	e.t.Helper()
	p, err := events.OpenGatePolicy(e.t.Context(), e.js, events.Names{})
	require.NoError(e.t, err)
	require.NoError(e.t, p.Require(e.t.Context(), ns, events.GateRule{Gate: gate, TrustApprovals: trust}))
}

func absent(t *testing.T, ns, name string) {
	t.Helper()
	_, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), name, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "ConfigMap %s/%s must not be applied: %v", ns, name, err)
}

// TestGateRejectsNothingApplied: a revision a required gate rejects is not applied; it ends with
// one release.failed at stage gate naming the gate, its reason and each finding's object, and
// the previous revision's objects stay as they were.
func TestGateRejectsNothingApplied(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"})}, events.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req1.ID()).Type())

	published := e.countPublished(rel, events.TypeFailed)
	req2 := e.request(rel, events.Options{Gates: []string{"policy"}})
	r2 := e.gated(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"}), configMap(ns, "b", nil)}, []string{"policy"}, events.Options{})
	assert.Empty(t, e.answers(rel, req2.ID(), 0, 2*time.Second), "nothing before the gate's verdict")
	e.verdict(r2, "policy", false, []events.Finding{
		{Rule: "resource-limits", Object: &events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: ns, Name: "b"}, Message: "no limits"},
		{Rule: "general", Message: "not on a Friday"}})
	got := e.answer(rel, req2.ID())
	require.Equal(t, events.TypeFailed, got.Type(), string(got.Data()))
	f, err := events.Data[events.Failed](got)
	require.NoError(t, err)
	assert.Equal(t, events.StageGate, f.Stage)
	assert.Equal(t, events.ReasonGateRejected, f.Reason)
	assert.Contains(t, f.Message, "gate policy rejected revision 2")
	assert.Contains(t, f.Message, "2 rules broken")
	assert.Contains(t, f.Message, "general: not on a Friday", "a finding about no object is in the message")
	require.Len(t, f.Objects, 1)
	assert.Equal(t, "b", f.Objects[0].Name)
	assert.Equal(t, "policy: resource-limits: no limits", f.Objects[0].Message)
	time.Sleep(300 * time.Millisecond)
	assert.EqualValues(t, 1, published.Load(), "release.failed published once")
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "1", cm.Data["v"], "the previous revision's objects stay")
	absent(t, ns, "b")
}

// TestGatesApproveThatRevisionAndBundle: a revision waits for every gate it needs; a verdict on
// another revision, on another bundle, or from a gate it does not need counts for nothing; once
// each gate approved it, it is applied, and a rejection after that changes nothing.
func TestGatesApproveThatRevisionAndBundle(t *testing.T) {
	e := newEnv(t)
	stop := e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req := e.request(rel, events.Options{})
	r := e.gated(req, 1, []map[string]any{configMap(ns, "a", nil)}, []string{"approval", "policy"}, events.Options{})
	e.verdict(r, "policy", true, nil)
	e.verdict(r, "approval", true, nil, func(v *events.Verdict) { v.Revision = 7 })
	e.verdict(r, "approval", true, nil, func(v *events.Verdict) { v.Bundle = "sha256:" + strings.Repeat("0", 64) })
	e.verdict(r, "other", false, nil)
	assert.Empty(t, e.answers(rel, req.ID(), 0, 3*time.Second), "approval has not approved this revision and bundle")
	absent(t, ns, "a")

	e.verdict(r, "approval", true, nil)
	got := e.answer(rel, req.ID())
	require.Equal(t, events.TypeApplied, got.Type(), string(got.Data()))
	_, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)

	// Once applied, a gate changing its mind fails nothing: what is applied stays, and the
	// revision goes on to its health (no release.failed saying nothing was applied).
	failed := e.countPublished(rel, events.TypeFailed)
	e.verdict(r, "approval", false, nil)
	e.verdict(r, "policy", false, nil)
	time.Sleep(2 * time.Second)
	// … nor does the revision's release.rendered delivered again (a new consumer reading the
	// stream from its start): it is answered as applied.
	stop()
	require.NoError(t, e.js.DeleteConsumer(t.Context(), events.StreamName, applier.Name))
	e.start(applier.Options{})
	time.Sleep(3 * time.Second)
	assert.EqualValues(t, 0, failed.Load(), "no release.failed after the revision was applied")
	assert.Len(t, e.answers(rel, req.ID(), 0, time.Second), 1, "release.applied only")
}

// TestRequestGatesHold: the gates a request names hold its revision even when its
// release.rendered does not list them (a renderer that left them out). (That the namespace's
// policy holds a request naming no gate is the renderer's to list: its test, and e2e's.)
func TestRequestGatesHold(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	opts := events.Options{Gates: []string{"policy"}}
	req := e.request(rel, opts)
	r := e.rendered(req, 1, []map[string]any{configMap(ns, "a", nil)}, opts)
	assert.Empty(t, e.answers(rel, req.ID(), 0, 3*time.Second), "the request names the gate")
	absent(t, ns, "a")
	e.verdict(r, "policy", true, nil)
	require.Equal(t, events.TypeApplied, e.answer(rel, req.ID()).Type())
}

// TestVerdictBeforeTheApplier: verdicts stored before the applier handles the revision (it was
// down) are read when it does.
func TestVerdictBeforeTheApplier(t *testing.T) {
	e := newEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req := e.request(rel, events.Options{})
	r := e.gated(req, 1, []map[string]any{configMap(ns, "a", nil)}, []string{"policy"}, events.Options{})
	e.verdict(r, "policy", true, nil)
	e.start(applier.Options{})
	require.Equal(t, events.TypeApplied, e.answer(rel, req.ID()).Type())
}

// TestWaitingRevisionIsSuperseded: a revision waiting at a gate ends as superseded as soon as a
// newer revision reaches the applier, or fails before it, and a verdict on it afterwards applies
// nothing; an uninstall ends a waiting revision the same way.
func TestWaitingRevisionIsSuperseded(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	req1 := e.request(rel, events.Options{})
	r1 := e.gated(req1, 1, []map[string]any{configMap(ns, "old", nil)}, []string{"approval"}, events.Options{})
	assert.Empty(t, e.answers(rel, req1.ID(), 0, 2*time.Second))
	req2 := e.request(rel, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "new", nil)}, events.Options{})
	got := e.answer(rel, req1.ID())
	require.Equal(t, events.TypeSuperseded, got.Type(), string(got.Data()))
	sup, err := events.Data[events.Superseded](got)
	require.NoError(t, err)
	assert.Equal(t, 2, sup.ByRevision)
	require.Equal(t, events.TypeApplied, e.answer(rel, req2.ID()).Type())
	e.verdict(r1, "approval", true, nil)
	time.Sleep(2 * time.Second)
	absent(t, ns, "old")

	// A newer request that fails before it reaches the applier (its chart does not render)
	// supersedes a waiting revision all the same.
	req3 := e.request(rel, events.Options{})
	r3 := e.gated(req3, 3, []map[string]any{configMap(ns, "third", nil)}, []string{"approval"}, events.Options{})
	assert.Empty(t, e.answers(rel, req3.ID(), 0, 2*time.Second))
	req4 := e.request(rel, events.Options{})
	failed, err := events.Derive(req4, "troupe/renderer", events.TypeFailed, events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "bad chart"})
	require.NoError(t, err)
	events.WithRevision(&failed, 4)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), failed)
	require.NoError(t, err)
	got = e.answer(rel, req3.ID())
	require.Equal(t, events.TypeSuperseded, got.Type(), string(got.Data()))
	sup, err = events.Data[events.Superseded](got)
	require.NoError(t, err)
	assert.Equal(t, 4, sup.ByRevision)
	e.verdict(r3, "approval", true, nil)
	time.Sleep(2 * time.Second)
	absent(t, ns, "third")

	req5 := e.request(rel, events.Options{})
	e.gated(req5, 5, []map[string]any{configMap(ns, "fifth", nil)}, []string{"approval"}, events.Options{})
	assert.Empty(t, e.answers(rel, req5.ID(), 0, 2*time.Second))
	un, err := events.NewEvent("troupe/test", events.TypeUninstallRequested, rel, events.UninstallRequested{})
	require.NoError(t, err)
	_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), un)
	require.NoError(t, err)
	got = e.answer(rel, req5.ID())
	require.Equal(t, events.TypeSuperseded, got.Type(), string(got.Data()))
	sup, err = events.Data[events.Superseded](got)
	require.NoError(t, err)
	assert.Equal(t, un.ID(), sup.ByUninstall)
	require.Equal(t, events.TypeUninstalled, e.answer(rel, un.ID()).Type())
	absent(t, ns, "fifth")
}

// TestDryRunReportsTheVerdicts: a dry run waits for the gates as a revision does, and reports
// what each said in its release.diffed — a rejection included, which fails nothing.
func TestDryRunReportsTheVerdicts(t *testing.T) {
	e := newEnv(t)
	e.start(applier.Options{})
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	opts := events.Options{DryRun: true}
	req := e.request(rel, opts)
	r := e.gated(req, 1, []map[string]any{configMap(ns, "a", nil)}, []string{"approval", "policy"}, opts)
	e.verdict(r, "approval", true, nil)
	assert.Empty(t, e.answers(rel, req.ID(), 0, 2*time.Second), "policy has not said yet")
	e.verdict(r, "policy", false, []events.Finding{{Rule: "image-digest", Message: "no digest"}})
	got := e.answer(rel, req.ID())
	require.Equal(t, events.TypeDiffed, got.Type(), string(got.Data()))
	d, err := events.Data[events.Diffed](got)
	require.NoError(t, err)
	require.Len(t, d.Gates, 2)
	assert.Equal(t, "approval", d.Gates[0].Gate)
	assert.Equal(t, events.VerdictApproved, d.Gates[0].Verdict)
	assert.Equal(t, "policy", d.Gates[1].Gate)
	assert.Equal(t, events.VerdictRejected, d.Gates[1].Verdict)
	require.Len(t, d.Gates[1].Findings, 1)
	absent(t, ns, "a")
}

// TestRollbackThroughAGate: a rollback is judged again, unless the namespace's policy says the
// gate trusts its earlier approval of the same bundle.
func TestRollbackThroughAGate(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(map[bool]string{false: "judged again", true: "trusted"}[trust], func(t *testing.T) {
			e := newEnv(t)
			e.start(applier.Options{})
			ns := kube.Namespace(t)
			e.requireGate(ns, "policy", trust)
			rel := events.Release{Namespace: ns, Name: "app"}
			var renders []event.Event
			for i, v := range []string{"1", "2"} {
				req := e.request(rel, events.Options{})
				r := e.gated(req, i+1, []map[string]any{configMap(ns, "a", map[string]any{"v": v})}, []string{"policy"}, events.Options{})
				e.verdict(r, "policy", true, nil)
				require.Equal(t, events.TypeApplied, e.answer(rel, req.ID()).Type())
				renders = append(renders, r)
			}
			rb, err := events.NewEvent("troupe/test", events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: 1})
			require.NoError(t, err)
			_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), rb)
			require.NoError(t, err)
			r1, err := events.Data[events.Rendered](renders[0])
			require.NoError(t, err)
			ev, err := events.Derive(rb, "troupe/history", events.TypeRendered, events.Rendered{Bundle: r1.Bundle, Size: r1.Size, Rollback: true,
				Gates: []string{"policy"}})
			require.NoError(t, err)
			events.WithRevision(&ev, 1)
			_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), ev)
			require.NoError(t, err)
			if !trust {
				assert.Empty(t, e.answers(rel, rb.ID(), 0, 2*time.Second), "a rollback is judged again")
				e.verdict(ev, "policy", true, nil)
			}
			require.Equal(t, events.TypeApplied, e.answer(rel, rb.ID()).Type())
			cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, "1", cm.Data["v"])
		})
	}
}
