package render

import (
	"errors"
	"fmt"
)

// Reason codes of a failed render, carried in release.failed for tools to match on.
const (
	ReasonSourceNotFound    = "source_not_found"
	ReasonSourceUnreachable = "source_unreachable"
	ReasonAuthDenied        = "auth_denied"
	ReasonNotAChart         = "not_a_chart"
	ReasonTemplateError     = "template_error"
	ReasonInvalidValues     = "invalid_values"
	ReasonValuesSchema      = "values_schema"
	ReasonInvalidOutput     = "invalid_output"
	ReasonKubeVersion       = "kube_version"
	ReasonBundleTooLarge    = "bundle_too_large"
	ReasonKustomizeError    = "kustomize_error"
	ReasonUnsupported       = "unsupported_source"
)

// Error is a render failure a person can act on: a stable reason code and a message saying what
// and where. Every error Render returns is one.
type Error struct {
	Reason  string
	Message string
	Err     error
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

func fail(reason string, err error, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		msg += ": " + err.Error()
	}
	return &Error{Reason: reason, Message: msg, Err: err}
}

// ReasonOf returns err's reason code, or "" when err is not a render Error.
func ReasonOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
