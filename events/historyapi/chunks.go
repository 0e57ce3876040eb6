package historyapi

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// Answers larger than a NATS message (a bundle of tens of MB: a kube-prometheus-stack's
// manifests with its CRDs) go out in chunks: every message of the answer carries
// ChunkHeader (its index, from 0) and ChunksHeader (how many), each at most the server's
// max payload less room for headers, in order to the request's reply subject. An answer that
// fits is one message without them. Ask reads both.
const (
	ChunkHeader  = "Troupe-Chunk"
	ChunksHeader = "Troupe-Chunks"
)

// chunkRoom is what a chunk leaves of the max payload for headers.
const chunkRoom = 4 << 10

// Respond answers req with data, in chunks when it does not fit one message of a server whose
// max payload is maxPayload.
func Respond(req micro.Request, data []byte, maxPayload int64) error {
	size := int(maxPayload) - chunkRoom
	if len(data) <= size || size <= 0 {
		return req.Respond(data)
	}
	n := (len(data) + size - 1) / size
	for i := range n {
		chunk := data[i*size : min(len(data), (i+1)*size)]
		if err := req.Respond(chunk, micro.WithHeaders(micro.Headers{ChunkHeader: {strconv.Itoa(i)}, ChunksHeader: {strconv.Itoa(n)}})); err != nil {
			return fmt.Errorf("chunk %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

// Ask sends a query to subject and returns the answer's data, put together from its chunks,
// and headers (the first message's: a micro error is in them); nats.ErrNoResponders when nobody
// answers on subject. ctx bounds the whole answer.
func Ask(ctx context.Context, nc *nats.Conn, subject string, body []byte) ([]byte, nats.Header, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return nil, nil, err
	}
	first, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, nil, err
	}
	if first.Header.Get("Status") == "503" && len(first.Data) == 0 {
		return nil, nil, nats.ErrNoResponders
	}
	total := first.Header.Get(ChunksHeader)
	if total == "" {
		return first.Data, first.Header, nil
	}
	n, err := strconv.Atoi(total)
	if err != nil || n < 1 || first.Header.Get(ChunkHeader) != "0" {
		return nil, nil, fmt.Errorf("an answer in chunks that does not start with chunk 0 of n (%s %q of %q)", ChunkHeader, first.Header.Get(ChunkHeader), total)
	}
	data := append([]byte(nil), first.Data...)
	for i := 1; i < n; i++ {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("chunk %d of %d: %w", i+1, n, err)
		}
		if m.Header.Get(ChunkHeader) != strconv.Itoa(i) {
			return nil, nil, errors.New("chunks of the answer out of order")
		}
		data = append(data, m.Data...)
	}
	return data, first.Header, nil
}
