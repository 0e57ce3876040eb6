package serve

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// waiter retries what a starting service waits on NATS for, with backoff, saying in the log what
// it waits for and why.
type waiter struct {
	log    zerolog.Logger
	server string
	err    error // the permanent error retry stopped on
}

// permanent is an error retrying cannot fix: retry returns it at once.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// retry calls f until it returns nil (true), ctx ends (false), or f returns a permanent error
// (false, w.err set to it). Between tries it waits 100ms, doubling up to 5s.
func (w *waiter) retry(ctx context.Context, what string, f func() error) bool {
	wait := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return true
		}
		if p, ok := errors.AsType[permanent](err); ok {
			w.err = p.err
			return false
		}
		if ctx.Err() != nil {
			return false
		}
		w.log.Warn().Err(err).Str("server", w.server).Dur("retry_in", wait).Msg("waiting for NATS: " + what)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// notThereYet reports whether err is NATS or JetStream not (yet) answering or not (yet) holding
// a stream or bucket: what waiting cures, once the server is up and provisioned.
func notThereYet(err error) bool {
	return events.Unavailable(err) || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}
