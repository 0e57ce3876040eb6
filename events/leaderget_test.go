package events_test

import (
	"testing"

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
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "leaderget", Replicas: 3})
	require.NoError(t, err)

	_, rev, err := events.LeaderGet(t.Context(), js, "leaderget", "k")
	require.NoError(t, err)
	assert.Zero(t, rev, "never written")

	_, err = kv.Put(t.Context(), "k", []byte("1"))
	require.NoError(t, err)
	leader := c.StreamLeader(t.Context(), js, "KV_leaderget")
	require.GreaterOrEqual(t, leader, 0)
	c.Kill((leader + 1) % 3) // a follower down: the leader still answers
	want, err := kv.Put(t.Context(), "k", []byte("2"))
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), "other", []byte("x"))
	require.NoError(t, err)
	v, rev, err := events.LeaderGet(t.Context(), js, "leaderget", "k")
	require.NoError(t, err)
	assert.Equal(t, want, rev)
	assert.Equal(t, "2", string(v))

	require.NoError(t, kv.Delete(t.Context(), "k"))
	_, rev, err = events.LeaderGet(t.Context(), js, "leaderget", "k")
	require.NoError(t, err)
	assert.Zero(t, rev, "deleted")
}
