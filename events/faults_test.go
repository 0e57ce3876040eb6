package events_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// TestSubscriberRecreatesDeletedConsumer: a consumer deleted under a running subscriber is
// created again, readiness false meanwhile, and nothing is skipped — neither the event that was
// being handled when it went (its ack went nowhere), nor one published while it was gone, though
// the consumer delivers new events only. (What was acked after the subscriber last read the
// consumer's ack floor may be handled again: handlers are idempotent.)
func TestSubscriberRecreatesDeletedConsumer(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	got := newSeen()
	first, release := make(chan struct{}), make(chan struct{})
	s, err := events.NewSubscriber(js, events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, Concurrency: 1},
		func(ctx context.Context, e event.Event) error {
			if got.add(e.ID()) == 1 && e.Subject() == rel(1).String() {
				close(first)
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		})
	require.NoError(t, err)
	runService(t, s)
	require.True(t, s.Receiving())

	e0 := publishRequest(t, pub, rel(0))
	require.Eventually(t, func() bool { return got.count(e0.ID()) == 1 }, 10*time.Second, 5*time.Millisecond)
	e1 := publishRequest(t, pub, rel(1))
	<-first // e1 is being handled

	// The consumer goes, and an impostor of the same name that the subscriber cannot take over
	// (its ack policy cannot be updated) keeps it from coming back until the test removes it.
	// (Should the subscriber be quicker to create its own, delete that one too.)
	require.Eventually(t, func() bool {
		require.NoError(t, js.DeleteConsumer(t.Context(), events.StreamName, "renderer"))
		_, err = js.CreateConsumer(t.Context(), events.StreamName, jetstream.ConsumerConfig{Durable: "renderer", AckPolicy: jetstream.AckNonePolicy})
		return err == nil
	}, 30*time.Second, time.Millisecond)
	close(release) // e1's ack goes to a consumer that is gone
	e2 := publishRequest(t, pub, rel(2))
	require.Eventually(t, func() bool { return !s.Receiving() }, 30*time.Second, 5*time.Millisecond, "not receiving without its consumer")
	assert.Never(t, s.Receiving, 300*time.Millisecond, 10*time.Millisecond, "receiving on a consumer it could not create")

	require.NoError(t, js.DeleteConsumer(t.Context(), events.StreamName, "renderer"))
	e3 := publishRequest(t, pub, rel(3))
	require.Eventually(t, s.Receiving, 30*time.Second, 5*time.Millisecond, "receiving again")
	require.Eventually(t, func() bool {
		return got.count(e1.ID()) >= 2 && got.count(e2.ID()) >= 1 && got.count(e3.ID()) >= 1
	}, 30*time.Second, 10*time.Millisecond, "e1 again (its ack was lost), e2 and e3: %v", got.n)

	c, err := js.Consumer(t.Context(), events.StreamName, "renderer")
	require.NoError(t, err)
	assert.Equal(t, "troupe service renderer", c.CachedInfo().Config.Description, "recreated with the subscriber's config")
}

// TestSubscriberSurvivesLeaderChange: on a 3-node cluster with R3 streams, SIGKILLing the node
// that leads the events stream (a leader change for the stream and maybe the consumer) loses no
// event: every one published before, during and after is handled.
func TestSubscriberSurvivesLeaderChange(t *testing.T) {
	c := natstest.Start3(t)
	_, js := c.Connect(t)
	_, err := events.Provision(t.Context(), js, events.ProvisionConfig{Replicas: 3})
	require.NoError(t, err)
	pub := events.NewPublisher(js, events.Names{})
	got := newSeen()
	s, err := events.NewSubscriber(js, events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}},
		func(ctx context.Context, e event.Event) error { got.add(e.ID()); return nil })
	require.NoError(t, err)
	runService(t, s)

	publish := func(i int) string {
		e, err := events.NewEvent("troupe/test", events.TypeRequested, rel(i),
			events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/x"}}})
		require.NoError(t, err)
		// Publishing may fail while a leader is elected: again, with the same id, until stored.
		require.Eventually(t, func() bool { _, err := pub.Publish(t.Context(), e); return err == nil }, time.Minute, 50*time.Millisecond)
		return e.ID()
	}
	var ids []string
	for i := range 10 {
		ids = append(ids, publish(i))
	}
	leader := c.StreamLeader(t.Context(), js, events.StreamName)
	require.GreaterOrEqual(t, leader, 0)
	c.Kill(leader)
	for i := 10; i < 20; i++ {
		ids = append(ids, publish(i))
	}
	c.Start(leader)
	for i := 20; i < 30; i++ {
		ids = append(ids, publish(i))
	}
	require.Eventually(t, func() bool {
		for _, id := range ids {
			if got.count(id) == 0 {
				return false
			}
		}
		return true
	}, 2*time.Minute, 20*time.Millisecond, "every event handled")
	assert.True(t, s.Receiving())
}

// runService starts a subscriber until the test ends and waits until it is ready.
func runService(t *testing.T, s *events.Subscriber) {
	t.Helper()
	natstest.Run(t, s)
}

// TestAwaitRidesOutAServerRestart: a command's publish while the only NATS server is down for a
// few seconds fails without Await and succeeds with it, once, when the server is back.
func TestAwaitRidesOutAServerRestart(t *testing.T) {
	c := natstest.StartProcess(t)
	_, js := c.Connect(t)
	_, err := events.Provision(t.Context(), js, events.ProvisionConfig{})
	require.NoError(t, err)
	pub := events.NewPublisher(js, events.Names{})
	e, err := events.NewEvent("troupe/test", events.TypeRequested, rel(1),
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/x"}}})
	require.NoError(t, err)

	c.Kill(0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	_, err = pub.Publish(ctx, e)
	cancel()
	require.Error(t, err, "published with the server down")
	require.True(t, events.Unavailable(err), "%v is NATS not answering", err)

	back := make(chan struct{})
	go func() { time.Sleep(3 * time.Second); c.Start(0); close(back) }()
	tries := 0
	err = events.Await(t.Context(), time.Minute, func() error {
		tries++
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := pub.Publish(ctx, e)
		return err
	})
	<-back
	require.NoError(t, err)
	assert.Greater(t, tries, 1, "the first try was made with the server down")

	info, err := js.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	assert.EqualValues(t, 1, info.CachedInfo().State.Msgs, "one message for the event")
}

// TestAwaitGivesUp: Await does not retry what waiting cannot cure, and stops after its patience.
func TestAwaitGivesUp(t *testing.T) {
	wrong := errors.New("wrong")
	tries := 0
	err := events.Await(t.Context(), time.Minute, func() error { tries++; return wrong })
	assert.ErrorIs(t, err, wrong)
	assert.Equal(t, 1, tries)

	tries = 0
	err = events.Await(t.Context(), time.Second, func() error { tries++; return nats.ErrNoResponders })
	assert.ErrorIs(t, err, nats.ErrNoResponders)
	// Tries at 0, 250ms and 750ms (a slow machine: fewer); the next wait, 1s, would pass the patience.
	assert.GreaterOrEqual(t, tries, 2)
	assert.LessOrEqual(t, tries, 3)
}

// TestUnavailableIsJetStreamNotAnswering: JetStream's 503 (10008, "JetStream system temporarily
// unavailable", met by a chaos run's CLI while a NATS node was down) is waited out; an API error
// that says the request is wrong is not.
func TestUnavailableIsJetStreamNotAnswering(t *testing.T) {
	assert.True(t, events.Unavailable(fmt.Errorf("read stream: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"})))
	assert.False(t, events.Unavailable(fmt.Errorf("read stream: %w", &jetstream.APIError{Code: 404, ErrorCode: jetstream.JSErrCodeStreamNotFound})))
}

// TestLostRequestDoesNotWaitOutTheHandler: a JetStream request whose answer never comes (the
// server it went to died with it) fails after JetStream's own API timeout, not at the end of the
// handler's time (Timeout, StopAt), which still ends the handler when it is up.
func TestLostRequestDoesNotWaitOutTheHandler(t *testing.T) {
	srv := natstest.Server(t)
	nc, err := nats.Connect(srv.ClientURL())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	// A JetStream API whose requests are taken and never answered: to the caller, each one a
	// request lost with a dead server.
	swallow, err := nc.Subscribe("LOST.API.>", func(*nats.Msg) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = swallow.Unsubscribe() })
	js, err := jetstream.NewWithAPIPrefix(nc, "LOST.API", jetstream.WithDefaultTimeout(200*time.Millisecond))
	require.NoError(t, err)

	var callErr, ctxErr error
	h := events.Timeout(10 * time.Second)(func(ctx context.Context, e event.Event) error {
		_, callErr = js.Stream(ctx, events.StreamName)
		ctxErr = ctx.Err()
		return nil
	})
	require.NoError(t, h(t.Context(), event.New()))
	assert.ErrorIs(t, callErr, context.DeadlineExceeded, "the lost request timed out")
	assert.NoError(t, ctxErr, "on its own timeout, long before the handler's time was up")

	// StopAt still ends a handler when its time is up, saying why.
	ctx, cancel := events.StopAt(t.Context(), time.Now().Add(50*time.Millisecond))
	defer cancel()
	_, hasDeadline := ctx.Deadline()
	assert.False(t, hasDeadline)
	<-ctx.Done()
	assert.ErrorIs(t, context.Cause(ctx), context.DeadlineExceeded)
}
