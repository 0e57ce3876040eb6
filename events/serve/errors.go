package serve

import "errors"

var (
	// ErrNotReady is a service that did not become ready within a Group's ReadyTimeout.
	ErrNotReady = errors.New("did not become ready")
	// ErrStopped is a service whose Start returned, without an error, before its group stopped it.
	ErrStopped = errors.New("stopped before it was asked to")
)
