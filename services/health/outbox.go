package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// record is what the KV bucket keeps per release, for a restarted watcher to resume.
type record struct {
	Release      string          `json:"release"`
	Revision     int             `json:"revision"`
	Sequence     uint64          `json:"sequence"` // of the release.applied in the stream
	Subject      string          `json:"subject"`  // the NATS subject of the release.applied
	Applied      json.RawMessage `json:"applied"`  // the release.applied, as the stream has it
	Phase        string          `json:"phase"`
	Progress     int             `json:"progress"`
	Degradations int             `json:"degradations"`
}

// outbox is where decisions leave the service: it publishes a decision's event until the stream
// acks it, and only then writes the new phase to the KV bucket, so a phase is never recorded for
// an event the stream does not have. Event ids derive from the release.applied, so publishing
// again after a lost ack is a duplicate the stream drops; a watcher that restarts between
// publishing and recording checks the stream before publishing a terminal event again
// (publishedAlready).
type outbox struct {
	names  events.Names
	pub    *events.Publisher
	stream jetstream.Stream
	kv     jetstream.KeyValue
	log    zerolog.Logger
}

// newOutbox opens the events stream and the health bucket (made by events.Provision).
func newOutbox(ctx context.Context, js jetstream.JetStream, names events.Names, log zerolog.Logger) (*outbox, error) {
	o := &outbox{names: names, pub: events.NewPublisher(js, names), log: log}
	var err error
	if o.stream, err = js.Stream(ctx, names.Stream()); err != nil {
		return nil, fmt.Errorf("health: stream %s: %w", names.Stream(), err)
	}
	if o.kv, err = js.KeyValue(ctx, names.KV(events.KVHealth)); err != nil {
		return nil, fmt.Errorf("health: kv %s: %w", names.KV(events.KVHealth), err)
	}
	return o, nil
}

// delivery is a decision on its way out.
type delivery struct {
	decision
	published bool // the stream acked the event: a retry only writes the record
}

// expendable says whether d may be dropped for a newer decision rather than delivered: a
// progress report the stream has not taken is stale once statuses changed, and the next
// decision reports them (or says ready, or failed) anew.
func (d *delivery) expendable() bool {
	return d.event != nil && d.event.typ == events.TypeProgressing && !d.published && !d.record
}

// deliver publishes d's event, then writes t's record with d's state when the decision changed
// it. It returns the first error, and may be called again with the same d until it returns nil:
// what succeeded is not done twice.
func (o *outbox) deliver(ctx context.Context, t *tracker, d *delivery) error {
	if d.event != nil && !d.published {
		if err := o.publish(ctx, t.cause, t.resumed, *d.event); err != nil {
			return err
		}
		d.published = true
	}
	if d.record {
		return o.put(ctx, t.record(d.next))
	}
	return nil
}

// publish publishes out in reaction to cause, and blocks until the stream acks it or ctx ends.
// A resumed revision's terminal event is not published again if the stream has it already.
func (o *outbox) publish(ctx context.Context, cause event.Event, resumed bool, out outgoing) error {
	terminal := events.EndsFlow(out.typ)
	if resumed && terminal && o.publishedAlready(ctx, cause, out.typ) {
		return nil
	}
	var keys []string
	if out.key != "" {
		keys = []string{out.key}
	}
	e, err := events.Derive(cause, source, out.typ, out.data, keys...)
	if err != nil {
		// Not the stream's doing: publishing it again fails again.
		o.log.Error().Err(err).Str("release", cause.Subject()).Str("type", out.typ).Msg("cannot build the event: dropped")
		return nil
	}
	_, err = o.pub.Publish(ctx, e)
	if errors.Is(err, events.ErrMalformed) || errors.Is(err, events.ErrInvalidPayload) || errors.Is(err, nats.ErrMaxPayload) {
		// Not the stream's doing either (the evaluation bounds what an event carries): publishing
		// it again fails again, and would hold the release's worker for ever.
		o.log.Error().Err(err).Str("release", cause.Subject()).Str("type", out.typ).Msg("cannot publish the event: dropped")
		return nil
	}
	if err != nil {
		return err
	}
	o.log.Info().Str("release", cause.Subject()).Int("revision", events.Revision(cause)).Str("type", out.typ).Msg("published")
	return nil
}

// publishedAlready says whether the stream's last typ event of cause's release answers cause:
// a watcher that restarted between publishing a terminal event and recording it must not
// publish a second one.
func (o *outbox) publishedAlready(ctx context.Context, cause event.Event, typ string) bool {
	rel, err := events.ReleaseOf(cause)
	if err != nil {
		return false
	}
	subject, err := o.names.Subject(rel, typ)
	if err != nil {
		return false
	}
	m, err := o.stream.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return false
	}
	e, err := o.names.Decode(m.Subject, m.Header, m.Data)
	return err == nil && events.CausationID(e) == cause.ID()
}

// newRecord is the record of the revision applied (in the stream at seq) starts: progressing.
func newRecord(names events.Names, applied event.Event, rel events.Release, seq uint64) (record, error) {
	raw, err := events.Encode(applied)
	if err != nil {
		return record{}, err
	}
	subject, err := names.Subject(rel, events.TypeApplied)
	if err != nil {
		return record{}, err
	}
	return record{Release: rel.String(), Revision: events.Revision(applied), Sequence: seq, Subject: subject,
		Applied: raw, Phase: phaseProgressing}, nil
}

// recorded is rel's record; nil when there is none, or none readable.
func (o *outbox) recorded(ctx context.Context, rel events.Release) (*record, error) {
	entry, err := o.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return nil, nil // unreadable: followed anew
	}
	return &rec, nil
}

// records are every readable record of the bucket.
func (o *outbox) records(ctx context.Context) ([]record, error) {
	keys, err := o.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("health: list records: %w", err)
	}
	var out []record
	for k := range keys.Keys() {
		entry, err := o.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec record
		if err := json.Unmarshal(entry.Value(), &rec); err != nil {
			o.log.Error().Err(err).Str("key", k).Msg("unreadable record: not resumed")
			continue
		}
		out = append(out, rec)
	}
	return out, nil
}

func (o *outbox) put(ctx context.Context, rec record) error {
	rel, err := events.ParseRelease(rec.Release)
	if err != nil {
		return err
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := o.kv.Put(ctx, key(rel), data); err != nil {
		return fmt.Errorf("record %s: %w", rel, err)
	}
	return nil
}

// forget deletes rel's record.
func (o *outbox) forget(ctx context.Context, rel events.Release) error {
	if err := o.kv.Delete(ctx, key(rel)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("forget %s: %w", rel, err)
	}
	return nil
}

func key(rel events.Release) string { return rel.Namespace + "." + rel.Name }
