package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Dead-letter headers. A dead letter's body is the original message's body, and its other
// headers are the original's.
const (
	HeaderDLQService    = "Troupe-Dlq-Service"
	HeaderDLQReason     = "Troupe-Dlq-Reason"
	HeaderDLQSubject    = "Troupe-Dlq-Subject"
	HeaderDLQStream     = "Troupe-Dlq-Stream"
	HeaderDLQSequence   = "Troupe-Dlq-Sequence"
	HeaderDLQDeliveries = "Troupe-Dlq-Deliveries"
	HeaderDLQTime       = "Troupe-Dlq-Time"
)

// maxReasonHeader bounds the reason header; the full reason is also logged.
const maxReasonHeader = 4096

// DeadLetter is a message a service gave up on, as stored in the dead-letter stream.
type DeadLetter struct {
	Service    string
	Reason     string
	Subject    string // the original subject
	Stream     string
	Sequence   uint64 // the original stream sequence
	Deliveries uint64
	Time       time.Time
	Header     nats.Header // the original headers
	Data       []byte      // the original body
}

// ParseDeadLetter reads a message of the dead-letter stream.
func ParseDeadLetter(h nats.Header, data []byte) DeadLetter {
	d := DeadLetter{
		Service: h.Get(HeaderDLQService),
		Reason:  h.Get(HeaderDLQReason),
		Subject: h.Get(HeaderDLQSubject),
		Stream:  h.Get(HeaderDLQStream),
		Header:  nats.Header{},
		Data:    data,
	}
	d.Sequence, _ = strconv.ParseUint(h.Get(HeaderDLQSequence), 10, 64)
	d.Deliveries, _ = strconv.ParseUint(h.Get(HeaderDLQDeliveries), 10, 64)
	d.Time, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderDLQTime))
	for k, v := range h {
		if !strings.HasPrefix(k, "Troupe-Dlq-") {
			d.Header[k] = v
		}
	}
	return d
}

// publishDeadLetter stores msg in the dead-letter stream with service and reason, and waits for
// the stream's ack. Its message id is derived from the original stream position, so dead-lettering
// the same delivery twice stores it once.
func publishDeadLetter(ctx context.Context, js jetstream.JetStream, names Names, service string, msg jetstream.Msg, md *jetstream.MsgMetadata, reason string) error {
	dl := nats.NewMsg(names.DeadLetterSubject(service, msg.Subject()))
	for k, v := range msg.Headers() {
		if strings.HasPrefix(k, "Nats-") {
			continue
		}
		dl.Header[k] = v
	}
	dl.Header.Set(HeaderDLQService, service)
	dl.Header.Set(HeaderDLQReason, headerSafe(reason, maxReasonHeader))
	dl.Header.Set(HeaderDLQSubject, msg.Subject())
	dl.Header.Set(HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	id := "dlq:" + service + ":" + msg.Subject()
	if md != nil {
		dl.Header.Set(HeaderDLQStream, md.Stream)
		dl.Header.Set(HeaderDLQSequence, strconv.FormatUint(md.Sequence.Stream, 10))
		dl.Header.Set(HeaderDLQDeliveries, strconv.FormatUint(md.NumDelivered, 10))
		id = fmt.Sprintf("dlq:%s:%s:%d", service, md.Stream, md.Sequence.Stream)
	}
	dl.Data = msg.Data()
	if _, err := js.PublishMsg(ctx, dl, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("dead-letter %s: %w", msg.Subject(), err)
	}
	return nil
}

// headerSafe makes s fit a NATS header value: one line, at most n bytes.
func headerSafe(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	return Truncate(s, n)
}

// handledBy is the service that handles each request, whose giving up on it ended its flow
// with release.failed: the durables of the renderer, history and the applier.
var handledBy = map[string]string{
	TypeRequested:          "renderer",
	TypeRollbackRequested:  "history",
	TypeUninstallRequested: "applier",
}

// Redrivable says why dead letter d cannot be re-driven (nil: it can, unless a newer request
// for its release came after it, which Redrive checks): only a request whose own handler gave up
// on it (a release.requested the renderer, a rollback history, an uninstall the applier) ended
// its flow with release.failed. A fact (release.rendered, …) is never re-published: its flow
// already has its terminal event, and a second one would break "one terminal event per flow". A
// request another service gave up on (a user's subscriber, the deadlines watchdog) went on
// without it. An unreadable event is no request at all.
func (n Names) Redrivable(d DeadLetter) (event.Event, error) {
	orig, err := n.Decode(d.Subject, d.Header, d.Data)
	if err != nil {
		return event.Event{}, fmt.Errorf("the dead letter's event cannot be read, so it cannot be re-driven: %w", err)
	}
	handler, ok := handledBy[orig.Type()]
	if !ok {
		return event.Event{}, fmt.Errorf("%s is a fact, not a request: its flow ended with release.failed, and only a new request drives it again (troupe release)", orig.Type())
	}
	if d.Service != handler {
		return event.Event{}, fmt.Errorf("%s gave up on this %s for itself; %s, which handles it, did not, so its flow went on: nothing to re-drive", d.Service, orig.Type(), handler)
	}
	return orig, nil
}

// Redrive builds the request that drives dead letter d's work again, as `troupe redrive` and
// the web UI do: a new event of the dead letter's type (a flow of its own, published by source),
// for its release, with its data. It refuses what Redrivable refuses, and a request that a newer
// request for the same release came after (re-driving it would undo that one: a stale uninstall
// would remove a release installed since). Its id is derived from the original's, so that
// re-driving one dead letter twice is one request (the stream drops the repeated id within its
// duplicate window).
func (n Names) Redrive(ctx context.Context, js jetstream.JetStream, d DeadLetter, source string) (event.Event, error) {
	orig, err := n.Redrivable(d)
	if err != nil {
		return event.Event{}, err
	}
	rel, err := ReleaseOf(orig)
	if err != nil {
		return event.Event{}, err
	}
	if d.Sequence == 0 {
		return event.Event{}, errors.New("the dead letter does not say where its original is in the stream, so whether a newer request came after it cannot be told: request the release again instead")
	}
	stream, err := js.Stream(ctx, n.Stream())
	if err != nil {
		return event.Event{}, err
	}
	for typ := range handledBy {
		subj, err := n.Subject(rel, typ)
		if err != nil {
			return event.Event{}, err
		}
		last, err := stream.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return event.Event{}, err
		}
		if last.Sequence > d.Sequence {
			return event.Event{}, fmt.Errorf("a newer %s for %s (stream sequence %d) came after this one (%d): re-driving it would undo that; request the release again instead", typ, rel, last.Sequence, d.Sequence)
		}
	}
	e, err := NewEvent(source, orig.Type(), rel, json.RawMessage(orig.Data()))
	if err != nil {
		return event.Event{}, err
	}
	id := DeriveID(orig.ID(), "redrive")
	e.SetID(id)
	e.SetExtension(ExtCorrelationID, id)
	return e, nil
}

// ReadDeadLetter reads the dead letter at sequence seq of the dead-letter stream of the system
// n: what `troupe redrive` and the web UI re-drive. An error wrapping ErrNotFound when there is
// none (never, or deleted).
func (n Names) ReadDeadLetter(ctx context.Context, js jetstream.JetStream, seq uint64) (DeadLetter, error) {
	stream, err := js.Stream(ctx, n.DeadLetterStream())
	if err != nil {
		return DeadLetter{}, err
	}
	msg, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("%w: no dead letter %d in %s", ErrNotFound, seq, n.DeadLetterStream())
	}
	if err != nil {
		return DeadLetter{}, err
	}
	return ParseDeadLetter(msg.Header, msg.Data), nil
}
