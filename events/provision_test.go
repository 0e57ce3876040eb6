package events_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func TestProvisionIdempotent(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()

	first, err := events.Provision(ctx, js, events.ProvisionConfig{})
	require.NoError(t, err)
	require.NotEmpty(t, first)
	names := map[string]bool{}
	for _, p := range first {
		assert.Equal(t, events.Created, p.Action, p.Name)
		names[p.Name] = true
	}
	for _, n := range []string{events.StreamName, events.Names{}.DeadLetterStream(), events.BucketBundles, events.BucketSources, events.KVLeases, events.KVReleases} {
		assert.True(t, names[n], "provisions %s", n)
	}

	e := publishRequest(t, events.NewPublisher(js, events.Names{}), podinfo)
	kv, err := js.KeyValue(ctx, events.KVReleases)
	require.NoError(t, err)
	_, err = kv.Put(ctx, "prod.podinfo", []byte("3"))
	require.NoError(t, err)

	second, err := events.Provision(ctx, js, events.ProvisionConfig{})
	require.NoError(t, err)
	for _, p := range second {
		assert.Equal(t, events.Unchanged, p.Action, "second run changes nothing: %s %s", p.Kind, p.Name)
	}

	changed, err := events.Provision(ctx, js, events.ProvisionConfig{MaxAge: 48 * time.Hour, Duplicates: time.Minute})
	require.NoError(t, err)
	actions := map[string]string{}
	for _, p := range changed {
		actions[p.Name] = p.Action
	}
	assert.Equal(t, events.Updated, actions[events.StreamName])
	assert.Equal(t, events.Updated, actions[events.Names{}.DeadLetterStream()])
	assert.Equal(t, events.Updated, actions[events.BucketBundles], "object stores age out too")
	assert.Equal(t, events.Unchanged, actions[events.KVReleases], "KV state does not age out")

	st, err := js.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, 48*time.Hour, info.Config.MaxAge)
	assert.Equal(t, time.Minute, info.Config.Duplicates)
	obj, err := js.Stream(ctx, "OBJ_"+events.BucketBundles)
	require.NoError(t, err)
	assert.Equal(t, 48*time.Hour, obj.CachedInfo().Config.MaxAge)

	// Nothing was lost on the way.
	got := releaseEvents(t, js, events.TypeRequested)
	require.Len(t, got, 1)
	assert.Equal(t, e.ID(), got[0].ID())
	entry, err := kv.Get(ctx, "prod.podinfo")
	require.NoError(t, err)
	assert.Equal(t, "3", string(entry.Value()))

	again, err := events.Provision(ctx, js, events.ProvisionConfig{MaxAge: 48 * time.Hour, Duplicates: time.Minute})
	require.NoError(t, err)
	for _, p := range again {
		assert.Equal(t, events.Unchanged, p.Action, "%s %s", p.Kind, p.Name)
	}
}

func TestLeasesExpireByThemselves(t *testing.T) {
	_, _, js := natstest.Start(t)
	kv, err := js.KeyValue(t.Context(), events.KVLeases)
	require.NoError(t, err)
	_, err = kv.Create(t.Context(), "prod.podinfo", []byte("replica-1"), jetstream.KeyTTL(time.Second))
	require.NoError(t, err)
	_, err = kv.Create(t.Context(), "prod.podinfo", []byte("replica-2"))
	assert.Error(t, err, "held lease")
	require.Eventually(t, func() bool {
		_, err := kv.Create(t.Context(), "prod.podinfo", []byte("replica-2"), jetstream.KeyTTL(time.Second))
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "an expired lease can be taken")
}
