package events

import (
	"errors"
	"fmt"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrInvalidName is returned for a namespace or release name that is not a DNS-1123 label.
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidSubject is returned for a NATS subject that is not troupe.release.<ns>.<name>.<event>.
	ErrInvalidSubject = errors.New("invalid subject")
	// ErrUnknownType is returned for an event type that is not in the catalog.
	ErrUnknownType = errors.New("unknown event type")
	// ErrInvalidPayload is returned for event data that does not match its type's payload.
	ErrInvalidPayload = errors.New("invalid payload")
	// ErrMalformed is returned for bytes that are not a CloudEvent troupe can read.
	ErrMalformed = errors.New("malformed event")
	// ErrDigestMismatch is returned when an object's content does not match its digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNotFound is returned when an object is not in the object store.
	ErrNotFound = errors.New("not found")
)

// terminalError marks an error that retrying cannot fix (bad input).
type terminalError struct {
	err    error
	reason string
}

func (t terminalError) Error() string { return t.err.Error() }
func (t terminalError) Unwrap() error { return t.err }

// Terminal marks err as terminal: the Subscriber does not retry the event, it dead-letters it with
// err as the reason and terminates the delivery (and, where the subscriber has a failure stage,
// publishes release.failed). A nil err stays nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return terminalError{err: err}
}

// Reject is Terminal with a reason code: the snake_case code (template_error, not_a_chart, …)
// that release.failed carries for tools to match on.
func Reject(reason string, err error) error {
	if err == nil {
		return nil
	}
	return terminalError{err: err, reason: reason}
}

// ReasonOf returns the reason code of a terminal error: the one given to Reject, or "terminal".
func ReasonOf(err error) string {
	var t terminalError
	if errors.As(err, &t) && t.reason != "" {
		return t.reason
	}
	return "terminal"
}

// Terminalf is Terminal(fmt.Errorf(format, args...)).
func Terminalf(format string, args ...any) error {
	return Terminal(fmt.Errorf(format, args...))
}

// IsTerminal reports whether err, or any error it wraps, was marked with Terminal.
func IsTerminal(err error) bool {
	var t terminalError
	return errors.As(err, &t)
}
