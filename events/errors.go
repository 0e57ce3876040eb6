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

// Error is why a handler could not do its work on an event, with everything the Subscriber needs
// to decide, in one place, what happens next: retry it (Transient, deliveries left), or give up —
// dead-letter the event, publish release.failed with Stage, Reason, Message and Objects, and term
// the delivery. Handlers return one; they never publish release.failed themselves.
//
// Any other error a handler returns is transient: retried with backoff, and given up on with
// reason max_deliveries once the deliveries run out.
type Error struct {
	// Stage is where the revision failed (StageRender, StageApply, …). Default: the
	// Subscriber's FailStage.
	Stage string
	// Reason is the snake_case code tools match on (template_error, ownership_conflict, …).
	// Default: "terminal".
	Reason string
	// Message says what failed and where, for a person. Default: Err's message.
	Message string
	// Objects are the failing objects, when there are any.
	Objects []ObjectStatus
	// Revision is the revision the failure ends, for an event that does not carry it yet (a
	// release.requested is numbered by its handler). Default: the event's.
	Revision int
	// Transient says retrying may help (a registry or API server that did not answer): the
	// event is retried while deliveries are left, then given up on with this Reason.
	Transient bool
	// Err is the cause.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Err != nil:
		return e.Err.Error()
	}
	return e.reason()
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) reason() string {
	if e.Reason == "" {
		return "terminal"
	}
	return e.Reason
}

// Terminal marks err as terminal: the Subscriber does not retry the event, it dead-letters it with
// err as the reason and terminates the delivery (and, where the subscriber has a failure stage,
// publishes release.failed). A nil err stays nil.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Err: err}
}

// Reject is Terminal with a reason code: the snake_case code (template_error, not_a_chart, …)
// that release.failed carries for tools to match on.
func Reject(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Reason: reason, Err: err}
}

// Terminalf is Terminal(fmt.Errorf(format, args...)).
func Terminalf(format string, args ...any) error {
	return Terminal(fmt.Errorf(format, args...))
}

// ReasonOf returns the reason code of err: the Reason of the Error it wraps, "terminal" for one
// without, "" for an error that is not an Error.
func ReasonOf(err error) string {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.reason()
	}
	return ""
}

// IsTerminal reports whether err, or any error it wraps, is an Error that is not Transient: one
// the Subscriber gives up on at once.
func IsTerminal(err error) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && !e.Transient
}
