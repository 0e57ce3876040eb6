package health_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

// TestRefusedReadyIsRetried: the stream refuses health's release.ready (it is full and discards
// new messages, as a stream that lost its leader or hit a limit refuses). Health tries again
// until the stream takes it, and records the phase ready only once the stream has it: exactly
// one release.ready of the revision is stored, none is lost.
func TestRefusedReadyIsRetried(t *testing.T) {
	e, ns, rel, w, applied, readySubject := progressingOnLate(t)
	attempts := e.attempts(readySubject)
	phases := e.phases(rel, readySubject)
	restore := e.refuse()
	_, err := e.applier.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{configMap(ns, "late")}})
	require.NoError(t, err)

	select {
	case <-attempts:
	case <-time.After(60 * time.Second):
		t.Fatal("health never tried to publish release.ready")
	}
	for retried := false; !retried; {
		select {
		case <-attempts:
			retried = true
		case p := <-phases:
			require.NotEqual(t, "ready", p.phase, "the phase is recorded ready while the stream refused release.ready")
		case <-time.After(60 * time.Second):
			t.Fatal("health did not try release.ready again after the stream refused it")
		}
	}

	restore()
	e.readyOnce(w, phases, rel, applied)
}

// attempts reports every message published on subject, whether the stream stores it or not.
func (e *env) attempts(subject string) <-chan struct{} {
	e.t.Helper()
	got := make(chan struct{}, 1000)
	sub, err := e.js.Conn().Subscribe(subject, func(*nats.Msg) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return got
}

// recorded is one write of rel's record in the health bucket: its phase, and whether the stream
// held a release.ready of rel when the write was seen.
type recorded struct {
	phase     string
	published bool
}

// phases reports every write of rel's record in the health bucket from now on.
func (e *env) phases(rel events.Release, readySubject string) <-chan recorded {
	e.t.Helper()
	kv, err := e.js.KeyValue(e.t.Context(), events.KVHealth)
	require.NoError(e.t, err)
	stream, err := e.js.Stream(e.t.Context(), events.StreamName)
	require.NoError(e.t, err)
	watcher, err := kv.Watch(e.t.Context(), rel.Namespace+"."+rel.Name, jetstream.UpdatesOnly())
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = watcher.Stop() })
	out := make(chan recorded, 1000)
	go func() {
		for entry := range watcher.Updates() {
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue
			}
			// Whether the stream has release.ready: asked again when the asking fails (a
			// loaded machine's API timeout is no "not there").
			_, err := stream.GetLastMsgForSubject(e.t.Context(), readySubject)
			for try := 0; err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && try < 10; try++ {
				time.Sleep(100 * time.Millisecond)
				_, err = stream.GetLastMsgForSubject(e.t.Context(), readySubject)
			}
			out <- recorded{phase: phase(entry.Value()), published: err == nil}
		}
	}()
	return out
}

// refuse makes the events stream refuse every new message until the returned restore.
func (e *env) refuse() (restore func()) {
	e.t.Helper()
	stream, err := e.js.Stream(e.t.Context(), events.StreamName)
	require.NoError(e.t, err)
	cfg := stream.CachedInfo().Config
	full := cfg
	full.MaxMsgs, full.Discard = 1, jetstream.DiscardNew
	_, err = e.js.UpdateStream(e.t.Context(), full)
	require.NoError(e.t, err)
	return func() {
		e.t.Helper()
		_, err := e.js.UpdateStream(e.t.Context(), cfg)
		require.NoError(e.t, err)
	}
}

// stored counts, per revision, the events of type typ of rel the stream holds.
func (e *env) stored(rel events.Release, typ string) map[int]int {
	e.t.Helper()
	subject, err := events.Names{}.Subject(rel, typ)
	require.NoError(e.t, err)
	stream, err := e.js.Stream(e.t.Context(), events.StreamName)
	require.NoError(e.t, err)
	info, err := stream.Info(e.t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(e.t, err)
	n := info.State.Subjects[subject]
	counts := map[int]int{}
	if n == 0 {
		return counts
	}
	c, err := e.js.OrderedConsumer(e.t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(e.t, err)
	for range n {
		msg, err := c.Next()
		require.NoError(e.t, err)
		ev, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(e.t, err)
		counts[events.Revision(ev)]++
	}
	return counts
}

// TestDroppedConnectionAtReadyPublish: the server drops health's NATS connection the moment
// health publishes release.ready (seen on the wire by another connection), so the ack may never
// come back. Health publishes again until acked — the derived id makes a second copy a
// duplicate — and records the phase only once the stream has the event: exactly one
// release.ready of the revision is stored.
func TestDroppedConnectionAtReadyPublish(t *testing.T) {
	e, ns, rel, w, applied, readySubject := progressingOnLate(t)
	phases := e.phases(rel, readySubject)
	healthConn, err := e.js.Conn().GetClientID()
	require.NoError(t, err)
	observer, _ := natstest.Connect(t, e.srv)
	dropped := make(chan struct{})
	var once sync.Once
	_, err = observer.Subscribe(readySubject, func(*nats.Msg) {
		once.Do(func() {
			assert.NoError(t, e.srv.DisconnectClientByID(healthConn))
			close(dropped)
		})
	})
	require.NoError(t, err)
	require.NoError(t, observer.Flush())

	_, err = e.applier.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{configMap(ns, "late")}})
	require.NoError(t, err)
	select {
	case <-dropped:
	case <-time.After(60 * time.Second):
		t.Fatal("health never published release.ready")
	}

	e.readyOnce(w, phases, rel, applied)
}

// readyOnce asserts the end both faults must come to: release.ready of the revision applied
// reaches the stream, the phase is recorded ready only once the stream has it, and the stream
// holds exactly one release.ready of revision 1 and no release.failed.
func (e *env) readyOnce(w *watch, phases <-chan recorded, rel events.Release, applied event.Event) {
	e.t.Helper()
	ready := w.next(60*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(e.t, events.TypeReady, ready.Type(), string(ready.Data()))
	assert.Equal(e.t, applied.ID(), events.CausationID(ready))
	for recorded := false; !recorded; {
		select {
		case p := <-phases:
			if p.phase == "ready" {
				recorded = true
				assert.True(e.t, p.published, "the phase is recorded ready once the stream has release.ready")
			}
		case <-time.After(60 * time.Second):
			e.t.Fatal("the phase ready is never recorded")
		}
	}
	assert.Equal(e.t, map[int]int{1: 1}, e.stored(rel, events.TypeReady), "exactly one release.ready, of revision 1")
	assert.Empty(e.t, e.stored(rel, events.TypeFailed))
}

// progressingOnLate starts a health watcher following revision 1 of a release whose one object,
// ConfigMap late, is not in the cluster yet: progressing until the test creates it.
func progressingOnLate(t *testing.T) (e *env, ns string, rel events.Release, w *watch, applied event.Event, readySubject string) {
	t.Helper()
	e = newEnv(t)
	e.start()
	ns = kube.Namespace(t)
	rel = events.Release{Namespace: ns, Name: "app"}
	w = e.watch(rel)
	late := events.AppliedObject{ObjectRef: events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: ns, Name: "late"}, Action: "created"}
	applied = e.announce(e.request(rel, 1, events.Options{}), []events.AppliedObject{late}, events.Options{})
	w.next(30*time.Second, events.TypeProgressing)
	readySubject, err := events.Names{}.Subject(rel, events.TypeReady)
	require.NoError(t, err)
	return e, ns, rel, w, applied, readySubject
}

// TestRecordWrittenAnswerLost: health's connection drops as the record of a new revision is
// written (the NATS node it went to dies with the request). Whether the answer came back or not
// — when not, the redelivery finds the record written and follows the revision from it (this
// test does not force that case; TestChartConfig's NATS node kill met it) — health ends the
// revision ready, once.
func TestRecordWrittenAnswerLost(t *testing.T) {
	e := newEnv(t)
	e.start()
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	w := e.watch(rel)
	healthConn, err := e.js.Conn().GetClientID()
	require.NoError(t, err)
	observer, _ := natstest.Connect(t, e.srv)
	dropped := make(chan struct{})
	var once sync.Once
	_, err = observer.Subscribe("$KV."+events.Names{}.KV(events.KVHealth)+"."+ns+".app", func(*nats.Msg) {
		once.Do(func() {
			assert.NoError(t, e.srv.DisconnectClientByID(healthConn))
			close(dropped)
		})
	})
	require.NoError(t, err)
	require.NoError(t, observer.Flush())

	cm := events.AppliedObject{ObjectRef: events.ObjectRef{APIVersion: "v1", Kind: "ConfigMap", Namespace: ns, Name: "late"}, Action: "created"}
	applied := e.announce(e.request(rel, 1, events.Options{}), []events.AppliedObject{cm}, events.Options{})
	select {
	case <-dropped:
	case <-time.After(60 * time.Second):
		t.Fatal("health never wrote the record")
	}
	_, err = e.applier.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{configMap(ns, "late")}})
	require.NoError(t, err)
	ready := w.next(90*time.Second, events.TypeReady, events.TypeFailed)
	require.Equal(t, events.TypeReady, ready.Type(), string(ready.Data()))
	assert.Equal(t, applied.ID(), events.CausationID(ready))
	assert.Equal(t, map[int]int{1: 1}, e.stored(rel, events.TypeReady), "exactly one release.ready, of revision 1")
}
