package access_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
)

// TestPushConsumersWriteNothing: a reader may create consumers on the events stream, and a push
// consumer's deliver subject is not checked against its creator's permissions (nats-server
// #8274). One the CLI points at a KV key or at the API subject that deletes a stream writes
// nothing there: the server delivers only where a client listens.
func TestPushConsumersWriteNothing(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	cli, js := s.connect(t, access.CLI)
	subject := "troupe.release.a.b.requested"
	_, err := js.Publish(ctx, subject, nil)
	require.NoError(t, err)
	targets := map[string]string{"inventory": "$KV." + events.KVInventory + ".x", "delete": "$JS.API.STREAM.DELETE." + events.Names{}.DeadLetterStream()}
	for name, target := range targets {
		req := `{"stream_name":"TROUPE","config":{"name":"` + name + `","deliver_subject":"` + target + `","filter_subject":"` + subject + `","deliver_policy":"all","ack_policy":"none"}}`
		m, err := cli.nc.Request("$JS.API.CONSUMER.CREATE.TROUPE."+name+"."+subject, []byte(req), 5*time.Second)
		require.NoError(t, err)
		require.Contains(t, string(m.Data), `"deliver_subject":"`+target+`"`, "the server took the consumer")
	}
	_, admin := s.connect(t, access.Admin)
	kv, err := admin.KeyValue(ctx, events.KVInventory)
	require.NoError(t, err)
	time.Sleep(2 * time.Second) // the consumers deliver at once when they deliver at all
	_, err = kv.Get(ctx, "x")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "a consumer wrote into the inventory")
	_, err = admin.Stream(ctx, events.Names{}.DeadLetterStream())
	assert.NoError(t, err, "a consumer deleted the dead-letter stream")
}
