package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func TestAtLeastOnceAcrossRestart(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	cfg := events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, Concurrency: 1}
	got := newSeen()
	var handled atomic.Int32
	h := func(ctx context.Context, e event.Event) error {
		time.Sleep(5 * time.Millisecond)
		got.add(e.ID())
		handled.Add(1)
		return nil
	}

	stop := run(t, js, cfg, h)
	var ids []string
	for i := range 40 {
		ids = append(ids, publishRequest(t, pub, rel(i)).ID())
	}
	require.Eventually(t, func() bool { return handled.Load() >= 10 }, 10*time.Second, 5*time.Millisecond)
	stop() // mid-stream: some handled, the rest not yet
	require.Less(t, got.distinct(), 40, "the restart must happen with work left")

	for i := 40; i < 60; i++ { // published while no replica runs
		ids = append(ids, publishRequest(t, pub, rel(i)).ID())
	}
	run(t, js, cfg, h)
	require.Eventually(t, func() bool { return got.distinct() == 60 }, 20*time.Second, 10*time.Millisecond)
	for _, id := range ids {
		assert.GreaterOrEqual(t, got.count(id), 1, id)
	}
	require.Eventually(t, func() bool {
		c, err := js.Consumer(t.Context(), events.StreamName, "renderer")
		require.NoError(t, err)
		info, err := c.Info(t.Context())
		require.NoError(t, err)
		return info.NumAckPending == 0 && info.NumPending == 0
	}, 10*time.Second, 10*time.Millisecond, "every event acked")
}

func TestDuplicateIDStoredOnce(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	e := publishRequest(t, pub, podinfo)
	ack, err := pub.Publish(t.Context(), e)
	require.NoError(t, err)
	assert.True(t, ack.Duplicate, "the stream recognised the id")
	assert.Len(t, releaseEvents(t, js, events.TypeRequested), 1)

	// A redelivered handler derives the same id for its output: stored once too.
	for range 2 {
		out, err := events.Derive(e, "troupe/renderer", events.TypeFailed, events.Failed{Stage: "render", Reason: "x", Message: "m"})
		require.NoError(t, err)
		_, err = pub.Publish(t.Context(), out)
		require.NoError(t, err)
	}
	assert.Len(t, releaseEvents(t, js, events.TypeFailed), 1)
}

func TestPanicRetriedThenDeadLettered(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	reg := prometheus.NewRegistry()
	m, err := events.NewMetrics(reg)
	require.NoError(t, err)
	calls := newSeen()
	cfg := fastRetry(events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested},
		MaxDeliver: 3, FailStage: events.StageRender, Metrics: m})
	run(t, js, cfg, func(ctx context.Context, e event.Event) error {
		calls.add(e.ID())
		if e.Subject() == "prod/podinfo" {
			panic("nil map in values")
		}
		return nil
	})

	bad := publishRequest(t, pub, podinfo)
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 3, calls.count(bad.ID()), "retried up to MaxDeliver")

	dl := deadLetters(t, js)[0]
	assert.Equal(t, "renderer", dl.Service)
	assert.Equal(t, "troupe.release.prod.podinfo.requested", dl.Subject)
	assert.Contains(t, dl.Reason, "panicked")
	assert.Contains(t, dl.Reason, "nil map in values")
	assert.Contains(t, dl.Reason, "3 deliveries")
	assert.EqualValues(t, 3, dl.Deliveries)
	orig, err := events.Names{}.Decode(dl.Subject, dl.Header, dl.Data)
	require.NoError(t, err, "the dead letter carries the original event")
	assert.Equal(t, bad.ID(), orig.ID())

	// The user sees why.
	require.Eventually(t, func() bool { return len(releaseEvents(t, js, events.TypeFailed)) == 1 }, 5*time.Second, 10*time.Millisecond)
	failed := releaseEvents(t, js, events.TypeFailed)[0]
	assert.Equal(t, bad.ID(), events.CorrelationID(failed))
	f, err := events.Data[events.Failed](failed)
	require.NoError(t, err)
	assert.Equal(t, events.StageRender, f.Stage)
	assert.Equal(t, "max_deliveries", f.Reason)
	assert.Contains(t, f.Message, "nil map in values")

	// The service is still running.
	good := publishRequest(t, pub, rel(1))
	require.Eventually(t, func() bool { return calls.count(good.ID()) == 1 }, 5*time.Second, 10*time.Millisecond)

	assert.Equal(t, 1.0, metricValue(t, reg, "troupe_events_dead_lettered_total", "cause", "max_deliveries"))
	assert.Equal(t, 2.0, metricValue(t, reg, "troupe_events_redelivered_total", "type", events.TypeRequested))
	assert.Equal(t, 3.0, metricValue(t, reg, "troupe_events_failed_total", "type", events.TypeRequested))
	assert.Equal(t, 1.0, metricValue(t, reg, "troupe_events_handled_total", "outcome", "ok"))
}

func TestTerminalDeadLettersAtOnce(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	calls := newSeen()
	cfg := fastRetry(events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, FailStage: events.StageRender})
	run(t, js, cfg, func(ctx context.Context, e event.Event) error {
		calls.add(e.ID())
		return events.Reject("not_a_chart", fmt.Errorf("charts/podinfo: Chart.yaml missing"))
	})
	e := publishRequest(t, pub, podinfo)
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return len(releaseEvents(t, js, events.TypeFailed)) == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // a retry, if there were one, would have come by now
	assert.Equal(t, 1, calls.count(e.ID()), "a terminal error is never retried")
	assert.Contains(t, deadLetters(t, js)[0].Reason, "Chart.yaml missing")
	f, err := events.Data[events.Failed](releaseEvents(t, js, events.TypeFailed)[0])
	require.NoError(t, err)
	assert.Equal(t, "not_a_chart", f.Reason)
	assert.Contains(t, f.Message, "Chart.yaml missing")
}

func TestTransientErrorRetriedWithBackoff(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	calls := newSeen()
	var mu sync.Mutex
	var at []time.Time
	cfg := events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested},
		Backoff: []time.Duration{50 * time.Millisecond, 200 * time.Millisecond}}
	run(t, js, cfg, func(ctx context.Context, e event.Event) error {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		if calls.add(e.ID()) < 3 {
			return errFlaky
		}
		return nil
	})
	e := publishRequest(t, pub, podinfo)
	require.Eventually(t, func() bool { return calls.count(e.ID()) == 3 }, 10*time.Second, 10*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	assert.GreaterOrEqual(t, at[1].Sub(at[0]), 50*time.Millisecond, "first backoff")
	assert.GreaterOrEqual(t, at[2].Sub(at[1]), 200*time.Millisecond, "second backoff")
	assert.Empty(t, deadLetters(t, js))
}

func TestReplicasSplitWork(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	got := newSeen()
	var byReplica [2]atomic.Int32
	cfg := events.SubscriberConfig{Service: "applier", Types: []string{events.TypeRequested}, Concurrency: 2}
	for i := range 2 {
		nc, err := nats.Connect(js.Conn().ConnectedUrl())
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		rjs, err := jetstream.New(nc)
		require.NoError(t, err)
		run(t, rjs, cfg, func(ctx context.Context, e event.Event) error {
			time.Sleep(2 * time.Millisecond)
			got.add(e.ID())
			byReplica[i].Add(1)
			return nil
		})
	}
	var ids []string
	for i := range 200 {
		ids = append(ids, publishRequest(t, pub, rel(i)).ID())
	}
	require.Eventually(t, func() bool { return got.distinct() == 200 }, 20*time.Second, 10*time.Millisecond)
	for _, id := range ids {
		assert.GreaterOrEqual(t, got.count(id), 1)
	}
	assert.Positive(t, byReplica[0].Load(), "replica 0 took a share")
	assert.Positive(t, byReplica[1].Load(), "replica 1 took a share")
	assert.EqualValues(t, 200, byReplica[0].Load()+byReplica[1].Load(), "no event handled twice without a failure")
}

func TestMalformedDeadLettered(t *testing.T) {
	_, _, js := natstest.Start(t)
	calls := newSeen()
	cfg := events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, FailStage: events.StageRender}
	run(t, js, cfg, func(ctx context.Context, e event.Event) error { calls.add(e.ID()); return nil })

	_, err := js.Publish(t.Context(), "troupe.release.prod.podinfo.requested", []byte("not a cloudevent {"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(deadLetters(t, js)) == 1 }, 10*time.Second, 10*time.Millisecond)
	dl := deadLetters(t, js)[0]
	assert.Equal(t, "not a cloudevent {", string(dl.Data), "the original bytes are kept")
	assert.Contains(t, dl.Reason, "malformed event")
	assert.Contains(t, dl.Reason, "not a structured-mode CloudEvent")
	assert.Equal(t, "troupe.dlq.renderer.release.prod.podinfo.requested", events.Names{}.DeadLetterSubject(dl.Service, dl.Subject))
	assert.Zero(t, calls.distinct(), "the handler never sees it")

	require.Eventually(t, func() bool { return len(releaseEvents(t, js, events.TypeFailed)) == 1 }, 5*time.Second, 10*time.Millisecond)
	f, err := events.Data[events.Failed](releaseEvents(t, js, events.TypeFailed)[0])
	require.NoError(t, err)
	assert.Equal(t, "malformed_event", f.Reason)
}

func TestLongWorkHeartbeats(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	calls := newSeen()
	cfg := events.SubscriberConfig{Service: "applier", Types: []string{events.TypeRequested}, AckWait: time.Second}
	run(t, js, cfg, func(ctx context.Context, e event.Event) error {
		calls.add(e.ID())
		time.Sleep(3 * time.Second) // three AckWaits
		return nil
	})
	e := publishRequest(t, pub, podinfo)
	require.Eventually(t, func() bool { return calls.count(e.ID()) == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(3500 * time.Millisecond)
	assert.Equal(t, 1, calls.count(e.ID()), "in-progress heartbeats kept the server from redelivering")
}

func TestGracefulDrain(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	calls := newSeen()
	started := make(chan struct{}, 1)
	var finished atomic.Bool
	cfg := events.SubscriberConfig{Service: "applier", Types: []string{events.TypeRequested}, Concurrency: 1}
	stop := run(t, js, cfg, func(ctx context.Context, e event.Event) error {
		calls.add(e.ID())
		started <- struct{}{}
		time.Sleep(300 * time.Millisecond)
		finished.Store(ctx.Err() == nil)
		return nil
	})
	e := publishRequest(t, pub, podinfo)
	<-started
	stop()
	assert.True(t, finished.Load(), "the running handler finished with a live ctx")

	// The ack itself, as the server has it once Start returned: not a second run that would only
	// see a redelivery after AckWait (30s), so that a drain that forgot to ack fails here.
	cons, err := js.Consumer(t.Context(), events.StreamName, "applier")
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.Delivered.Consumer, "delivered once")
	assert.Equal(t, 0, info.NumAckPending, "nothing waits for an ack")
	assert.Equal(t, uint64(1), info.AckFloor.Consumer, "the event was acked before Start returned")
	assert.Equal(t, 0, info.NumRedelivered)
	assert.Equal(t, 1, calls.count(e.ID()))
}

func TestServiceDiscovery(t *testing.T) {
	_, nc, js := natstest.Start(t)
	cfg := events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested},
		Produces: []string{events.TypeRendered, events.TypeFailed}}
	run(t, js, cfg, func(ctx context.Context, e event.Event) error { return nil })
	var info struct {
		Name     string            `json:"name"`
		Metadata map[string]string `json:"metadata"`
	}
	require.Eventually(t, func() bool {
		resp, err := nc.Request("$SRV.INFO.renderer", nil, time.Second)
		return err == nil && jsonUnmarshal(resp.Data, &info) == nil && info.Name == "renderer"
	}, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, events.TypeRequested, info.Metadata[events.MetaConsumes])
	assert.Equal(t, strings.Join([]string{events.TypeRendered, events.TypeFailed}, ","), info.Metadata[events.MetaProduces])
}

func TestSubscriberConfigErrors(t *testing.T) {
	_, _, js := natstest.Start(t)
	h := func(ctx context.Context, e event.Event) error { return nil }
	for name, cfg := range map[string]events.SubscriberConfig{
		"no service":  {Types: []string{events.TypeRequested}},
		"bad service": {Service: "my.service", Types: []string{events.TypeRequested}},
		"no types":    {Service: "x"},
		"bad stage":   {Service: "x", Types: []string{events.TypeRequested}, FailStage: "deploy"},
	} {
		_, err := events.NewSubscriber(js, cfg, h)
		assert.Error(t, err, name)
	}
	s, err := events.NewSubscriber(js, events.SubscriberConfig{Service: "x", Types: []string{"nope"}}, h)
	require.NoError(t, err)
	assert.ErrorIs(t, s.Start(t.Context()), events.ErrUnknownType)
}

// TestBinaryModeEventHandled: an event written by another CloudEvents client in binary mode
// (ce-* headers) reaches the handler like troupe's own.
func TestBinaryModeEventHandled(t *testing.T) {
	_, _, js := natstest.Start(t)
	got := make(chan event.Event, 1)
	run(t, js, events.SubscriberConfig{Service: "notifier", Types: []string{events.TypeReady}},
		func(ctx context.Context, e event.Event) error { got <- e; return nil })
	msg := nats.NewMsg("troupe.release.prod.podinfo.ready")
	msg.Header.Set("ce-specversion", "1.0")
	msg.Header.Set("ce-id", "bin-1")
	msg.Header.Set("ce-source", "example/other-client")
	msg.Header.Set("ce-type", events.TypeReady)
	msg.Header.Set("ce-subject", "prod/podinfo")
	msg.Header.Set("ce-correlationid", "corr-1")
	msg.Header.Set("content-type", "application/json")
	msg.Data = []byte(`{"timeToReady":"2s","objects":4}`)
	_, err := js.PublishMsg(t.Context(), msg, jetstream.WithMsgID("bin-1"))
	require.NoError(t, err)
	select {
	case e := <-got:
		assert.Equal(t, "bin-1", e.ID())
		assert.Equal(t, "corr-1", events.CorrelationID(e))
		r, err := events.Data[events.Ready](e)
		require.NoError(t, err)
		assert.Equal(t, 4, r.Objects)
	case <-time.After(10 * time.Second):
		t.Fatal("binary-mode event not handled")
	}
}

// TestOneFailurePath: a handler returns an events.Error and the subscriber alone decides — retry
// a transient one, give up on a terminal one at once — and publishes release.failed once, with
// the error's stage, reason, message, objects and revision. Publishes are counted on the wire (a
// core NATS subscription sees every publish, duplicates the stream would drop included).
func TestOneFailurePath(t *testing.T) {
	ref := events.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "prod", Name: "podinfo"}
	tests := []struct {
		name       string
		err        error
		wantCalls  int
		wantStage  string
		wantReason string
		wantRev    int
		wantObject bool
	}{
		{"terminal, with stage, objects and revision",
			&events.Error{Stage: events.StageApply, Reason: "ownership_conflict", Message: "Deployment prod/podinfo: owned by release other",
				Objects: []events.ObjectStatus{{ObjectRef: ref, Status: "Failed", Message: "owned by release other"}}, Revision: 7},
			1, events.StageApply, "ownership_conflict", 7, true},
		{"transient: retried, then given up with its reason",
			&events.Error{Reason: "cluster_unreachable", Message: "the API server did not answer", Transient: true},
			3, events.StageRender, "cluster_unreachable", 0, false},
		{"wrapped terminal keeps its reason",
			fmt.Errorf("render podinfo: %w", events.Reject("not_a_chart", errors.New("Chart.yaml missing"))),
			1, events.StageRender, "not_a_chart", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, nc, js := natstest.Start(t)
			published := onTheWire(t, nc, "troupe.release.*.*.failed")
			calls := newSeen()
			cfg := fastRetry(events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested},
				MaxDeliver: 3, FailStage: events.StageRender})
			run(t, js, cfg, func(ctx context.Context, e event.Event) error {
				calls.add(e.ID())
				return tc.err
			})
			e := publishRequest(t, events.NewPublisher(js, events.Names{}), podinfo)
			require.Eventually(t, func() bool { return len(releaseEvents(t, js, events.TypeFailed)) == 1 }, 10*time.Second, 10*time.Millisecond)
			time.Sleep(300 * time.Millisecond) // a second publish or a retry, if there were one, would have come by now
			assert.Equal(t, tc.wantCalls, calls.count(e.ID()))
			assert.EqualValues(t, 1, published.Load(), "release.failed published once")
			assert.Len(t, deadLetters(t, js), 1)

			failed := releaseEvents(t, js, events.TypeFailed)[0]
			assert.Equal(t, "troupe/renderer", failed.Source())
			assert.Equal(t, tc.wantRev, events.Revision(failed))
			f, err := events.Data[events.Failed](failed)
			require.NoError(t, err)
			assert.Equal(t, tc.wantStage, f.Stage)
			assert.Equal(t, tc.wantReason, f.Reason)
			assert.Equal(t, events.ReasonOf(tc.err), f.Reason)
			assert.NotContains(t, f.Message, tc.wantReason+":", "the reason rides beside the message")
			if tc.wantObject {
				require.Len(t, f.Objects, 1)
				assert.Equal(t, ref, f.Objects[0].ObjectRef)
			}
		})
	}
}

// TestFailureThatCannotBePublishedAsGiven: a failure too large for a NATS message, or with a
// reason that is no code, still reaches the user once — trimmed — and never loops.
func TestFailureThatCannotBePublishedAsGiven(t *testing.T) {
	var objects []events.ObjectStatus
	for i := range 100 {
		objects = append(objects, events.ObjectStatus{ObjectRef: events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap",
			Namespace: "prod", Name: fmt.Sprintf("cm-%d", i)}, Status: events.StatusFailed, Message: strings.Repeat("webhook says no. ", 1800)})
	}
	tests := []struct {
		name        string
		err         *events.Error
		wantReason  string
		wantObjects int
	}{
		{"a hundred objects with 30 KB messages each", &events.Error{Reason: "invalid_object", Message: "rejected", Objects: objects}, "invalid_object", 100},
		{"a reason that is no code", &events.Error{Reason: "Not A Code", Message: "rejected", Objects: objects[:1]}, "terminal", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, nc, js := natstest.Start(t)
			published := onTheWire(t, nc, "troupe.release.*.*.failed")
			calls := newSeen()
			run(t, js, fastRetry(events.SubscriberConfig{Service: "applier", Types: []string{events.TypeRequested}, FailStage: events.StageApply}),
				func(ctx context.Context, e event.Event) error { calls.add(e.ID()); return tc.err })
			e := publishRequest(t, events.NewPublisher(js, events.Names{}), podinfo)
			require.Eventually(t, func() bool { return len(releaseEvents(t, js, events.TypeFailed)) == 1 }, 10*time.Second, 10*time.Millisecond)
			time.Sleep(300 * time.Millisecond)
			assert.Equal(t, 1, calls.count(e.ID()), "given up on once, not looping")
			assert.EqualValues(t, 1, published.Load(), "one release.failed on the wire")
			f, err := events.Data[events.Failed](releaseEvents(t, js, events.TypeFailed)[0])
			require.NoError(t, err)
			assert.Equal(t, tc.wantReason, f.Reason)
			assert.Equal(t, "rejected", f.Message)
			require.Len(t, f.Objects, tc.wantObjects)
			for _, o := range f.Objects {
				assert.LessOrEqual(t, len(o.Message), 1<<10)
			}
		})
	}
}

// onTheWire counts every message published on subject from now on, as a core NATS subscriber sees
// them: duplicates the stream drops included.
func onTheWire(t *testing.T, nc *nats.Conn, subject string) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	sub, err := nc.Subscribe(subject, func(*nats.Msg) { n.Add(1) })
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &n
}
