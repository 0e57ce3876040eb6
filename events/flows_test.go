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

	fl, err := flows.Observe(t.Context(), req, 7)
	require.NoError(t, err)
	assert.Equal(t, uint64(7), fl.Sequence)
	assert.Equal(t, events.TypeRequested, fl.Start)
	assert.WithinDuration(t, events.FlowDeadline(req), fl.Deadline, time.Millisecond)
	require.NotNil(t, fl.Last)
	assert.Equal(t, events.TypeRequested, fl.Last.Type)

	fl, err = flows.Observe(t.Context(), rendered, 8)
	require.NoError(t, err)
	assert.Equal(t, 3, fl.Revision)
	assert.Equal(t, events.TypeRendered, fl.Last.Type)
	again, err := flows.Observe(t.Context(), req, 7) // a redelivery: the flow does not go back
	require.NoError(t, err)
	assert.Equal(t, events.TypeRendered, again.Last.Type)

	// A terminal event published outside the SDK (no claim) ends the flow when observed.
	ready, err := events.Derive(rendered, "other/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	fl, err = flows.Observe(t.Context(), ready, 9)
	require.NoError(t, err)
	require.False(t, fl.Open())
	assert.True(t, fl.End.Stored)
	assert.Equal(t, ready.ID(), fl.End.ID)
}
