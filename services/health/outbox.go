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
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

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
	// HooksDone: release.hooked said the revision's post-phase hooks ran.
	HooksDone bool `json:"hooksDone,omitempty"`
}

// outbox is where decisions leave the service: it publishes a decision's event until the stream
// acks it, and only then writes the new phase to the KV bucket, so a phase is never recorded for
// an event the stream does not have. Event ids derive from the release.applied, so publishing
// again after a lost ack is a duplicate the stream drops; a watcher that restarts between
// publishing and recording checks the stream before publishing a terminal event again
// (publishedAlready).
type outbox struct {
	names  events.Names
	js     jetstream.JetStream
	pub    *events.Publisher
	stream jetstream.Stream
	kv     jetstream.KeyValue
	log    zerolog.Logger
	tp     trace.TracerProvider // nil: no spans
}

// newOutbox opens the events stream and the health bucket (made by events.Provision).
func newOutbox(ctx context.Context, js jetstream.JetStream, names events.Names, log zerolog.Logger, tp trace.TracerProvider) (*outbox, error) {
	o := &outbox{names: names, js: js, pub: events.NewPublisher(js, names), log: log, tp: tp}
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
	attempted bool // a publish of the event failed: it may be in the stream all the same
}

// expendable says whether d may be dropped for a newer decision rather than delivered: a
// progress report the stream has not taken is stale once statuses changed, and the next
// decision reports them (or says ready, or failed) anew.
func (d *delivery) expendable() bool {
	return d.event != nil && d.event.typ == events.TypeProgressing && !d.published && !d.record
}

// errStale is a tracker that is no longer the one to act for its release: the record changed
// under it (another replica followed a newer revision, or resumed this one; the release was
// uninstalled), or the stream has a newer release.applied or a release.uninstalled of the
// release. The tracker is let go without publishing.
var errStale = errors.New("stale tracker: another replica or a newer event owns the release")

// deliver publishes d's event, then writes t's record with d's state when the decision changed
// it. It returns the first error, and may be called again with the same d until it returns nil:
// what succeeded is not done twice. A decision that ends the revision, or degrades or recovers
// it, or changes the record, is delivered only by a tracker that is current (see current); else
// deliver returns errStale and publishes nothing.
func (o *outbox) deliver(ctx context.Context, t *tracker, d *delivery) error {
	if d.event != nil && !d.published {
		if d.record || events.EndsFlow(d.event.typ) {
			if err := o.current(ctx, t, d.event.typ); err != nil {
				return err
			}
		}
		// A terminal event tried before may be in the stream though its ack was lost: look
		// before publishing again, rather than count on the stream's duplicate window.
		if err := o.publish(ctx, t.cause, t.resumed || d.attempted, *d.event); err != nil {
			d.attempted = true
			return err
		}
		d.published = true
	}
	if d.record {
		rev, err := o.update(ctx, t.record(d.next), t.kvRev)
		if err != nil {
			return err
		}
		t.kvRev = rev
	}
	return nil
}

// current says whether t may act for its release: errStale if not, another error if it could
// not tell. t's record must be the one it last read or wrote (same KV revision), and, unless
// typ is release.superseded (published because a newer revision came), the stream must hold no
// release.applied or release.uninstalled of the release after t's release.applied.
func (o *outbox) current(ctx context.Context, t *tracker, typ string) error {
	entry, err := o.kv.Get(ctx, key(t.rel))
	switch {
	case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("record %s: %w", t.rel, err)
	case err != nil || entry.Revision() != t.kvRev:
		// The replica that answered may lag (one restarted a moment ago answers with an older
		// record, or none): letting go on its word stalls the revision until its deadline.
		_, rev, err := events.LeaderGet(ctx, o.js, o.names.KV(events.KVHealth), key(t.rel))
		switch {
		case err != nil:
			return fmt.Errorf("record %s: %w", t.rel, err)
		case rev == 0:
			return fmt.Errorf("%s revision %d: record gone: %w", t.rel, t.rec.Revision, errStale)
		case rev != t.kvRev:
			return fmt.Errorf("%s revision %d: record changed: %w", t.rel, t.rec.Revision, errStale)
		}
	}
	if typ == events.TypeSuperseded || t.rec.Sequence == 0 {
		return nil
	}
	for _, newer := range []string{events.TypeApplied, events.TypeUninstalled} {
		subject, err := o.names.Subject(t.rel, newer)
		if err != nil {
			return err
		}
		m, err := o.stream.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("last %s of %s: %w", newer, t.rel, err)
		}
		if m.Sequence > t.rec.Sequence {
			return fmt.Errorf("%s revision %d: a newer %s: %w", t.rel, t.rec.Revision, newer, errStale)
		}
	}
	return nil
}

// publish publishes out in reaction to cause, and blocks until the stream acks it or ctx ends.
// When check is set (a resumed revision, or a publish tried before), a terminal event is not
// published if the stream has one answering cause already. Every terminal event health
// publishes goes through here.
//
// Each try is a span, "health publish <type>", a child of cause's (the applier's, for a
// release.applied): a decision is not made in a handler, whose span has long ended; the event
// carries it as its traceparent.
func (o *outbox) publish(ctx context.Context, cause event.Event, check bool, out outgoing) (err error) {
	terminal := events.EndsFlow(out.typ)
	if check && terminal && o.publishedAlready(ctx, cause) {
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
	ctx, span := events.StartSpan(ctx, o.tp, "health publish "+out.typ, e, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(semconv.MessagingOperationTypeSend))
	_, err = o.pub.Publish(ctx, e)
	// The span says what the publish did, a dropped event too, whatever this returns.
	spanErr := err
	if errors.Is(err, events.ErrFlowEnded) {
		spanErr = nil // not a failure: the revision had its end already
		span.AddEvent("not published: the revision already ended")
	}
	defer events.EndSpan(span, spanErr)
	if errors.Is(err, events.ErrMalformed) || errors.Is(err, events.ErrInvalidPayload) || errors.Is(err, nats.ErrMaxPayload) {
		// Not the stream's doing either (the evaluation bounds what an event carries): publishing
		// it again fails again, and would hold the release's worker for ever.
		o.log.Error().Err(err).Str("release", cause.Subject()).Str("type", out.typ).Msg("cannot publish the event: dropped")
		return nil
	}
	if errors.Is(err, events.ErrFlowEnded) {
		// Another terminal event ended the revision first (the deadline watchdog's, a newer
		// stage's): its end is out, this one is not to be.
		o.log.Info().Err(err).Str("release", cause.Subject()).Str("type", out.typ).Msg("not published: the revision already ended")
		return nil
	}
	if err != nil {
		return err
	}
	o.log.Info().Str("release", cause.Subject()).Int("revision", events.Revision(cause)).Str("type", out.typ).Msg("published")
	return nil
}

// publishedAlready says whether the stream's last event of a terminal type (ready, failed,
// superseded) of cause's release answers cause: a revision ends once, so a watcher that
// restarted between publishing its end and recording it, or whose ack was lost, must not
// publish a second one, of any terminal type.
func (o *outbox) publishedAlready(ctx context.Context, cause event.Event) bool {
	rel, err := events.ReleaseOf(cause)
	if err != nil {
		return false
	}
	for _, typ := range []string{events.TypeReady, events.TypeFailed, events.TypeSuperseded} {
		subject, err := o.names.Subject(rel, typ)
		if err != nil {
			return false
		}
		m, err := o.stream.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			continue
		}
		e, err := o.names.Decode(m.Subject, m.Header, m.Data)
		if err == nil && events.CausationID(e) == cause.ID() {
			return true
		}
	}
	return false
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

// recorded is rel's record and the KV revision it was read at; nil when there is none (revision
// 0), or none readable (the revision of what is there).
func (o *outbox) recorded(ctx context.Context, rel events.Release) (*record, uint64, error) {
	entry, err := o.kv.Get(ctx, key(rel))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("record %s: %w", rel, err)
	}
	var rec record
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return nil, entry.Revision(), nil // unreadable: followed anew
	}
	return &rec, entry.Revision(), nil
}

// revisioned is a record and the KV revision it was read at.
type revisioned struct {
	record
	kvRev uint64
}

// records are every readable record of the bucket.
func (o *outbox) records(ctx context.Context) ([]revisioned, error) {
	keys, err := o.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("health: list records: %w", err)
	}
	var out []revisioned
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
		out = append(out, revisioned{rec, entry.Revision()})
	}
	return out, nil
}

// update writes rec over the record at KV revision rev (0: where there is none) and returns the
// new revision; errStale if the record is no longer at rev.
func (o *outbox) update(ctx context.Context, rec record, rev uint64) (uint64, error) {
	rel, err := events.ParseRelease(rec.Release)
	if err != nil {
		return 0, err
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	if rev == 0 {
		rev, err = o.kv.Create(ctx, key(rel), data)
	} else {
		rev, err = o.kv.Update(ctx, key(rel), data, rev)
	}
	if events.IsCASConflict(err) {
		return 0, fmt.Errorf("record %s: %w", rel, errStale)
	}
	if err != nil {
		return 0, fmt.Errorf("record %s: %w", rel, err)
	}
	return rev, nil
}

// forget deletes rel's record, if it is still at KV revision rev; errStale if not.
func (o *outbox) forget(ctx context.Context, rel events.Release, rev uint64) error {
	err := o.kv.Delete(ctx, key(rel), jetstream.LastRevision(rev))
	if events.IsCASConflict(err) {
		return fmt.Errorf("forget %s: %w", rel, errStale)
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("forget %s: %w", rel, err)
	}
	return nil
}

func key(rel events.Release) string { return rel.Namespace + "." + rel.Name }
