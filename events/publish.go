package events

import (
	"context"
	"fmt"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes events to the events stream of one system.
type Publisher struct {
	js    jetstream.JetStream
	names Names

	mu    sync.Mutex
	flows *Flows // opened on the first terminal event
}

// NewPublisher returns a Publisher on js, publishing to the subjects of names.
func NewPublisher(js jetstream.JetStream, names Names) *Publisher {
	return &Publisher{js: js, names: names}
}

// Publish validates e, writes it in structured mode to its release subject with Nats-Msg-Id set
// to the event id, and blocks until the stream acknowledges it or ctx ends. An event whose id the
// stream saw within its duplicate window is not stored again: the returned ack then has
// Duplicate set, and that is not an error.
//
// When ctx holds a span (a handler's under Tracing, the CLI's request), e is published carrying
// it as its traceparent (WithTrace), so the work e causes is a child of the work that published
// it; else e keeps the traceparent it has (Derive carries its cause's on).
//
// A terminal event (EndsFlow) is first claimed as the end of its flow in the KVFlows bucket
// (Flows.Claim): when another terminal event ended the flow first, e is not published and the
// error wraps ErrFlowEnded — the caller's work on that flow is over. Publishing the same
// terminal event again (same id) is allowed, so a handler redelivered after a crash between its
// claim and its publish finishes what it started.
func (p *Publisher) Publish(ctx context.Context, e event.Event) (*jetstream.PubAck, error) {
	e = WithTrace(ctx, e)
	msg, err := p.names.Message(e)
	if err != nil {
		return nil, err
	}
	if EndsFlow(e.Type()) {
		flows, err := p.openFlows(ctx)
		if err != nil {
			return nil, fmt.Errorf("publish %s %s: %w", e.Type(), e.ID(), err)
		}
		if err := flows.Claim(ctx, e, msg.Data); err != nil {
			return nil, fmt.Errorf("publish %s %s: %w", e.Type(), e.ID(), err)
		}
	}
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(e.ID()))
	if err != nil {
		return nil, fmt.Errorf("publish %s %s to %s: %w", e.Type(), e.ID(), msg.Subject, err)
	}
	return ack, nil
}

func (p *Publisher) openFlows(ctx context.Context) (*Flows, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.flows == nil {
		f, err := NewFlows(ctx, p.js, p.names)
		if err != nil {
			return nil, err
		}
		p.flows = f
	}
	return p.flows, nil
}

// Message returns e as the NATS message troupe publishes: structured mode, on its release subject.
func (n Names) Message(e event.Event) (*nats.Msg, error) {
	r, err := ReleaseOf(e)
	if err != nil {
		return nil, fmt.Errorf("%w: event %s: %w", ErrMalformed, e.ID(), err)
	}
	var subject string
	if IsVerdict(e.Type()) {
		gate, gerr := verdictGate(e.Data())
		if gerr != nil {
			return nil, fmt.Errorf("%w: event %s: the gate of a %s: %w", ErrMalformed, e.ID(), e.Type(), gerr)
		}
		subject, err = n.VerdictSubject(r, e.Type(), gate)
	} else {
		subject, err = n.Subject(r, e.Type())
	}
	if err != nil {
		return nil, fmt.Errorf("%w: event %s: %w", ErrMalformed, e.ID(), err)
	}
	body, err := Encode(e)
	if err != nil {
		return nil, err
	}
	if _, ok := Lookup(e.Type()); ok {
		if _, err := DecodePayload(e.Type(), e.Data()); err != nil {
			return nil, err
		}
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set("Content-Type", ContentTypeStructured)
	msg.Data = body
	return msg, nil
}
