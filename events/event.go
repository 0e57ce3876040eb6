package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// CloudEvents extension attributes troupe sets.
const (
	ExtCorrelationID = "correlationid"
	ExtCausationID   = "causationid"
	ExtRevision      = "revision"
	ExtTraceParent   = "traceparent"
	ExtTraceState    = "tracestate"
	// ExtRequestTime is the time of the request that started the flow an event belongs to (the
	// release.requested, rollback or uninstall request), carried along so that any service can
	// say how long the flow has taken and when its timeout ends.
	ExtRequestTime = "requesttime"
	// ExtDeadline is when the flow an event belongs to must have ended (its request time plus
	// the request's timeout): set by the event that starts a flow and carried to every reaction,
	// so that any stage can drop work that is too late (FlowDeadline).
	ExtDeadline = "deadline"
)

// ContentTypeStructured is the content type of a structured-mode CloudEvent, troupe's wire form.
const ContentTypeStructured = "application/cloudevents+json"

// SourcePrefix starts every troupe service's CloudEvents source: troupe/<service>.
const SourcePrefix = "troupe/"

// NewEvent builds an event that starts something: a fresh id, which is also its correlation id.
// source is the CloudEvents source ("troupe/cli"); data is the payload, validated against the
// catalog when typ is a catalog type.
func NewEvent(source, typ string, r Release, data any) (event.Event, error) {
	id := NewID()
	e, err := build(id, source, typ, r, data)
	if err != nil {
		return e, err
	}
	e.SetExtension(ExtCorrelationID, id)
	e.SetExtension(ExtRequestTime, e.Time().Format(time.RFC3339Nano))
	setDeadline(&e)
	return e, nil
}

// Derive builds the event that source publishes in reaction to cause: same release (subject),
// same correlation id and revision, causation id = cause's id, trace context carried over, and
// an id derived from (correlation id, source, typ, key) so that a redelivered handler's
// re-publish is dropped by the stream. key tells apart several events of one type that one
// source publishes per revision (progress reports); leave it empty otherwise.
func Derive(cause event.Event, source, typ string, data any, key ...string) (event.Event, error) {
	r, err := ReleaseOf(cause)
	if err != nil {
		return event.Event{}, err
	}
	corr := CorrelationID(cause)
	if corr == "" {
		corr = cause.ID()
	}
	stage := source + " " + typ
	if len(key) > 0 {
		stage += " " + strings.Join(key, " ")
	}
	e, err := build(DeriveID(corr, stage), source, typ, r, data)
	if err != nil {
		return e, err
	}
	e.SetExtension(ExtCorrelationID, corr)
	e.SetExtension(ExtCausationID, cause.ID())
	if rev := Revision(cause); rev > 0 {
		e.SetExtension(ExtRevision, rev)
	}
	requested := RequestTime(cause)
	if requested.IsZero() {
		requested = cause.Time() // a cause from outside troupe's SDK started the flow
	}
	e.SetExtension(ExtRequestTime, requested.UTC().Format(time.RFC3339Nano))
	if d := FlowDeadline(cause); !d.IsZero() {
		e.SetExtension(ExtDeadline, d.UTC().Format(time.RFC3339Nano))
	}
	for _, ext := range []string{ExtTraceParent, ExtTraceState} {
		if v, ok := cause.Extensions()[ext]; ok {
			e.SetExtension(ext, v)
		}
	}
	return e, nil
}

func build(id, source, typ string, r Release, data any) (event.Event, error) {
	if err := r.Validate(); err != nil {
		return event.Event{}, err
	}
	if _, err := subjectEvent(typ); err != nil {
		return event.Event{}, err
	}
	e := event.New()
	e.SetID(id)
	e.SetSource(source)
	e.SetType(typ)
	e.SetSubject(r.String())
	e.SetTime(time.Now().UTC())
	if data == nil {
		data = struct{}{}
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return event.Event{}, fmt.Errorf("encode %s data: %w", typ, err)
	}
	if err := validateData(typ, data, raw); err != nil {
		return event.Event{}, err
	}
	// Set as JSON, not through SetData: SetData would mark bytes for data_base64 in the envelope.
	e.SetDataContentType(event.ApplicationJSON)
	e.DataEncoded = raw
	e.DataBase64 = false
	return e, nil
}

// validateData checks the data of a catalog type. A payload struct of the type's own kind only
// needs its rules checked (its required fields are always written); anything else is decoded
// as the type's payload first.
func validateData(typ string, data any, raw []byte) error {
	spec, ok := Lookup(typ)
	if !ok {
		return nil
	}
	if p, ok := data.(Payload); ok && reflect.TypeOf(p) == reflect.PointerTo(spec.payload) {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidPayload, typ, err)
		}
		return nil
	}
	if reflect.TypeOf(data) == spec.payload {
		p := reflect.New(spec.payload)
		p.Elem().Set(reflect.ValueOf(data))
		if err := p.Interface().(Payload).Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInvalidPayload, typ, err)
		}
		return nil
	}
	_, err := DecodePayload(typ, raw)
	return err
}

// WithRevision sets the revision extension.
func WithRevision(e *event.Event, revision int) { e.SetExtension(ExtRevision, revision) }

// CorrelationID returns the id of the release.requested that started e's revision.
func CorrelationID(e event.Event) string { return stringExt(e, ExtCorrelationID) }

// CausationID returns the id of the event e reacts to.
func CausationID(e event.Event) string { return stringExt(e, ExtCausationID) }

// StartFlow makes e — derived from a cause, so with an id a re-publish repeats — start a flow of
// its own, as a request does: its correlation id becomes its own id and its request time its
// time. For requests a service makes in reaction to an event (history's automatic rollback): the
// events of the new flow must not take the ids the cause's flow gave its own.
func StartFlow(e *event.Event) {
	e.SetExtension(ExtCorrelationID, e.ID())
	e.SetExtension(ExtRequestTime, e.Time().UTC().Format(time.RFC3339Nano))
	setDeadline(e)
}

// FlowDeadline returns when e's flow must have ended: its deadline extension, else (an event
// from a publisher that does not set it) its request time plus the timeout its payload names —
// a flow's start or an event carrying options — or the default timeout. Zero when e says
// neither when its flow started nor what its payload is.
func FlowDeadline(e event.Event) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, stringExt(e, ExtDeadline)); err == nil {
		return t
	}
	start := RequestTime(e)
	if start.IsZero() {
		if !StartsFlow(e.Type()) {
			return time.Time{}
		}
		start = e.Time()
	}
	if start.IsZero() {
		return time.Time{}
	}
	return start.Add(timeoutOf(e))
}

// StartsFlow reports whether an event of type typ starts a flow: a request (release, rollback,
// uninstall), whose id becomes the correlation id of every event that reacts to it.
func StartsFlow(typ string) bool {
	return typ == TypeRequested || typ == TypeRollbackRequested || typ == TypeUninstallRequested
}

// setDeadline sets the deadline extension of an event that starts a flow.
func setDeadline(e *event.Event) {
	if !StartsFlow(e.Type()) {
		return
	}
	start := RequestTime(*e)
	if start.IsZero() {
		start = e.Time()
	}
	e.SetExtension(ExtDeadline, start.Add(timeoutOf(*e)).UTC().Format(time.RFC3339Nano))
}

// timeoutOf returns the timeout e's payload names, or DefaultTimeout.
func timeoutOf(e event.Event) time.Duration {
	var o struct {
		Options Options  `json:"options"`
		Timeout Duration `json:"timeout"`
	}
	if e.DataEncoded == nil || json.Unmarshal(e.DataEncoded, &o) != nil {
		return DefaultTimeout
	}
	if o.Timeout > 0 { // release.uninstall.requested
		return time.Duration(o.Timeout)
	}
	return o.Options.TimeoutOrDefault()
}

// RequestTime returns when the request that started e's flow was made; zero when e does not say.
func RequestTime(e event.Event) time.Time {
	t, err := time.Parse(time.RFC3339Nano, stringExt(e, ExtRequestTime))
	if err != nil {
		return time.Time{}
	}
	return t
}

// Revision returns e's revision, or 0 when it is not known yet.
func Revision(e event.Event) int {
	v, ok := e.Extensions()[ExtRevision]
	if !ok {
		return 0
	}
	n, err := types.ToInteger(v)
	if err != nil {
		return 0
	}
	return int(n)
}

func stringExt(e event.Event, name string) string {
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	s, err := types.Format(v)
	if err != nil {
		return ""
	}
	return s
}

// ReleaseOf returns the release an event is about, from its CloudEvents subject.
func ReleaseOf(e event.Event) (Release, error) {
	return ParseRelease(e.Subject())
}

// Data decodes and validates e's data as T, a catalog payload struct.
func Data[T any, P interface {
	*T
	Payload
}](e event.Event) (*T, error) {
	p := P(new(T))
	spec, known := Lookup(e.Type())
	if err := decodeValid(e.Data(), p, !known || spec.Request); err != nil {
		return nil, fmt.Errorf("%w: %s %s: %w", ErrInvalidPayload, e.Type(), e.ID(), err)
	}
	return p, nil
}

// Encode returns e in troupe's wire form: structured mode, the JSON envelope as the body.
func Encode(e event.Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// Straight to the SDK's encoder: json.Marshal would re-scan and compact its output.
	b, err := e.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID(), err)
	}
	return b, nil
}

// Decode reads a CloudEvent from a NATS message on a troupe release subject, in structured mode
// (JSON envelope body) or binary mode (ce-* headers, data as body). It checks that the event is a
// valid CloudEvent, that its type and subject agree with the NATS subject, and that a catalog
// type's data is a valid payload. Every error wraps ErrMalformed and says what is wrong.
func (n Names) Decode(subject string, header nats.Header, body []byte) (event.Event, error) {
	e, err := decodeEnvelope(header, body)
	if err != nil {
		return event.Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := e.Validate(); err != nil {
		return event.Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	r, typ, err := n.ParseSubject(subject)
	if err != nil {
		return event.Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if e.Type() != typ {
		return event.Event{}, fmt.Errorf("%w: type %q does not match subject %q (want %q)", ErrMalformed, e.Type(), subject, typ)
	}
	if e.Subject() != r.String() {
		return event.Event{}, fmt.Errorf("%w: subject attribute %q does not match NATS subject %q (want %q)", ErrMalformed, e.Subject(), subject, r.String())
	}
	if _, ok := Lookup(typ); ok {
		p, err := DecodePayload(typ, e.Data())
		if err != nil {
			return event.Event{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		// A verdict counts for the gate whose subject it is on, which only that gate's identity
		// may publish on: one naming another gate is no one's.
		if IsVerdict(typ) {
			if g, sg := verdictOf(p).Gate, n.SubjectGate(subject); g != sg {
				return event.Event{}, fmt.Errorf("%w: a %s of gate %q on gate %q's subject %q", ErrMalformed, typ, g, sg, subject)
			}
		}
	}
	return e, nil
}

func verdictOf(p Payload) *Verdict {
	switch v := p.(type) {
	case *Approved:
		return (*Verdict)(v)
	case *Rejected:
		return (*Verdict)(v)
	}
	return &Verdict{}
}

func decodeEnvelope(header nats.Header, body []byte) (event.Event, error) {
	if isBinary(header) {
		return decodeBinary(header, body)
	}
	if len(body) == 0 {
		return event.Event{}, fmt.Errorf("empty message: neither a JSON CloudEvent body nor ce-* headers")
	}
	var e event.Event
	// Straight to the SDK's decoder: json.Unmarshal would scan the whole body once more first.
	if err := e.UnmarshalJSON(body); err != nil {
		return event.Event{}, fmt.Errorf("body is not a structured-mode CloudEvent (JSON with specversion, id, source, type): %w", err)
	}
	return e, nil
}

func isBinary(h nats.Header) bool {
	for k := range h {
		if strings.EqualFold(k, "ce-specversion") {
			return true
		}
	}
	return false
}

// decodeBinary reads a binary-mode CloudEvent (NATS protocol binding): attributes and extensions
// in ce-* headers, data as the body, its type in content-type.
func decodeBinary(h nats.Header, body []byte) (event.Event, error) {
	e := event.New()
	var contentType string
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		lk := strings.ToLower(k)
		if lk == "content-type" {
			contentType = v
			continue
		}
		name, ok := strings.CutPrefix(lk, "ce-")
		if !ok {
			continue
		}
		switch name {
		case "specversion":
			if v != event.CloudEventsVersionV1 {
				return e, fmt.Errorf("ce-specversion %q is not supported (want %s)", v, event.CloudEventsVersionV1)
			}
		case "id":
			e.SetID(v)
		case "source":
			e.SetSource(v)
		case "type":
			e.SetType(v)
		case "subject":
			e.SetSubject(v)
		case "dataschema":
			e.SetDataSchema(v)
		case "time":
			t, err := types.ParseTime(v)
			if err != nil {
				return e, fmt.Errorf("ce-time %q: %w", v, err)
			}
			e.SetTime(t)
		default:
			if err := e.Context.SetExtension(name, v); err != nil {
				return e, fmt.Errorf("ce-%s: %w", name, err)
			}
		}
	}
	if contentType == "" {
		contentType = event.ApplicationJSON
	}
	if len(body) > 0 {
		if err := e.SetData(contentType, body); err != nil {
			return e, fmt.Errorf("data: %w", err)
		}
	}
	return e, nil
}
