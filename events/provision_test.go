package events_test

import (
	"strings"
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

	changed, err := events.Provision(ctx, js, events.ProvisionConfig{MaxAge: 60 * 24 * time.Hour, Duplicates: 5 * time.Minute})
	require.NoError(t, err)
	actions := map[string]string{}
	for _, p := range changed {
		actions[p.Name] = p.Action
	}
	assert.Equal(t, events.Updated, actions[events.StreamName])
	assert.Equal(t, events.Updated, actions[events.Names{}.DeadLetterStream()])
	assert.Equal(t, events.Unchanged, actions[events.BucketBundles], "object stores do not age out")
	assert.Equal(t, events.Unchanged, actions[events.KVReleases], "KV state does not age out")

	st, err := js.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, 60*24*time.Hour, info.Config.MaxAge)
	assert.Equal(t, 5*time.Minute, info.Config.Duplicates)
	obj, err := js.Stream(ctx, "OBJ_"+events.BucketBundles)
	require.NoError(t, err)
	assert.Zero(t, obj.CachedInfo().Config.MaxAge, "no TTL on bundles")

	// Nothing was lost on the way.
	got := releaseEvents(t, js, events.TypeRequested)
	require.Len(t, got, 1)
	assert.Equal(t, e.ID(), got[0].ID())
	entry, err := kv.Get(ctx, "prod.podinfo")
	require.NoError(t, err)
	assert.Equal(t, "3", string(entry.Value()))

	again, err := events.Provision(ctx, js, events.ProvisionConfig{MaxAge: 60 * 24 * time.Hour, Duplicates: 5 * time.Minute})
	require.NoError(t, err)
	for _, p := range again {
		assert.Equal(t, events.Unchanged, p.Action, "%s %s", p.Kind, p.Name)
		assert.Empty(t, p.Kept, "%s %s", p.Kind, p.Name)
	}
}

// TestProvisionNeverLowers: on a 3-node cluster provisioned R3 with 90 days of events, a service
// restarted with the defaults (R1, 30 days) leaves every stream and bucket as it is, and says
// so; only an explicit Lower takes them down.
func TestProvisionNeverLowers(t *testing.T) {
	_, urls := natstest.InProcessCluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	ctx := t.Context()
	const quarter = 90 * 24 * time.Hour
	_, err := events.Provision(ctx, js, events.ProvisionConfig{Replicas: 3, MaxAge: quarter})
	require.NoError(t, err)
	e := publishRequest(t, events.NewPublisher(js, events.Names{}), podinfo)

	restart, err := events.Provision(ctx, js, events.ProvisionConfig{})
	require.NoError(t, err)
	require.NotEmpty(t, restart)
	for _, p := range restart {
		assert.Equal(t, events.Unchanged, p.Action, p.String())
		assert.Contains(t, p.Kept, "replicas 3 (asked 1)", p.String())
	}
	replicas := func(maxAge time.Duration) map[string]int {
		out := map[string]int{}
		for _, p := range restart {
			name := p.Name
			switch p.Kind {
			case "kv":
				name = "KV_" + name
			case "objectstore":
				name = "OBJ_" + name
			}
			s, err := js.Stream(ctx, name)
			require.NoError(t, err)
			info, err := s.Info(ctx)
			require.NoError(t, err)
			out[p.Name] = info.Config.Replicas
			if p.Kind == "stream" {
				assert.Equal(t, maxAge, info.Config.MaxAge, p.Name)
			}
		}
		return out
	}
	for name, n := range replicas(quarter) { // kept its 90 days
		assert.Equal(t, 3, n, "%s stays R3", name)
	}

	lowered, err := events.Provision(ctx, js, events.ProvisionConfig{Replicas: 1, Lower: true})
	require.NoError(t, err)
	for _, p := range lowered {
		assert.Equal(t, events.Updated, p.Action, p.String())
		assert.Contains(t, p.Changed, "replicas 3 → 1", p.String())
	}
	for name, n := range replicas(30 * 24 * time.Hour) {
		assert.Equal(t, 1, n, "%s lowered when asked", name)
	}
	// The stream moves to one peer and its leader may move more than once while that settles
	// ("no responders" in between): the whole read is retried until one succeeds.
	filter, err := events.Names{}.TypeFilter(events.TypeRequested)
	require.NoError(t, err)
	var got []jetstream.Msg
	require.Eventually(t, func() bool {
		got, err = tryReadAll(ctx, js, events.StreamName, filter)
		return err == nil
	}, 30*time.Second, 100*time.Millisecond, "the stream answers after its replicas were lowered")
	require.Len(t, got, 1, "nothing lost on the way down")
	read, err := events.Names{}.Decode(got[0].Subject(), got[0].Headers(), got[0].Data())
	require.NoError(t, err)
	assert.Equal(t, e.ID(), read.ID())
}

// TestProvisionLiftsObjectStoreTTL: an object store made when bundles expired after 30 days
// (the old provisioning) loses its TTL at the next provisioning, keeping what it holds.
func TestProvisionLiftsObjectStoreTTL(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	store, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: events.BucketBundles, TTL: 30 * 24 * time.Hour, Compression: true})
	require.NoError(t, err)
	_, err = store.PutBytes(ctx, "kept", []byte("bundle"))
	require.NoError(t, err)

	out, err := events.Provision(ctx, js, events.ProvisionConfig{})
	require.NoError(t, err)
	for _, p := range out {
		if p.Name == events.BucketBundles {
			assert.Equal(t, events.Updated, p.Action)
			assert.Equal(t, []string{"max age 720h0m0s → none"}, p.Changed)
		}
	}
	st, err := js.Stream(ctx, "OBJ_"+events.BucketBundles)
	require.NoError(t, err)
	assert.Zero(t, st.CachedInfo().Config.MaxAge)
	b, err := store.GetBytes(ctx, "kept")
	require.NoError(t, err)
	assert.Equal(t, "bundle", string(b))
}

// TestObjectsOutliveTheEvents: with events kept only briefly, a bundle stored before them is still
// there once they aged out — a release stable for longer than the max age can still roll back to
// it or have it redelivered.
func TestObjectsOutliveTheEvents(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	_, err := events.Provision(ctx, js, events.ProvisionConfig{MaxAge: time.Second, Duplicates: time.Second})
	require.NoError(t, err)
	for _, bucket := range []string{events.BucketBundles, events.BucketSources} {
		objs, err := events.OpenObjects(ctx, js, bucket)
		require.NoError(t, err)
		digest, _, err := objs.Put(ctx, strings.NewReader("content of "+bucket))
		require.NoError(t, err)
		publishRequest(t, events.NewPublisher(js, events.Names{}), podinfo)
		st, err := js.Stream(ctx, events.StreamName)
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			info, err := st.Info(ctx)
			return err == nil && info.State.Msgs == 0
		}, time.Minute, 100*time.Millisecond, "the events age out")
		has, err := objs.Has(ctx, digest)
		require.NoError(t, err)
		assert.True(t, has, "%s outlives the events", bucket)
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
