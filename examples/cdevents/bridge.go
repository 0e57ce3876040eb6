package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cdevents/sdk-go/pkg/api"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/client"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// Defaults of Options.
const (
	DefaultName       = "cdevents"
	DefaultSource     = "troupe/cdevents"
	DefaultMaxDeliver = 20
	DefaultTimeout    = 30 * time.Second
)

// Options configure a Bridge. Zero values take the defaults named on each field.
type Options struct {
	// Sink is the URL the CDEvents are POSTed to. Required.
	Sink string
	// Name names the durable consumer (and the service, its dead letters). Default "cdevents".
	Name string
	// Source is the CDEvents context source. Default "troupe/cdevents".
	Source string
	// Spec is the CDEvents spec version to speak: Spec05 (v0.5.1, the default) or Spec04
	// (v0.4.1, for consumers built on an older SDK, such as Flux's CDEvents Receiver).
	Spec string
	// Structured sends structured-mode CloudEvents (the whole event as the JSON body); binary
	// mode (ce-* headers, the CDEvent as the body) otherwise, as the CDEvents SDK's examples do.
	Structured bool
	// NoReconciliation sends the service events only, not the reconciliation started/finished
	// custom events (for a sink that takes the released CDEvents types only).
	NoReconciliation bool
	// MaxDeliver bounds how often a troupe event is tried before it is dead-lettered: with the
	// default backoff, 20 deliveries ride out a sink that is down for about eight minutes.
	// Default 20.
	MaxDeliver int
	// Backoff is the delay before the n-th retry (the last repeats). Default: the events
	// package's (1s, 5s, 15s, 30s).
	Backoff []time.Duration
	// Timeout bounds one POST to the sink. Default 30s.
	Timeout time.Duration
	// Names is the troupe system to read: the live one (zero value) or a sandbox.
	Names   events.Names
	Logger  *zerolog.Logger
	Metrics *events.Metrics
}

// Bridge publishes CDEvents for troupe's flows to a CloudEvents HTTP sink. It is a subscriber
// like any other: a durable consumer of its own name, shared by its replicas; an event is acked
// only once the sink accepted every CDEvent it maps to, and retried with backoff otherwise.
type Bridge struct {
	opts   Options
	sub    *events.Subscriber
	lookup *lookup
	mapper mapper
	client client.Client
}

// New builds a Bridge reading js. It opens the events stream and the revisions bucket, so it
// fails while NATS is not provisioned yet (serve.Main tries again).
func New(ctx context.Context, js jetstream.JetStream, o Options) (*Bridge, error) {
	if o.Sink == "" {
		return nil, errors.New("cdevents: no sink")
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	if o.Spec == "" {
		o.Spec = Spec05
	}
	sp, ok := specs[o.Spec]
	if !ok {
		return nil, fmt.Errorf("cdevents: spec %q: want %s or %s", o.Spec, Spec05, Spec04)
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if err := loadSchemas(); err != nil {
		return nil, err
	}
	l, err := newLookup(ctx, js, o.Names)
	if err != nil {
		return nil, err
	}
	c, err := cloudevents.NewClientHTTP(cehttp.WithClient(http.Client{Timeout: o.Timeout}))
	if err != nil {
		return nil, err
	}
	b := &Bridge{opts: o, lookup: l, mapper: mapper{spec: sp, source: o.Source, withReconciliation: !o.NoReconciliation}, client: c}
	types := []string{events.TypeReady, events.TypeUninstalled}
	if !o.NoReconciliation {
		types = append(types, events.TypeRequested, events.TypeRollbackRequested, events.TypeUninstallRequested,
			events.TypeFailed, events.TypeSuperseded, events.TypeDiffed)
	}
	b.sub, err = events.NewSubscriber(js, events.SubscriberConfig{Service: o.Name, Names: o.Names, Types: types,
		// One at a time: while the sink takes them, CDEvents arrive in the stream's order (a
		// flow's started before its finished); an event that is retried arrives late.
		Concurrency: 1, MaxDeliver: o.MaxDeliver, Backoff: o.Backoff, Logger: o.Logger, Metrics: o.Metrics}, b.handle)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Start consumes until ctx ends (events.Subscriber.Start).
func (b *Bridge) Start(ctx context.Context) error { return b.sub.Start(ctx) }

// Ready is closed once the bridge receives events.
func (b *Bridge) Ready() <-chan struct{} { return b.sub.Ready() }

// handle sends the CDEvents of e. A fact the stream could not tell, or a sink that did not take
// an event, is an error the subscriber retries with backoff (every CDEvent again: their ids are
// derived, so a sink can drop what it already has); an event that maps to no valid CDEvent is
// dead-lettered at once.
func (b *Bridge) handle(ctx context.Context, e event.Event) error {
	var f facts
	if needsFacts(e.Type()) {
		d, ok := events.DeliveryFrom(ctx)
		if !ok {
			return events.Terminalf("no stream position for %s", e.ID())
		}
		var err error
		if f, err = b.lookup.facts(ctx, e, d.Sequence); err != nil {
			return err
		}
	}
	cds, err := b.mapper.translate(e, f)
	if err != nil {
		return events.Terminal(err)
	}
	for _, cd := range cds {
		if err := b.send(ctx, cd); err != nil {
			return err
		}
	}
	return nil
}

// send POSTs cd to the sink as a CloudEvent; nil once the sink accepted it (a 2xx answer).
func (b *Bridge) send(ctx context.Context, cd api.CDEventV04) error {
	ce, err := api.AsCloudEvent(cd) // validates cd again
	if err != nil {
		return events.Terminal(err)
	}
	ce.SetType(typeOf(cd)) // AsCloudEvent takes a custom event's type from GetType (see typeOf)
	ce.SetTime(cd.GetTimestamp())
	ctx = cloudevents.ContextWithTarget(ctx, b.opts.Sink)
	if b.opts.Structured {
		ctx = cloudevents.WithEncodingStructured(ctx)
	} else {
		ctx = cloudevents.WithEncodingBinary(ctx)
	}
	if res := b.client.Send(ctx, *ce); !cloudevents.IsACK(res) {
		return fmt.Errorf("send %s %s to %s: %w", ce.Type(), ce.ID(), b.opts.Sink, res)
	}
	return nil
}
