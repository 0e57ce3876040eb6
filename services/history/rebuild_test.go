package history_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
)

// TestRebuildKeepsQuietReleases: the stream aged out every event of a release quiet for longer
// than its max age, and the older events of another; rebuild keeps the first's view as it is,
// folds onto the second's what the stream still has and the view lacks, and rebuilds from
// scratch a release whose whole history the stream still holds.
func TestRebuildKeepsQuietReleases(t *testing.T) {
	_, nc, js := natstest.Start(t)
	ctx := t.Context()
	svc, err := history.New(ctx, js, history.Options{Subscriber: events.SubscriberConfig{AckWait: 3 * time.Second}})
	require.NoError(t, err)
	stop := natstest.Run(t, svc)
	e := &env{t: t, nc: nc, js: js, svc: svc, pub: events.NewPublisher(js, events.Names{})}
	quiet, mid, fresh := events.Release{Namespace: "prod", Name: "quiet"}, events.Release{Namespace: "prod", Name: "mid"}, events.Release{Namespace: "prod", Name: "fresh"}

	e.release(quiet, 1, "one", events.Options{})
	e.release(quiet, 2, "two", events.Options{})
	e.release(mid, 1, "one", events.Options{})
	e.view(quiet, func(v *historyapi.View) bool { return v.Current == 2 })
	e.view(mid, func(v *historyapi.View) bool { return v.Current == 1 })
	// Everything before here ages out of the stream.
	cut := e.request(fresh, events.Options{})
	e.goesReady(e.rendered(cut, 1, "one"), 1)
	e.view(fresh, func(v *historyapi.View) bool { return v.Current == 1 })
	before := snapshot(t, e)

	// History is down while mid's revision 2 happens: its view lags.
	stop()
	e.release(mid, 2, "two", events.Options{})

	st, err := js.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	require.NoError(t, st.Purge(ctx, jetstream.WithPurgeSequence(seqOf(t, js, cut.ID()))))
	kv, err := js.KeyValue(ctx, events.KVHistory)
	require.NoError(t, err)
	require.NoError(t, kv.Purge(ctx, "prod.fresh"), "its whole history is in the stream: rebuilt from scratch")

	n, err := svc.Rebuild(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "mid and fresh rebuilt")
	after := snapshot(t, e)
	assert.Equal(t, before["prod/quiet"], after["prod/quiet"], "the quiet release keeps its view")
	assert.Equal(t, before["prod/fresh"], after["prod/fresh"], "rebuilt from scratch, the same view")
	v, err := svc.View(ctx, mid)
	require.NoError(t, err)
	assert.Equal(t, 2, v.Current, "what the stream still has is folded on")
	require.Len(t, v.Revisions, 2, "revision 1 is kept although its events aged out")
	assert.Equal(t, historyapi.StateReady, v.Get(2).State)
}

// seqOf returns the stream sequence of the event with id.
func seqOf(t *testing.T, js jetstream.JetStream, id string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err == nil && m.Header.Get("Nats-Msg-Id") == id {
			return seq
		}
	}
	t.Fatalf("no event %s in the stream", id)
	return 0
}
