package history_test

import (
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/services/history"
)

// TestSupersededRollbackLeavesItsTarget: a rollback the applier dropped (a newer request came
// before it applied) ends the pending rollback; the revision it targeted, ready long ago, stays
// ready rather than being marked superseded.
func TestSupersededRollbackLeavesItsTarget(t *testing.T) {
	rel := events.Release{Namespace: "prod", Name: "web"}
	v := &historyapi.View{Release: rel.String()}
	seq := uint64(0)
	fold := func(e event.Event, revision int) {
		t.Helper()
		seq++
		require.NoError(t, history.Fold(v, e, seq, revision))
	}
	derive := func(cause event.Event, source, typ string, data any, revision int) event.Event {
		t.Helper()
		e, err := events.Derive(cause, source, typ, data)
		require.NoError(t, err)
		events.WithRevision(&e, revision)
		return e
	}
	for n := 1; n <= 2; n++ {
		req, err := events.NewEvent("troupe/cli", events.TypeRequested, rel, events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}})
		require.NoError(t, err)
		fold(req, n)
		fold(derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: events.Digest([]byte{byte(n)}), Size: 1}, n), n)
		fold(derive(req, "troupe/applier", events.TypeApplied, events.Applied{Bundle: events.Digest([]byte{byte(n)})}, n), n)
		fold(derive(req, "troupe/health", events.TypeReady, events.Ready{Objects: 1}, n), n)
	}
	rb, err := events.NewEvent("troupe/cli", events.TypeRollbackRequested, rel, events.RollbackRequested{TargetRevision: 1})
	require.NoError(t, err)
	fold(rb, 0)
	require.NotNil(t, v.Rollback)
	fold(derive(rb, "troupe/applier", events.TypeSuperseded, events.Superseded{ByRevision: 3, Stage: events.StageApply}, 1), 1)

	assert.Nil(t, v.Rollback, "the rollback ended")
	assert.Equal(t, historyapi.StateReady, v.Get(1).State, "its target keeps its state")
	assert.Equal(t, "rollback to revision 1 superseded", v.Timeline[len(v.Timeline)-1].Note)
}

// TestRevisionSaysWhatItWaitsFor: while a revision progresses, it records the objects the
// health watcher last reported not ready, and why (troupe status prints them); once ready, none.
func TestRevisionSaysWhatItWaitsFor(t *testing.T) {
	rel := events.Release{Namespace: "prod", Name: "web"}
	v := &historyapi.View{Release: rel.String()}
	seq := uint64(0)
	fold := func(cause event.Event, source, typ string, data any) event.Event {
		t.Helper()
		e, err := events.Derive(cause, source, typ, data)
		require.NoError(t, err)
		events.WithRevision(&e, 1)
		seq++
		require.NoError(t, history.Fold(v, e, seq, 1))
		return e
	}
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, rel, events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}}})
	require.NoError(t, err)
	seq++
	require.NoError(t, history.Fold(v, req, seq, 1))
	fold(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: events.Digest([]byte{1}), Size: 1})
	fold(req, "troupe/applier", events.TypeApplied, events.Applied{Bundle: events.Digest([]byte{1})})
	web := events.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "prod", Name: "web"}
	svc := events.ObjectRef{APIVersion: "v1", Kind: "Service", Namespace: "prod", Name: "web"}
	fold(req, "troupe/health", events.TypeProgressing, events.Progressing{Ready: 1, Total: 2, Objects: []events.ObjectStatus{
		{ObjectRef: svc, Status: events.StatusCurrent},
		{ObjectRef: web, Status: events.StatusInProgress, Message: "Available: 0/1; pod web-1: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."}}})
	require.Len(t, v.Get(1).Waiting, 1)
	assert.Equal(t, web, v.Get(1).Waiting[0].ObjectRef)
	assert.Contains(t, v.Get(1).Waiting[0].Message, "Insufficient cpu")
	fold(req, "troupe/health", events.TypeProgressing, events.Progressing{Ready: 1, Total: 2, Objects: []events.ObjectStatus{
		{ObjectRef: web, Status: events.StatusInProgress, Message: "Available: 0/1; pod web-1: ContainerCreating"}}})
	assert.Contains(t, v.Get(1).Waiting[0].Message, "ContainerCreating", "the last report's")
	fold(req, "troupe/health", events.TypeReady, events.Ready{Objects: 2})
	assert.Empty(t, v.Get(1).Waiting)
}

// TestRevisionRecordsItsGates: a revision records the gates its release.rendered named, pending
// until each gives its verdict on the revision's bundle; a verdict on another bundle counts for
// nothing.
func TestRevisionRecordsItsGates(t *testing.T) {
	rel := events.Release{Namespace: "prod", Name: "web"}
	v := &historyapi.View{Release: rel.String()}
	seq := uint64(0)
	fold := func(cause event.Event, source, typ string, data any) event.Event {
		t.Helper()
		e, err := events.Derive(cause, source, typ, data, source)
		require.NoError(t, err)
		events.WithRevision(&e, 1)
		seq++
		require.NoError(t, history.Fold(v, e, seq, 1))
		return e
	}
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, rel, events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{YAML: "{}"}},
		Options: events.Options{Gates: []string{"approval"}}})
	require.NoError(t, err)
	seq++
	require.NoError(t, history.Fold(v, req, seq, 1))
	bundle := events.Digest([]byte("b"))
	fold(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: bundle, Size: 1, Gates: []string{"approval", "policy"}})
	require.Len(t, v.Get(1).Gates, 2)
	assert.Equal(t, events.VerdictPending, v.Get(1).Gates[0].Verdict)
	fold(req, "troupe/gate-policy", events.TypeApproved, events.Approved{Gate: "policy", Revision: 1, Bundle: events.Digest([]byte("other"))})
	assert.Equal(t, events.VerdictPending, v.Get(1).Gates[1].Verdict, "a verdict on another bundle")
	fold(req, "troupe/gate-approval", events.TypeRejected, events.Rejected{Gate: "approval", Revision: 1, Bundle: bundle, Message: "not now", By: "ana"})
	assert.Equal(t, events.GateVerdict{Gate: "approval", Verdict: events.VerdictRejected, Message: "not now", By: "ana"}, v.Get(1).Gates[0])
	assert.Equal(t, "gate approval rejected by ana: not now", v.Timeline[len(v.Timeline)-1].Note)
}
