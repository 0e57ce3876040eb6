package events

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/rs/zerolog"
)

// Handler handles one event. Its error decides what happens to the event (see Subscriber):
// nil acks it, an error marked with Terminal dead-letters it at once, any other error retries it
// with backoff. A handler may see an event more than once and must not do anything new the second
// time.
type Handler func(ctx context.Context, e event.Event) error

// Middleware wraps a Handler.
type Middleware func(Handler) Handler

// Chain wraps h in mws; the first middleware is the outermost.
func Chain(h Handler, mws ...Middleware) Handler {
	for i := len(mws) - 1; i >= 0; i-- {
		h = mws[i](h)
	}
	return h
}

// ErrPanic wraps a handler's panic.
var ErrPanic = errors.New("handler panicked")

// Recover turns a panic in the handler into an error (wrapping ErrPanic, with the panic value and
// stack), so that one bad event does not stop the service. The error is not terminal: the event is
// retried, and dead-lettered when its deliveries run out.
func Recover() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, e event.Event) (err error) {
			defer func() {
				if r := recover(); r != nil {
					zerolog.Ctx(ctx).Error().Interface("panic", r).Bytes("stack", debug.Stack()).Msg("handler panicked")
					err = fmt.Errorf("%w: %v", ErrPanic, r)
				}
			}()
			return next(ctx, e)
		}
	}
}

// Timeout bounds each handler run: its ctx ends after d (StopAt: the handler's NATS calls each
// keep their own timeout). The handler must return when its ctx ends; the error it returns then
// is retried like any other.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, e event.Event) error {
			ctx, cancel := StopAt(ctx, time.Now().Add(d))
			defer cancel()
			return next(ctx, e)
		}
	}
}

// StopAt returns a copy of parent that is cancelled at t (its cause context.DeadlineExceeded)
// but reports no deadline: use it for how long a handler or a stage may take. A context with a
// deadline makes every JetStream API call under it (a KV read, a publish's ack, a stream read)
// wait until that deadline for its answer; when the server it went to dies mid-request (a node
// of the cluster SIGKILLed), the answer never comes, and a handler given 10 minutes would hang
// for 10 minutes on one lost request. Without a deadline each call keeps JetStream's own API
// timeout (seconds), fails with a timeout the handler's retry cures, and is still cut short
// when the stage's time is up.
func StopAt(parent context.Context, t time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	timer := time.AfterFunc(time.Until(t), func() { cancel(context.DeadlineExceeded) })
	return ctx, func() {
		timer.Stop()
		cancel(context.Canceled)
	}
}

// Logging puts a logger into the handler's ctx (zerolog.Ctx) with the event's id, type, release,
// correlation id, revision and — under Tracing — trace id as fields, and logs each outcome once.
func Logging(base zerolog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, e event.Event) (err error) {
			lc := base.With().Str("event_id", e.ID()).Str("type", e.Type()).Str("release", e.Subject())
			if c := CorrelationID(e); c != "" {
				lc = lc.Str("correlation_id", c)
			}
			if rev := Revision(e); rev > 0 {
				lc = lc.Int("revision", rev)
			}
			if id := traceID(ctx); id != "" {
				lc = lc.Str("trace_id", id)
			}
			log := lc.Logger()
			ctx = log.WithContext(ctx)
			start := time.Now()
			defer func() {
				ev := log.Debug()
				if err != nil {
					ev = log.Warn().Err(err).Bool("terminal", IsTerminal(err))
				}
				ev.Dur("took", time.Since(start)).Msg("handled")
			}()
			return next(ctx, e)
		}
	}
}

// Instrument records each handler run in m under service.
func Instrument(m *Metrics, service string) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, e event.Event) (err error) {
			start := time.Now()
			defer func() {
				m.duration.WithLabelValues(service, e.Type()).Observe(time.Since(start).Seconds())
				outcome := "ok"
				switch {
				case IsTerminal(err):
					outcome = "terminal"
				case err != nil:
					outcome = "error"
				}
				if err != nil {
					m.failed.WithLabelValues(service, e.Type()).Inc()
				}
				m.handled.WithLabelValues(service, e.Type(), outcome).Inc()
			}()
			return next(ctx, e)
		}
	}
}

// Retry retries a handler in process, up to attempts times in all, waiting delay between tries,
// for errors that are not terminal. It suits short transient failures (a conflict, a blip); longer
// ones are better left to the subscriber's redelivery with backoff, which frees the worker.
func Retry(attempts int, delay time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, e event.Event) error {
			var err error
			for i := 0; i < attempts; i++ {
				if err = next(ctx, e); err == nil || IsTerminal(err) {
					return err
				}
				if i == attempts-1 {
					break
				}
				select {
				case <-ctx.Done():
					return errors.Join(err, ctx.Err())
				case <-time.After(delay):
				}
			}
			return err
		}
	}
}
