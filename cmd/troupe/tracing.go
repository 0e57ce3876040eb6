package main

import (
	"context"
	"fmt"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/tracing"
)

// flushTimeout bounds how long a command waits, as it exits, for its spans to reach the OTLP
// receiver.
const flushTimeout = 5 * time.Second

// traced runs f — publishing the request e and, with --wait, following it — under the root span
// of e's trace, "cli request <type>", exported as --otlp-endpoint (or OpenTelemetry's environment)
// says: every service's span of the flow descends from it. With tracing off f runs as it is.
// The span is exported before traced returns; an export that fails is reported, never fatal.
func (c *cli) traced(ctx context.Context, e event.Event, f func(context.Context) error) (err error) {
	p, err := tracing.New(ctx, c.otlp, "cli")
	if err != nil {
		return usageError{err}
	}
	if p.TracerProvider() == nil {
		return f(ctx)
	}
	defer c.flush(ctx, p)
	ctx, span := events.StartSpan(ctx, p.TracerProvider(), "cli request "+e.Type(), e, trace.WithSpanKind(trace.SpanKindProducer))
	defer func() { events.EndSpan(span, err) }()
	fmt.Fprintf(c.stderr, "troupe: trace %s\n", span.SpanContext().TraceID())
	return f(ctx)
}

// flush exports what p has not exported yet, and stops it.
func (c *cli) flush(ctx context.Context, p *tracing.Provider) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		fmt.Fprintf(c.stderr, "troupe: %v\n", err)
	}
}

// devTracing returns the tracer provider of each service `troupe dev` runs — each its own, so
// that a trace shows which service did what — and stop, which exports what they did not yet:
// call it once the services stopped. With tracing off every provider is nil.
func (c *cli) devTracing(ctx context.Context, services ...string) (providers func(service string) trace.TracerProvider, stop func(), err error) {
	byName := map[string]*tracing.Provider{}
	stop = func() {
		for _, p := range byName {
			c.flush(ctx, p)
		}
	}
	for _, s := range services {
		p, err := tracing.New(ctx, c.otlp, s)
		if err != nil {
			return nil, nil, usageError{err}
		}
		byName[s] = p
	}
	return func(service string) trace.TracerProvider { return byName[service].TracerProvider() }, stop, nil
}
