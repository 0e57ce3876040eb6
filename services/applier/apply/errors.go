package apply

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/troupe-dev/troupe/events"
)

// Reason codes of apply failures, for release.failed.
const (
	// ReasonInvalidObject: the API server's validation or admission rejected an object.
	ReasonInvalidObject = "invalid_object"
	// ReasonUnknownKind: no API serves the object's kind (a missing CRD).
	ReasonUnknownKind = "unknown_kind"
	// ReasonNamespaceNotAllowed: an object is in a namespace off the applier's allowlist, or is
	// cluster-scoped where the applier may not touch those.
	ReasonNamespaceNotAllowed = "namespace_not_allowed"
	// ReasonAdoptNotAllowed: the request says adopt, and the applier was not started to allow it.
	ReasonAdoptNotAllowed = "adopt_not_allowed"
	// ReasonNamespaceNotFound: the target namespace does not exist (options.createNamespace).
	ReasonNamespaceNotFound = "namespace_not_found"
	// ReasonForbidden: RBAC denied the applier (or the account it impersonates).
	ReasonForbidden = "forbidden"
	// ReasonOwnershipConflict: the object exists and belongs to another release or to none
	// (options.adopt takes it over).
	ReasonOwnershipConflict = "ownership_conflict"
	// ReasonCRDNotEstablished: a CRD of the bundle did not become Established in time.
	ReasonCRDNotEstablished = "crd_not_established"
	// ReasonClusterUnreachable: the API server did not answer (retried first).
	ReasonClusterUnreachable = "cluster_unreachable"
)

// ObjectError is what went wrong with one object.
type ObjectError struct {
	Ref     events.ObjectRef
	Message string
}

// Error is an apply failure: a reason code, the objects it concerns and the cause. Transient
// errors (the API server unreachable or overloaded) may pass when retried.
type Error struct {
	// Stage is where it failed, when not the caller's own (hook, for a chart's hook).
	Stage     string
	Reason    string
	Objects   []ObjectError
	Err       error
	Transient bool
}

func (e *Error) Error() string {
	if d := e.Detail(); d != "" {
		return e.Reason + ": " + d
	}
	return e.Reason
}

// Detail is what went wrong, without the reason code: the message of release.failed, which
// carries the reason beside it. Objects with the same message share it ("Deployment web/a,
// Service web/a: namespace web does not exist"); ten objects are named, then a count.
func (e *Error) Detail() string {
	if len(e.Objects) == 0 {
		if e.Err != nil {
			return e.Err.Error()
		}
		return ""
	}
	var messages []string
	refs := map[string][]string{}
	for _, o := range e.Objects {
		if _, ok := refs[o.Message]; !ok {
			messages = append(messages, o.Message)
		}
		refs[o.Message] = append(refs[o.Message], describe(o.Ref))
	}
	var b strings.Builder
	named := 0
	for i, m := range messages {
		if named == 10 {
			break
		}
		rs := refs[m]
		rs = rs[:min(len(rs), 10-named)]
		named += len(rs)
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %s", strings.Join(rs, ", "), m)
	}
	if named < len(e.Objects) {
		fmt.Fprintf(&b, "; and %d more objects", len(e.Objects)-named)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func describe(r events.ObjectRef) string {
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

// objectError classifies an API error about one object.
func objectError(ref events.ObjectRef, err error) *Error {
	oe := []ObjectError{{Ref: ref, Message: apiMessage(err)}}
	switch {
	case transient(err):
		return &Error{Reason: ReasonClusterUnreachable, Objects: oe, Err: err, Transient: true}
	case meta.IsNoMatchError(err):
		oe[0].Message = fmt.Sprintf("no API serves %s %s (is its CRD installed?)", ref.APIVersion, ref.Kind)
		return &Error{Reason: ReasonUnknownKind, Objects: oe, Err: err}
	case apierrors.IsForbidden(err) && !strings.Contains(err.Error(), "admission webhook"):
		return &Error{Reason: ReasonForbidden, Objects: oe, Err: err}
	case apierrors.IsNotFound(err) && ref.Namespace != "" && strings.Contains(err.Error(), "namespaces \""+ref.Namespace+"\" not found"):
		oe[0].Message = fmt.Sprintf("namespace %s does not exist (troupe release --create-namespace, options.createNamespace, creates it)", ref.Namespace)
		return &Error{Reason: ReasonNamespaceNotFound, Objects: oe, Err: err}
	default:
		return &Error{Reason: ReasonInvalidObject, Objects: oe, Err: err}
	}
}

// apiMessage is the API server's own message for err, without the Go error chain around it.
func apiMessage(err error) string {
	var s apierrors.APIStatus
	if errors.As(err, &s) && s.Status().Message != "" {
		return s.Status().Message
	}
	return err.Error()
}

// transient reports errors that may pass when retried: the API server unreachable, overloaded
// or timing out.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	msg := err.Error()
	if apierrors.IsInternalError(err) {
		// The API server answers some invalid objects with 500 too ("failed to create typed
		// patch object"): only its storage failing is worth a retry.
		return strings.Contains(msg, "etcdserver") || strings.Contains(msg, "timeout")
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsServiceUnavailable(err) || strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset")
}

// merge combines the errors of one phase into one: the first error's reason (a transient one's
// if any: the phase is retried), every object named.
func merge(errs []*Error) *Error {
	if len(errs) == 0 {
		return nil
	}
	out := &Error{Reason: errs[0].Reason, Err: errs[0].Err}
	for _, e := range errs {
		if e.Transient && !out.Transient {
			out.Reason, out.Err, out.Transient = e.Reason, e.Err, true
		}
		out.Objects = append(out.Objects, e.Objects...)
	}
	return out
}
