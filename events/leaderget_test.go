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

// TestLeaderGet: the leader's latest value and revision of a key of an R3 bucket, with a node
// down too; revision 0 for a key never written and for one deleted.
func TestLeaderGet(t *testing.T) {
	c := natstest.Start3(t)
	_, js := c.Connect(t)
	// A new cluster, and a new bucket's stream, may still be electing their leaders (CI once got
	// "no response from stream" from the first put), as may the bucket's stream when a node goes
	// down: each call is tried again while JetStream is Unavailable, and fails on any other error.
	await := func(f func() error) {
		t.Helper()
		require.NoError(t, events.Await(t.Context(), time.Minute, f))
	}
	var kv jetstream.KeyValue
	await(func() (err error) {
		kv, err = js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leaderget", Replicas: 3})
		return err
	})
	put := func(key, value string) (rev uint64) {
		t.Helper()
		await(func() (err error) { rev, err = kv.Put(t.Context(), key, []byte(value)); return err })
		return rev
	}
	get := func() (v []byte, rev uint64) {
		t.Helper()
		await(func() (err error) { v, rev, err = events.LeaderGet(t.Context(), js, "leaderget", "k"); return err })
		return v, rev
	}

	_, rev := get()
	assert.Zero(t, rev, "never written")

	put("k", "1")
	leader := c.StreamLeader(t.Context(), js, "KV_leaderget")
	require.GreaterOrEqual(t, leader, 0)
	c.Kill((leader + 1) % 3) // a follower down: the leader still answers
	want := put("k", "2")
	put("other", "x")
	v, rev := get()
	assert.Equal(t, want, rev)
	assert.Equal(t, "2", string(v))

	await(func() error { return kv.Delete(t.Context(), "k") })
	_, rev = get()
	assert.Zero(t, rev, "deleted")
}
