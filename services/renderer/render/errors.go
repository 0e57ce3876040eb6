package render

import (
	"fmt"

	"github.com/troupe-dev/troupe/events"
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
	ReasonSourceTooLarge    = "source_too_large"
	ReasonBadArchive        = "bad_archive"
	ReasonUnsupported       = "unsupported_source"
)

// fail is a render failure a person can act on: a stable reason code and a message saying what
// and where, at stage render. Every error Render returns is one; an unreachable source is
// transient (retried with backoff before the renderer gives up).
func fail(reason string, err error, format string, args ...any) *events.Error {
	msg := fmt.Sprintf(format, args...)
	if err != nil {
		msg += ": " + err.Error()
	}
	return &events.Error{Stage: events.StageRender, Reason: reason, Message: msg, Err: err,
		Transient: reason == ReasonSourceUnreachable}
}
