package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaderGet reads key's latest value in the KV bucket, and its revision, from the bucket's
// stream leader: revision 0 when the key does not exist or was deleted. KeyValue.Get reads with
// a direct get, which any replica answers — one that just restarted, or lags, answers with an
// older entry or none. That is fine for most reads (a compare-and-set after them catches a stale
// one); a decision that drops work on a read ("the record is gone: let go") confirms it here
// first. nats.go's JetStreamContext message get goes to the leader unless asked for a direct get.
func LeaderGet(ctx context.Context, js jetstream.JetStream, bucket, key string) (value []byte, revision uint64, err error) {
	legacy, err := js.Conn().JetStream()
	if err != nil {
		return nil, 0, err
	}
	m, err := legacy.GetLastMsg("KV_"+bucket, "$KV."+bucket+"."+key, nats.Context(ctx))
	if errors.Is(err, nats.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s from the leader: %w", bucket, key, err)
	}
	switch m.Header.Get("KV-Operation") {
	case "DEL", "PURGE":
		return nil, 0, nil
	}
	return m.Data, m.Sequence, nil
}
