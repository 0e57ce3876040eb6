package flow

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
)

// Streamed is an event with its stream sequence.
type Streamed struct {
	Seq   uint64
	Event event.Event
}

// Watcher reads one release's events from a stream sequence on, in stream order.
type Watcher struct {
	it    jetstream.MessagesContext
	names events.Names
}

// Watch starts reading rel's events in the stream of the system names, from stream sequence
// fromSeq on (an ordered consumer: nothing to clean up on the server). Stop it when done.
func Watch(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release, fromSeq uint64) (*Watcher, error) {
	filter, err := names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, names.Stream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: fromSeq,
	})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", rel, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", rel, err)
	}
	return &Watcher{it: it, names: names}, nil
}

// Stop stops reading.
func (w *Watcher) Stop() { w.it.Stop() }

// Next blocks until the next event, or ctx ends; malformed events are skipped (catalog-check
// dead-letters them).
func (w *Watcher) Next(ctx context.Context) (event.Event, error) {
	for {
		msg, err := w.it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return event.Event{}, err
		}
		e, err := w.names.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err == nil {
			return e, nil
		}
	}
}

// Read reads every event of rel in the stream of the system names, oldest first; malformed
// events are skipped. It returns once it has read the last one (or, should the stream not
// answer, after 5 s without a message), or when ctx ends.
func Read(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release) ([]Streamed, error) {
	filter, err := names.ReleaseFilter(rel)
	if err != nil {
		return nil, err
	}
	// Gone from the server soon after the read (not the library's default 5 minutes): the web UI
	// reads a trace each time a page asks.
	cons, err := js.OrderedConsumer(ctx, names.Stream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter},
		InactiveThreshold: 10 * time.Second})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []Streamed
	if info.NumPending == 0 {
		return nil, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	for {
		next, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := it.Next(jetstream.NextContext(next))
		cancel()
		if err != nil && ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		md, err := msg.Metadata()
		if err != nil {
			return nil, err
		}
		if e, err := names.Decode(msg.Subject(), msg.Headers(), msg.Data()); err == nil {
			out = append(out, Streamed{Seq: md.Sequence.Stream, Event: e})
		}
		if md.NumPending == 0 {
			return out, nil
		}
	}
}
