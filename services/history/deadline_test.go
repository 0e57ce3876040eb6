package history_test

import (
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
)

// watchdogEnv is NATS with n history replicas (each with its deadline watchdog) and nothing
// else: no renderer, applier or health watcher answers unless the test publishes for them.
type watchdogEnv struct {
	t   *testing.T
	js  jetstream.JetStream
	pub *events.Publisher
}

func newWatchdogEnv(t *testing.T, replicas int) *watchdogEnv {
	t.Helper()
	_, _, js := natstest.Start(t)
	for range replicas {
		svc, err := history.New(t.Context(), js, history.Options{Grace: 200 * time.Millisecond})
		require.NoError(t, err)
		natstest.Run(t, svc)
	}
	return &watchdogEnv{t: t, js: js, pub: events.NewPublisher(js, events.Names{})}
}

func (w *watchdogEnv) publish(e event.Event) event.Event {
	w.t.Helper()
	_, err := w.pub.Publish(w.t.Context(), e)
	require.NoError(w.t, err)
	return e
}

func (w *watchdogEnv) request(rel events.Release, timeout time.Duration) event.Event {
	w.t.Helper()
	e, err := events.NewEvent("troupe/cli", events.TypeRequested, rel, events.Requested{
		Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, Options: events.Options{Timeout: events.Duration(timeout)}})
	require.NoError(w.t, err)
	return w.publish(e)
}

// terminals returns every terminal event stored for rel, waiting until at least want are there
// (or 20s), then a little longer, so that one too many is seen. Counted in the stream: every
// stored message, whatever its id.
func (w *watchdogEnv) terminals(rel events.Release, want int) []event.Event {
	w.t.Helper()
	var out []event.Event
	deadline := time.Now().Add(20 * time.Second)
	settled := time.Time{}
	for time.Now().Before(deadline) {
		out = out[:0]
		for _, m := range readStream(w.t, w.js, "troupe.release."+rel.Namespace+"."+rel.Name+".>") {
			if events.EndsFlow(m.Type()) {
				out = append(out, m)
			}
		}
		if len(out) >= want && settled.IsZero() {
			settled = time.Now()
		}
		if !settled.IsZero() && time.Since(settled) > time.Second {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

func readStream(t *testing.T, js jetstream.JetStream, filter string) []event.Event {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	if info.NumPending == 0 {
		return nil
	}
	batch, err := cons.Fetch(int(info.NumPending), jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var out []event.Event
	for m := range batch.Messages() {
		e, err := events.Names{}.Decode(m.Subject(), m.Headers(), m.Data())
		require.NoError(t, err)
		out = append(out, e)
	}
	return out
}

// No renderer runs: the revision ends anyway, once, at its deadline, naming the renderer.
func TestDeadlineEndsAFlowNobodyAnswers(t *testing.T) {
	w := newWatchdogEnv(t, 2)
	rel := events.Release{Namespace: "ns", Name: "nobody"}
	req := w.request(rel, time.Second)

	ends := w.terminals(rel, 1)
	require.Len(t, ends, 1, "one terminal event, whatever the number of watchdogs")
	f, err := events.Data[events.Failed](ends[0])
	require.NoError(t, err)
	assert.Equal(t, history.ReasonDeadlineExceeded, f.Reason)
	assert.Equal(t, events.StageRender, f.Stage)
	assert.Contains(t, f.Message, "renderer")
	assert.Equal(t, req.ID(), events.CorrelationID(ends[0]))
	assert.Equal(t, 1, events.Revision(ends[0]), "the revision is named although no renderer numbered it")
	assert.Equal(t, "troupe/deadlines", ends[0].Source())
	assert.False(t, ends[0].Time().Before(events.FlowDeadline(req)), "not before the deadline")

	// A stage that answers late finds the flow ended: its terminal event is not published.
	late, err := events.Derive(req, "troupe/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	_, err = w.pub.Publish(t.Context(), late)
	require.ErrorIs(t, err, events.ErrFlowEnded)
	assert.Len(t, w.terminals(rel, 1), 1)
}

// The stage that holds the flow is named: after release.rendered, the applier.
func TestDeadlineNamesTheStageThatDidNotAnswer(t *testing.T) {
	w := newWatchdogEnv(t, 1)
	rel := events.Release{Namespace: "ns", Name: "stuck-apply"}
	req := w.request(rel, time.Second)
	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + zeros, Size: 1})
	require.NoError(t, err)
	events.WithRevision(&rendered, 1)
	w.publish(rendered)

	ends := w.terminals(rel, 1)
	require.Len(t, ends, 1)
	f, err := events.Data[events.Failed](ends[0])
	require.NoError(t, err)
	assert.Equal(t, events.StageApply, f.Stage)
	assert.Contains(t, f.Message, "no release.applied after release.rendered")
	assert.Contains(t, f.Message, "applier")
}

// A flow that ends in time gets nothing more from the watchdog.
func TestDeadlineLeavesEndedFlowsAlone(t *testing.T) {
	w := newWatchdogEnv(t, 1)
	rel := events.Release{Namespace: "ns", Name: "fine"}
	req := w.request(rel, time.Second)
	ready, err := events.Derive(req, "troupe/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	w.publish(ready)
	time.Sleep(2 * time.Second) // past the deadline and its grace
	ends := w.terminals(rel, 1)
	require.Len(t, ends, 1)
	assert.Equal(t, events.TypeReady, ends[0].Type())
}

// A stage claimed its terminal event and died before publishing it: the watchdog publishes
// that event — not a failure of its own.
func TestDeadlinePublishesAClaimNobodyPublished(t *testing.T) {
	w := newWatchdogEnv(t, 1)
	rel := events.Release{Namespace: "ns", Name: "claimed"}
	req := w.request(rel, time.Second)
	ready, err := events.Derive(req, "troupe/health", events.TypeReady, events.Ready{Objects: 1})
	require.NoError(t, err)
	flows, err := events.NewFlows(t.Context(), w.js, events.Names{})
	require.NoError(t, err)
	msg, err := events.Names{}.Message(ready)
	require.NoError(t, err)
	require.NoError(t, flows.Claim(t.Context(), ready, msg.Data))

	ends := w.terminals(rel, 1)
	require.Len(t, ends, 1)
	assert.Equal(t, ready.ID(), ends[0].ID())
	assert.Equal(t, events.TypeReady, ends[0].Type())
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"

// A revision waiting at its gates past its deadline: the watchdog names the gates that gave no
// verdict — those its release.rendered named, and those its request named — not the one that
// answered.
func TestDeadlineNamesTheSilentGate(t *testing.T) {
	w := newWatchdogEnv(t, 1)
	rel := events.Release{Namespace: "gated", Name: "waits"}
	req := w.request(rel, time.Second)
	bundle := "sha256:" + zeros
	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: bundle, Size: 1,
		Gates: []string{"approval", "policy"}, Options: events.Options{Gates: []string{"security"}}})
	require.NoError(t, err)
	events.WithRevision(&rendered, 1)
	w.publish(rendered)
	approved, err := events.Derive(rendered, "troupe/gate-policy", events.TypeApproved, events.Approved{Gate: "policy", Revision: 1, Bundle: bundle})
	require.NoError(t, err)
	w.publish(approved)

	ends := w.terminals(rel, 1)
	require.Len(t, ends, 1)
	f, err := events.Data[events.Failed](ends[0])
	require.NoError(t, err)
	assert.Equal(t, history.ReasonDeadlineExceeded, f.Reason)
	assert.Equal(t, events.StageGate, f.Stage)
	assert.Contains(t, f.Message, "waiting for gate approval, security: no verdict on revision 1")
	assert.NotContains(t, f.Message, "gate policy", "policy answered")
}
