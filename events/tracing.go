package events

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// TracerName is the instrumentation scope of the spans troupe starts.
const TracerName = "github.com/troupe-dev/troupe/events"

// Attributes troupe puts on its spans, beside OpenTelemetry's messaging and CloudEvents ones.
const (
	AttrNamespace     = attribute.Key("troupe.release.namespace")
	AttrRelease       = attribute.Key("troupe.release.name")
	AttrRevision      = attribute.Key("troupe.revision")
	AttrCorrelationID = attribute.Key("troupe.correlation_id")
	// AttrDeliveries is how many times the handled event was delivered, this time included.
	AttrDeliveries = attribute.Key("troupe.deliveries")
	// AttrOutcome is what the subscriber does after a handler failed: "retry" (delivered again
	// later), "terminal" (given up on at once: dead letter, release.failed) or "gave_up" (the
	// last delivery failed). Only on spans whose status is an error.
	AttrOutcome = attribute.Key("troupe.outcome")
)

// extensions is the trace context in an event's CloudEvents extensions, traceparent and
// tracestate (the distributed-tracing extension), as a propagation.TextMapCarrier: OpenTelemetry's
// W3C propagator reads and writes them as it would HTTP headers. In the event, not in NATS
// headers, the context survives whatever carries the event on: a dead letter, a replay, a bridge.
type extensions struct{ e *event.Event }

func (c extensions) Get(key string) string { return stringExt(*c.e, key) }

func (c extensions) Set(key, value string) { c.e.SetExtension(key, value) }

func (c extensions) Keys() []string {
	var keys []string
	for _, k := range []string{ExtTraceParent, ExtTraceState} {
		if _, ok := c.e.Extensions()[k]; ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// TraceContext returns ctx holding, as its remote parent span, the span e's traceparent names:
// the span of the work that published e. ctx is returned as it is when e names none.
func TraceContext(ctx context.Context, e event.Event) context.Context {
	return propagation.TraceContext{}.Extract(ctx, extensions{&e})
}

// WithTrace returns e carrying the span of ctx as its traceparent (and tracestate), so that the
// work e causes is a child of it; e itself when ctx holds no valid span (tracing off) or e
// carries that span already. e is copied before it is changed: an event shares its extensions
// with its copies.
func WithTrace(ctx context.Context, e event.Event) event.Event {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return e
	}
	tc := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, tc)
	if tc[ExtTraceParent] == stringExt(e, ExtTraceParent) && tc[ExtTraceState] == stringExt(e, ExtTraceState) {
		return e
	}
	e = e.Clone()
	e.SetExtension(ExtTraceState, nil) // the cause's, which the new span may not carry
	for k, v := range tc {
		e.SetExtension(k, v)
	}
	return e
}

// StartSpan starts the span of work on e, named name (by convention "<service> <verb> <type>":
// "health publish release.ready"), from tp: a child of the span e's traceparent names — the
// span of whoever published e, whatever span ctx holds — or the root of a new trace when e names
// none. It carries e's id, type, source, release, revision and correlation id, and
// messaging.system nats. End it with EndSpan. A nil tp starts nothing: ctx is returned with a
// span that records nothing.
func StartSpan(ctx context.Context, tp trace.TracerProvider, name string, e event.Event, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if tp == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	if parent := trace.SpanContextFromContext(TraceContext(context.Background(), e)); parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	} else {
		opts = append(opts, trace.WithNewRoot())
	}
	opts = append(opts, trace.WithAttributes(eventAttributes(e)...))
	return tp.Tracer(TracerName, trace.WithInstrumentationVersion(Version())).Start(ctx, name, opts...)
}

// eventAttributes are the attributes of a span about e.
func eventAttributes(e event.Event) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingMessageID(e.ID()),
		semconv.CloudEventsEventID(e.ID()),
		semconv.CloudEventsEventType(e.Type()),
		semconv.CloudEventsEventSource(e.Source()),
		semconv.CloudEventsEventSubject(e.Subject()),
	}
	if r, err := ReleaseOf(e); err == nil {
		attrs = append(attrs, AttrNamespace.String(r.Namespace), AttrRelease.String(r.Name))
	}
	if rev := Revision(e); rev > 0 {
		attrs = append(attrs, AttrRevision.Int(rev))
	}
	if c := CorrelationID(e); c != "" {
		attrs = append(attrs, AttrCorrelationID.String(c))
	}
	return attrs
}

// EndSpan ends span, with an error status when err is not nil (its Error's reason as
// error.type, and the error recorded).
func EndSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		reason := "error"
		if e, ok := errors.AsType[*Error](err); ok {
			reason = e.reason()
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(reason))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// TraceRevision puts revision on the span of ctx: for a handler that numbers the revision of the
// event it handles (a request carries none yet).
func TraceRevision(ctx context.Context, revision int) {
	trace.SpanFromContext(ctx).SetAttributes(AttrRevision.Int(revision))
}

// Stage runs f as one stage of the work of ctx's span, in a child span named name, from the same
// provider, ended with f's error: the applier's validation, CRDs, hooks, objects and prune. With
// no recording span in ctx (tracing off) it only runs f.
func Stage(ctx context.Context, name string, f func(context.Context) error) (err error) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return f(ctx)
	}
	ctx, span := parent.TracerProvider().Tracer(TracerName, trace.WithInstrumentationVersion(Version())).Start(ctx, name)
	defer func() {
		if p := recover(); p != nil {
			EndSpan(span, fmt.Errorf("panic: %v", p))
			panic(p)
		}
		EndSpan(span, err)
	}()
	return f(ctx)
}

// Tracing starts a span per handled event, "<service> handle <type>" of kind consumer, from tp:
// a child of the span the event's traceparent names (StartSpan), so that one flow — the CLI's
// request, each service's handling, each stage — is one trace. The handler's ctx holds the span:
// what it publishes (Publisher.Publish) carries it as traceparent, and Stage starts its stages
// under it. A handler error sets the span's status to error, with the outcome (AttrOutcome) the
// subscriber decides from it and the delivery count. A Subscriber with a TracerProvider puts it
// outermost, so that its logs carry the trace id.
func Tracing(tp trace.TracerProvider, service string) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, e event.Event) (err error) {
			ctx, span := StartSpan(ctx, tp, service+" handle "+e.Type(), e,
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(semconv.MessagingOperationTypeProcess, semconv.MessagingConsumerGroupName(service)))
			if h, ok := ctx.Value(handledSpanKey{}).(*trace.SpanContext); ok {
				*h = span.SpanContext() // for what the subscriber publishes once the handler failed
			}
			d, delivered := DeliveryFrom(ctx)
			if delivered {
				span.SetAttributes(AttrDeliveries.Int64(int64(d.Deliveries)))
			}
			defer func() {
				if err != nil {
					span.SetAttributes(AttrOutcome.String(outcome(err, d, delivered)))
				}
				EndSpan(span, err)
			}()
			return next(ctx, e)
		}
	}
}

// handledSpanKey holds, in a handler's ctx, where Tracing leaves the span of the handling: the
// subscriber publishes a terminal error's release.failed under it, after the span ended.
type handledSpanKey struct{}

// outcome is what the subscriber does with an event whose handler failed with err (see
// Subscriber): AttrOutcome's value.
func outcome(err error, d Delivery, delivered bool) string {
	switch {
	case IsTerminal(err):
		return "terminal"
	case delivered && d.Last():
		return "gave_up"
	}
	return "retry"
}

// traceID is the trace id of ctx's span, "" when it holds none: for logs.
func traceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
