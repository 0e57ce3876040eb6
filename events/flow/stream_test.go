package flow

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
)

func publish(t *testing.T, js jetstream.JetStream, names events.Names, evs ...event.Event) uint64 {
	t.Helper()
	var seq uint64
	for _, e := range evs {
		ack, err := events.NewPublisher(js, names).Publish(t.Context(), e)
		require.NoError(t, err)
		seq = ack.Sequence
	}
	return seq
}

// TestFollowAndTraceOnTheStream: what Follow and ReadTrace make of a flow on a real stream, in a
// sandbox's subjects: the request numbered as the services number it, the malformed message
// skipped, the flow followed from the request's sequence to its end.
func TestFollowAndTraceOnTheStream(t *testing.T) {
	_, _, js := natstest.Start(t)
	names, err := events.NewNames("sbx")
	require.NoError(t, err)
	_, err = events.Provision(t.Context(), js, events.ProvisionConfig{Names: names})
	require.NoError(t, err)

	c := &chain{t: t}
	old := c.request(manifests) // revision 1, not followed
	req := c.request(manifests)
	r := c.derive(req, "renderer", events.TypeRendered, 2, events.Rendered{Bundle: digest})
	a := c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
	ready := c.derive(a, "health", events.TypeReady, 0, events.Ready{TimeToReady: events.Duration(time.Second)})
	publish(t, js, names, old)
	seq := publish(t, js, names, req)
	subject, err := names.Subject(web, events.TypeApplied)
	require.NoError(t, err)
	_, err = js.Publish(t.Context(), subject, []byte("not an event"))
	require.NoError(t, err)
	publish(t, js, names, r, a, ready)

	w, err := Watch(t.Context(), js, names, web, seq)
	require.NoError(t, err)
	defer w.Stop()
	var steps []string
	out, err := Follow(t.Context(), w, web, req.ID(), FollowOptions{}, func(s Step) { steps = append(steps, s.Stage) })
	require.NoError(t, err)
	assert.Equal(t, historyapi.StateReady, out.State)
	assert.Equal(t, 2, out.Revision)
	assert.NotEmpty(t, out.Duration)
	assert.Equal(t, []string{"rendered", "applied", "ready"}, steps)

	all, err := Read(t.Context(), js, names, web)
	require.NoError(t, err)
	assert.Len(t, all, 5, "the malformed message is skipped")
	tr, err := ReadTrace(t.Context(), js, names, web, 0)
	require.NoError(t, err)
	assert.Equal(t, 2, tr.Revision, "the services' number for the second request")
	assert.Len(t, tr.Events, 4)
	assert.Equal(t, "ready", tr.Ended)

	_, err = ReadTrace(t.Context(), js, events.Names{}, web, 0)
	assert.ErrorContains(t, err, "no release.requested", "the live system saw nothing of the sandbox's")
}

// TestFollowWhenNobodyAnswers: a flow nobody answers says, once quiet, who should; when the wait
// ends first, the outcome is unknown — the release may still be going — not an error.
func TestFollowWhenNobodyAnswers(t *testing.T) {
	_, _, js := natstest.Start(t)
	c := &chain{t: t}
	req := c.request(manifests)
	seq := publish(t, js, events.Names{}, req)
	w, err := Watch(t.Context(), js, events.Names{}, web, seq)
	require.NoError(t, err)
	defer w.Stop()
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var steps []Step
	done := make(chan Outcome, 1)
	go func() {
		out, err := Follow(ctx, w, web, req.ID(), FollowOptions{QuietAfter: 100 * time.Millisecond}, func(s Step) {
			mu.Lock()
			steps = append(steps, s)
			mu.Unlock()
		})
		assert.NoError(t, err)
		done <- out
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(steps) > 0
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	out := <-done
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "waiting", steps[0].Stage)
	assert.True(t, strings.HasPrefix(steps[0].Text, "no release.rendered after release.requested for 100ms: is the renderer running (or busy)?"), steps[0].Text)
	assert.Equal(t, StateUnknown, out.State)
	assert.Equal(t, ReasonWaitTimeout, out.Reason)
	assert.False(t, out.Succeeded())
	assert.Equal(t, "demo/web: gave up waiting; the release may still be going: troupe status demo/web", out.Summary())
}

// TestFollowSaysWhatItStillWaitsFor: while the health watcher reports nothing new, Follow says
// again, every quiet period, what the last report waits for and why.
func TestFollowSaysWhatItStillWaitsFor(t *testing.T) {
	_, _, js := natstest.Start(t)
	c := &chain{t: t}
	req := c.request(manifests)
	seq := publish(t, js, events.Names{}, req)
	r := c.derive(req, "renderer", events.TypeRendered, 1, events.Rendered{Bundle: digest})
	a := c.derive(r, "applier", events.TypeApplied, 0, events.Applied{Bundle: digest})
	p := c.derive(a, "health", events.TypeProgressing, 0, events.Progressing{Ready: 0, Total: 1, Objects: []events.ObjectStatus{
		{ObjectRef: ref("Deployment", "web"), Status: events.StatusInProgress, Message: "Available: 0/1; pod web-1: Unschedulable: 0/1 nodes are available"}}})
	for _, e := range []event.Event{r, a, p} {
		publish(t, js, events.Names{}, e)
	}
	w, err := Watch(t.Context(), js, events.Names{}, web, seq)
	require.NoError(t, err)
	defer w.Stop()
	ctx, cancel := context.WithCancel(t.Context())
	var mu sync.Mutex
	var waits []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := Follow(ctx, w, web, req.ID(), FollowOptions{QuietAfter: 100 * time.Millisecond}, func(s Step) {
			mu.Lock()
			defer mu.Unlock()
			if s.Stage == "waiting" {
				waits = append(waits, s.Text)
			}
		})
		assert.NoError(t, err)
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(waits) >= 2
	}, 10*time.Second, 10*time.Millisecond, "said again, and again")
	cancel()
	<-done
	assert.Equal(t, "still ready 0/1, waiting for Deployment/web (Available: 0/1; pod web-1: Unschedulable: 0/1 nodes are available)", waits[0])
}

// TestWatchersRideOutANodeKilled: on a 3-node cluster with R3 streams, SIGKILLing the node that
// leads the events stream while a Watcher and a Watchers read loses nothing and repeats nothing:
// both go on with every event published after, in order, as their consumers are made again on
// the nodes left; and a Next with nothing to read returns when its context ends.
func TestWatchersRideOutANodeKilled(t *testing.T) {
	c := natstest.Start3(t)
	_, js := c.Connect(t)
	// A new cluster may still be electing its leaders: provisioning is tried again until it is
	// done (it is idempotent).
	var err error
	require.Eventually(t, func() bool {
		_, err = events.Provision(t.Context(), js, events.ProvisionConfig{Replicas: 3})
		return err == nil
	}, 2*time.Minute, time.Second, "provisioning the 3-node cluster")
	names := events.Names{}
	prod, staging := events.Release{Namespace: "prod", Name: "web"}, events.Release{Namespace: "staging", Name: "web"}
	request := func(rel events.Release) event.Event {
		e, err := events.NewEvent("troupe/test", events.TypeRequested, rel,
			events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/x"}}})
		require.NoError(t, err)
		// Publishing may fail while a leader is elected: again, with the same id, until stored.
		require.Eventually(t, func() bool { _, err := events.NewPublisher(js, names).Publish(t.Context(), e); return err == nil },
			time.Minute, 50*time.Millisecond)
		return e
	}
	first := request(prod)
	info, err := js.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	from := info.CachedInfo().State.FirstSeq
	w, err := Watch(t.Context(), js, names, prod, from)
	require.NoError(t, err)
	defer w.Stop()
	ws, err := WatchAll(t.Context(), js, names, []events.Release{prod, staging}, from)
	require.NoError(t, err)
	defer ws.Stop()
	next := func(w *Watcher) event.Event {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		e, err := w.Next(ctx)
		require.NoError(t, err)
		return e
	}
	assert.Equal(t, first.ID(), next(w).ID())
	assert.Equal(t, first.ID(), next(ws.Of(prod)).ID())

	leader := c.StreamLeader(t.Context(), js, events.StreamName)
	require.GreaterOrEqual(t, leader, 0)
	c.Kill(leader)
	var want []string
	for range 5 {
		want = append(want, request(prod).ID())
		request(staging)
	}
	for _, w := range []*Watcher{w, ws.Of(prod)} {
		var got []string
		for range want {
			got = append(got, next(w).ID())
		}
		assert.Equal(t, want, got, "every event after the kill, in order, once")
	}
	for range want {
		assert.Equal(t, "staging/web", next(ws.Of(staging)).Subject())
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := w.Next(ctx); done <- err }()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(time.Minute):
		t.Fatal("Next did not return when its context ended")
	}
}
