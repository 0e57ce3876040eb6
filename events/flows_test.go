package events_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func request(t *testing.T, r events.Release, timeout time.Duration) event.Event {
	t.Helper()
	e, err := events.NewEvent("troupe/test", events.TypeRequested, r, events.Requested{
		Source:  events.Source{Helm: &events.HelmSource{Path: "charts/" + r.Name}},
		Options: events.Options{Timeout: events.Duration(timeout)}})
	require.NoError(t, err)
	return e
}

func TestDeadlineIsCarriedFromTheRequest(t *testing.T) {
	r := events.Release{Namespace: "ns", Name: "app"}
	req := request(t, r, 90*time.Second)
	want := req.Time().Add(90 * time.Second)
	assert.WithinDuration(t, want, events.FlowDeadline(req), time.Millisecond)

	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + sha, Size: 1})
	require.NoError(t, err)
	applied, err := events.Derive(rendered, "troupe/applier", events.TypeApplied, events.Applied{Bundle: "sha256:" + sha})
	require.NoError(t, err)
	assert.WithinDuration(t, want, events.FlowDeadline(applied), time.Millisecond, "every reaction carries the request's deadline")

	// A request from outside the SDK, without the extension: its payload's timeout still counts.
	foreign := req.Clone()
	foreign.SetExtension(events.ExtDeadline, nil)
	assert.WithinDuration(t, want, events.FlowDeadline(foreign), time.Millisecond)

	// No timeout asked: the default.
	plain := request(t, r, 0)
	assert.WithinDuration(t, plain.Time().Add(events.DefaultTimeout), events.FlowDeadline(plain), time.Millisecond)

	un, err := events.NewEvent("troupe/cli", events.TypeUninstallRequested, r, events.UninstallRequested{Timeout: events.Duration(time.Minute)})
	require.NoError(t, err)
	assert.WithinDuration(t, un.Time().Add(time.Minute), events.FlowDeadline(un), time.Millisecond)
}

const sha = "0000000000000000000000000000000000000000000000000000000000000001"

// Two stages race to end one flow with different terminal events (health's ready, the
// watchdog's deadline_exceeded): exactly one is published, counted in the stream — not by the
// duplicate window, the two have different ids.
func TestATerminalEventIsClaimedOnce(t *testing.T) {
	_, _, js := natstest.Start(t)
	r := events.Release{Namespace: "ns", Name: "race"}
	req := request(t, r, time.Minute)

	var ends []event.Event
	for i := range 8 {
		typ, data := events.TypeReady, any(events.Ready{Objects: 1})
		if i%2 == 1 {
			typ, data = events.TypeFailed, any(events.Failed{Stage: events.StageHealth, Reason: "deadline_exceeded", Message: "late"})
		}
		e, err := events.Derive(req, "troupe/racer", typ, data, string(rune('a'+i)))
		require.NoError(t, err)
		ends = append(ends, e)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(ends))
	for i, e := range ends {
		wg.Go(func() {
			_, errs[i] = events.NewPublisher(js, events.Names{}).Publish(t.Context(), e)
		})
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, won, "two terminal events published: %s and %s", ends[max(won, 0)].ID(), ends[i].ID())
			won = i
			continue
		}
		require.ErrorIs(t, err, events.ErrFlowEnded)
	}
	require.NotEqual(t, -1, won, "no terminal event published")
	stored := readAll(t, js, events.StreamName, "troupe.release.ns.race.>")
	require.Len(t, stored, 1)

	// The winner publishing again (a redelivered handler) is allowed; a loser still is not.
	_, err := events.NewPublisher(js, events.Names{}).Publish(t.Context(), ends[won])
	require.NoError(t, err)
	_, err = events.NewPublisher(js, events.Names{}).Publish(t.Context(), ends[(won+1)%len(ends)])
	require.ErrorIs(t, err, events.ErrFlowEnded)

	// And a stage fences on it.
	flows, err := events.NewFlows(t.Context(), js, events.Names{})
	require.NoError(t, err)
	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + sha, Size: 1})
	require.NoError(t, err)
	err = flows.Fence(t.Context(), rendered, time.Now())
	require.ErrorIs(t, err, events.ErrFlowEnded)
	assert.Contains(t, err.Error(), ends[won].Type())
}

func TestFenceOnDeadline(t *testing.T) {
	_, _, js := natstest.Start(t)
	flows, err := events.NewFlows(t.Context(), js, events.Names{})
	require.NoError(t, err)
	req := request(t, events.Release{Namespace: "ns", Name: "late"}, time.Minute)
	require.NoError(t, flows.Fence(t.Context(), req, req.Time().Add(59*time.Second)))
	err = flows.Fence(t.Context(), req, req.Time().Add(61*time.Second))
	require.ErrorIs(t, err, events.ErrDeadlinePassed)
	assert.False(t, errors.Is(err, events.ErrFlowEnded))
}

func TestObserveFoldsAFlow(t *testing.T) {
	_, _, js := natstest.Start(t)
	flows, err := events.NewFlows(t.Context(), js, events.Names{})
	require.NoError(t, err)
	r := events.Release{Namespace: "ns", Name: "obs"}
	req := request(t, r, time.Minute)
	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + sha, Size: 1})
	require.NoError(t, err)
	events.WithRevision(&rendered, 3)
	key, err := events.FlowKey(req)
	require.NoError(t, err)
	written := func() uint64 {
		entry, err := flows.KV().Get(t.Context(), key)
		require.NoError(t, err)
		return entry.Revision()
	}

	fl, err := flows.Observe(t.Context(), req, 7)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), fl.Sequence)
	assert.Equal(t, events.TypeRequested, fl.Start)
	assert.WithinDuration(t, events.FlowDeadline(req), fl.Deadline, time.Millisecond)
	at := written()

	// A step in between writes nothing: the record has what it keeps.
	_, err = flows.Observe(t.Context(), rendered, 8)
	require.NoError(t, err)
	again, err := flows.Observe(t.Context(), req, 7) // a redelivery
	require.NoError(t, err)
	assert.Equal(t, uint64(7), again.Sequence)
	assert.Equal(t, at, written(), "neither the step nor the redelivery wrote the record")

	// A terminal event published outside the SDK (no claim) ends the flow when observed, and
	// brings the revision.
	ready, err := events.Derive(rendered, "other/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	fl, err = flows.Observe(t.Context(), ready, 9)
	require.NoError(t, err)
	require.False(t, fl.Open())
	assert.True(t, fl.End.Stored)
	assert.Equal(t, ready.ID(), fl.End.ID)
	assert.Equal(t, 3, fl.Revision)
}

// TestFlowSteps: what a flow waits on, and how it ended, read from the stream among the events
// of its release and of other flows.
func TestFlowSteps(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	names := events.Names{}
	pub := events.NewPublisher(js, names)
	flows, err := events.NewFlows(ctx, js, names)
	require.NoError(t, err)
	r := events.Release{Namespace: "ns", Name: "steps"}
	publish := func(e event.Event) uint64 {
		t.Helper()
		ack, err := pub.Publish(ctx, e)
		require.NoError(t, err)
		return ack.Sequence
	}
	record := func(req event.Event, seq uint64) *events.Flow {
		t.Helper()
		fl, err := flows.Observe(ctx, req, seq)
		require.NoError(t, err)
		return fl
	}

	first := request(t, r, time.Minute)
	fl := record(first, publish(first))
	last, end, err := names.FlowSteps(ctx, js, r, fl)
	require.NoError(t, err)
	require.NotNil(t, last)
	assert.Equal(t, first.ID(), last.ID(), "only its request")
	assert.Nil(t, end)

	rendered, err := events.Derive(first, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + sha, Size: 1})
	require.NoError(t, err)
	publish(rendered)
	applied, err := events.Derive(rendered, "troupe/applier", events.TypeApplied, events.Applied{Bundle: "sha256:" + sha})
	require.NoError(t, err)
	publish(applied)
	progressing, err := events.Derive(applied, "troupe/health", events.TypeProgressing, events.Progressing{Total: 1})
	require.NoError(t, err)
	publish(progressing)                 // no step: a progress report
	second := request(t, r, time.Minute) // another flow of the release, after it
	publish(second)
	last, end, err = names.FlowSteps(ctx, js, r, fl)
	require.NoError(t, err)
	assert.Equal(t, applied.ID(), last.ID(), "its newest step, not its progress report nor the other flow's")
	assert.Nil(t, end)

	failed, err := events.Derive(applied, "troupe/health", events.TypeFailed, events.Failed{Stage: events.StageHealth, Reason: "timeout", Message: "late"})
	require.NoError(t, err)
	publish(failed)
	last, end, err = names.FlowSteps(ctx, js, r, fl)
	require.NoError(t, err)
	assert.Equal(t, applied.ID(), last.ID())
	require.NotNil(t, end)
	assert.Equal(t, failed.ID(), end.ID())

	// A flow known only by when it was requested is read from then on.
	other := record(second, 0)
	assert.Zero(t, other.Sequence)
	last, end, err = names.FlowSteps(ctx, js, r, other)
	require.NoError(t, err)
	assert.Equal(t, second.ID(), last.ID())
	assert.Nil(t, end)
}
