package events_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// spanNamed returns the ended spans of rec named name, in the order they ended.
func spanNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// parentOf is the span an event's traceparent names.
func parentOf(e event.Event) trace.SpanContext {
	return trace.SpanContextFromContext(events.TraceContext(context.Background(), e))
}

// TestTracingMiddleware: a subscriber with a TracerProvider handles each event in a span of its
// own, "<service> handle <type>", a child of the span the event's traceparent names, with the
// event's attributes; a handler's stages are its children; what the handler publishes carries
// the handler's span as traceparent, so the next subscriber's span is a child of it — one trace.
// A failed delivery's span has an error status and says it is retried; an event with no
// traceparent starts a trace of its own.
func TestTracingMiddleware(t *testing.T) {
	_, _, js := natstest.Start(t)
	pub := events.NewPublisher(js, events.Names{})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	run(t, js, events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, TracerProvider: tp},
		func(ctx context.Context, e event.Event) error {
			events.TraceRevision(ctx, 1)
			if err := events.Stage(ctx, "render", func(context.Context) error { return nil }); err != nil {
				return err
			}
			out, err := events.Derive(e, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: "sha256:" + sha, Size: 1})
			if err != nil {
				return err
			}
			events.WithRevision(&out, 1)
			_, err = pub.Publish(ctx, out)
			return err
		})
	var failed atomic.Bool
	run(t, js, fastRetry(events.SubscriberConfig{Service: "applier", Types: []string{events.TypeRendered}, TracerProvider: tp}),
		func(ctx context.Context, e event.Event) error {
			if failed.CompareAndSwap(false, true) {
				return errFlaky
			}
			return nil
		})

	// The CLI's request: its root span, the request published under it.
	ctx, root := tp.Tracer("test").Start(t.Context(), "cli publish release.requested")
	req := publishRequestCtx(t, ctx, pub, podinfo)
	root.End()
	assert.Equal(t, root.SpanContext().SpanID(), parentOf(releaseEvents(t, js, events.TypeRequested)[0]).SpanID(),
		"the request carries the CLI's span")

	require.Eventually(t, func() bool { return len(spanNamed(rec, "applier handle release.rendered")) == 2 }, 20*time.Second, 10*time.Millisecond)
	handled := spanNamed(rec, "renderer handle release.requested")
	require.Len(t, handled, 1)
	h := handled[0]
	assert.Equal(t, root.SpanContext().TraceID(), h.SpanContext().TraceID(), "one trace")
	assert.Equal(t, root.SpanContext().SpanID(), h.Parent().SpanID(), "a child of the span that published the event")
	assert.True(t, h.Parent().IsRemote())
	assert.Equal(t, trace.SpanKindConsumer, h.SpanKind())
	assert.Equal(t, codes.Unset, h.Status().Code)
	for key, want := range map[attribute.Key]string{
		"messaging.system": "nats", "cloudevents.event_id": req.ID(), "cloudevents.event_type": events.TypeRequested,
		events.AttrNamespace: podinfo.Namespace, events.AttrRelease: podinfo.Name, events.AttrRevision: "1",
		events.AttrCorrelationID: req.ID(), events.AttrDeliveries: "1",
	} {
		assert.Equal(t, want, attr(h, key), key)
	}
	stages := spanNamed(rec, "render")
	require.Len(t, stages, 1)
	assert.Equal(t, h.SpanContext().SpanID(), stages[0].Parent().SpanID(), "a stage is a child of its handler's span")

	rendered := releaseEvents(t, js, events.TypeRendered)
	require.Len(t, rendered, 1)
	assert.Equal(t, h.SpanContext().TraceID(), parentOf(rendered[0]).TraceID())
	assert.Equal(t, h.SpanContext().SpanID(), parentOf(rendered[0]).SpanID(), "what a handler publishes carries its span")

	applied := spanNamed(rec, "applier handle release.rendered")
	for i, a := range applied {
		assert.Equal(t, h.SpanContext().TraceID(), a.SpanContext().TraceID(), "one trace")
		assert.Equal(t, h.SpanContext().SpanID(), a.Parent().SpanID(), "each delivery a child of the publisher's span")
		assert.Equal(t, []string{"1", "2"}[i], attr(a, events.AttrDeliveries))
	}
	assert.Equal(t, codes.Error, applied[0].Status().Code, "the failed delivery")
	assert.Equal(t, "retry", attr(applied[0], events.AttrOutcome))
	assert.Equal(t, codes.Unset, applied[1].Status().Code, "the retry that succeeded")

	// An event that names no span (from a client that does not trace) starts a trace of its own.
	other := publishRequest(t, pub, rel(1))
	require.Eventually(t, func() bool { return len(spanNamed(rec, "renderer handle release.requested")) == 2 }, 20*time.Second, 10*time.Millisecond)
	o := spanNamed(rec, "renderer handle release.requested")[1]
	assert.Equal(t, other.ID(), attr(o, "cloudevents.event_id"))
	assert.False(t, o.Parent().IsValid(), "a root span")
	assert.NotEqual(t, root.SpanContext().TraceID(), o.SpanContext().TraceID())
}

// TestTracingTerminal: a handler's terminal error is an error status with outcome terminal.
func TestTracingTerminal(t *testing.T) {
	_, _, js := natstest.Start(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	run(t, js, events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, TracerProvider: tp, FailStage: events.StageRender},
		func(ctx context.Context, e event.Event) error { return events.Reject("not_a_chart", errFlaky) })
	publishRequest(t, events.NewPublisher(js, events.Names{}), podinfo)
	require.Eventually(t, func() bool { return len(spanNamed(rec, "renderer handle release.requested")) == 1 }, 20*time.Second, 10*time.Millisecond)
	s := spanNamed(rec, "renderer handle release.requested")[0]
	assert.Equal(t, codes.Error, s.Status().Code)
	assert.Equal(t, "terminal", attr(s, events.AttrOutcome))
	assert.Equal(t, "not_a_chart", attr(s, "error.type"))

	// The release.failed the subscriber publishes for it is a child of the failed handling.
	require.Eventually(t, func() bool { return len(releaseEvents(t, js, events.TypeFailed)) == 1 }, 10*time.Second, 10*time.Millisecond)
	failed := releaseEvents(t, js, events.TypeFailed)[0]
	assert.Equal(t, s.SpanContext().SpanID(), parentOf(failed).SpanID())
	assert.Equal(t, s.SpanContext().TraceID(), parentOf(failed).TraceID())
}

// TestWithTrace: an event published under a span carries it, the cause's tracestate dropped,
// the event it was copied from untouched; under no span it is left as it is (what Derive carried
// over from its cause).
func TestWithTrace(t *testing.T) {
	e, err := events.NewEvent("troupe/test", events.TypeRequested, podinfo, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/podinfo"}}})
	require.NoError(t, err)
	const old = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	e.SetExtension(events.ExtTraceParent, old)
	e.SetExtension(events.ExtTraceState, "vendor=x")

	same := events.WithTrace(context.Background(), e)
	assert.Equal(t, old, same.Extensions()[events.ExtTraceParent], "no span: kept")

	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "work")
	defer span.End()
	out := events.WithTrace(ctx, e)
	assert.Equal(t, span.SpanContext().SpanID(), parentOf(out).SpanID())
	assert.NotContains(t, out.Extensions(), events.ExtTraceState)
	assert.Equal(t, old, e.Extensions()[events.ExtTraceParent], "the original is not changed")
	assert.Equal(t, "vendor=x", e.Extensions()[events.ExtTraceState])
}

// publishRequestCtx is publishRequest under ctx's span.
func publishRequestCtx(t *testing.T, ctx context.Context, pub *events.Publisher, r events.Release) event.Event {
	t.Helper()
	e, err := events.NewEvent("troupe/test", events.TypeRequested, r,
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/" + r.Name}}})
	require.NoError(t, err)
	_, err = pub.Publish(ctx, e)
	require.NoError(t, err)
	return e
}
