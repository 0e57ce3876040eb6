package events_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

var podinfo = events.Release{Namespace: "prod", Name: "podinfo"}

func requested(t *testing.T) event.Event {
	t.Helper()
	e, err := events.NewEvent("troupe/cli", events.TypeRequested, podinfo,
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/podinfo"}}})
	require.NoError(t, err)
	return e
}

func TestNewEvent(t *testing.T) {
	e := requested(t)
	assert.Equal(t, "prod/podinfo", e.Subject())
	assert.Equal(t, events.TypeRequested, e.Type())
	assert.Equal(t, e.ID(), events.CorrelationID(e), "a new event starts its own correlation")
	assert.NoError(t, e.Validate())

	_, err := events.NewEvent("troupe/cli", events.TypeRequested, podinfo, events.Requested{})
	assert.ErrorIs(t, err, events.ErrInvalidPayload, "an invalid payload is refused before anything is built")
	_, err = events.NewEvent("troupe/cli", events.TypeRequested, events.Release{Namespace: "prod", Name: "Pod_Info"}, nil)
	assert.ErrorIs(t, err, events.ErrInvalidName)
}

func TestDerive(t *testing.T) {
	cause := requested(t)
	events.WithRevision(&cause, 7)
	cause.SetExtension(events.ExtTraceParent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")

	out, err := events.Derive(cause, "troupe/renderer", events.TypeFailed,
		events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "boom"})
	require.NoError(t, err)
	assert.Equal(t, cause.Subject(), out.Subject())
	assert.Equal(t, cause.ID(), events.CorrelationID(out))
	assert.Equal(t, cause.ID(), events.CausationID(out))
	assert.Equal(t, 7, events.Revision(out))
	assert.Equal(t, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", out.Extensions()[events.ExtTraceParent])

	again, err := events.Derive(cause, "troupe/renderer", events.TypeFailed,
		events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "boom"})
	require.NoError(t, err)
	assert.Equal(t, out.ID(), again.ID(), "a redelivered handler derives the same id")

	other, err := events.Derive(cause, "troupe/applier", events.TypeFailed,
		events.Failed{Stage: events.StageApply, Reason: "rejected", Message: "boom"})
	require.NoError(t, err)
	assert.NotEqual(t, out.ID(), other.ID(), "another service's event has another id")

	p1, err := events.Derive(cause, "troupe/health", events.TypeProgressing, events.Progressing{Ready: 0, Total: 1}, "1")
	require.NoError(t, err)
	p2, err := events.Derive(cause, "troupe/health", events.TypeProgressing, events.Progressing{Ready: 1, Total: 1}, "2")
	require.NoError(t, err)
	assert.NotEqual(t, p1.ID(), p2.ID(), "a key tells apart events of one type")

	// Reacting to a reaction keeps the correlation of the original request.
	next, err := events.Derive(out, "troupe/history", events.TypeRollbackRequested, events.RollbackRequested{})
	require.NoError(t, err)
	assert.Equal(t, cause.ID(), events.CorrelationID(next))
	assert.Equal(t, out.ID(), events.CausationID(next))

	// Every event of the flow carries when its request was made, to the nanosecond.
	assert.False(t, events.RequestTime(cause).IsZero())
	assert.True(t, events.RequestTime(cause).Equal(cause.Time()))
	assert.True(t, events.RequestTime(next).Equal(cause.Time()), "carried through reactions to reactions")

	// A reaction that starts a flow of its own (an automatic rollback): its own correlation, so
	// the new flow's events do not take the ids of the old flow's.
	rollback, err := events.Derive(out, "troupe/history", events.TypeRollbackRequested, events.RollbackRequested{Automatic: true})
	require.NoError(t, err)
	events.StartFlow(&rollback)
	assert.Equal(t, rollback.ID(), events.CorrelationID(rollback))
	assert.Equal(t, out.ID(), events.CausationID(rollback))
	applied1, err := events.Derive(cause, "troupe/applier", events.TypeApplied, events.Applied{Bundle: "sha256:" + strings.Repeat("0", 64)})
	require.NoError(t, err)
	applied2, err := events.Derive(rollback, "troupe/applier", events.TypeApplied, events.Applied{Bundle: "sha256:" + strings.Repeat("0", 64)})
	require.NoError(t, err)
	assert.NotEqual(t, applied1.ID(), applied2.ID())

	// A cause published without the SDK started its flow when it was made.
	foreign := cause.Clone()
	foreign.SetExtension(events.ExtRequestTime, nil)
	foreign.SetTime(cause.Time().Add(-time.Minute))
	fromForeign, err := events.Derive(foreign, "troupe/renderer", events.TypeFailed,
		events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "boom"})
	require.NoError(t, err)
	assert.True(t, events.RequestTime(fromForeign).Equal(foreign.Time()))
}

func TestStructuredRoundTrip(t *testing.T) {
	e := requested(t)
	events.WithRevision(&e, 3)
	msg, err := events.Names{}.Message(e)
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.prod.podinfo.requested", msg.Subject)
	assert.Equal(t, events.ContentTypeStructured, msg.Header.Get("Content-Type"))
	var wire map[string]any
	require.NoError(t, json.Unmarshal(msg.Data, &wire))
	assert.Equal(t, "1.0", wire["specversion"])
	assert.Equal(t, "application/json", wire["datacontenttype"])
	assert.IsType(t, map[string]any{}, wire["data"], "data is a JSON object any CloudEvents reader can use, not data_base64")
	assert.NotContains(t, wire, "data_base64")
	assert.EqualValues(t, 3, wire["revision"])

	got, err := events.Names{}.Decode(msg.Subject, msg.Header, msg.Data)
	require.NoError(t, err)
	assert.Equal(t, e.ID(), got.ID())
	assert.Equal(t, 3, events.Revision(got))
	assert.Equal(t, e.ID(), events.CorrelationID(got))
	req, err := events.Data[events.Requested](got)
	require.NoError(t, err)
	assert.Equal(t, "charts/podinfo", req.Source.Helm.Path)
}

// TestBinaryMode reads an event written by another CloudEvents client in binary mode: attributes
// in ce-* headers, the data as the body.
func TestBinaryMode(t *testing.T) {
	h := nats.Header{}
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", "abc-1")
	h.Set("ce-source", "example/notifier")
	h.Set("ce-type", events.TypeReady)
	h.Set("ce-subject", "prod/podinfo")
	h.Set("ce-time", "2026-11-22T10:00:00Z")
	h.Set("ce-correlationid", "corr-9")
	h.Set("ce-revision", "4")
	h.Set("content-type", "application/json")
	body := []byte(`{"timeToReady":"3s","objects":2}`)

	e, err := events.Names{}.Decode("troupe.release.prod.podinfo.ready", h, body)
	require.NoError(t, err)
	assert.Equal(t, "abc-1", e.ID())
	assert.Equal(t, "example/notifier", e.Source())
	assert.Equal(t, "corr-9", events.CorrelationID(e))
	assert.Equal(t, 4, events.Revision(e))
	ready, err := events.Data[events.Ready](e)
	require.NoError(t, err)
	assert.Equal(t, 2, ready.Objects)
}

// TestNewerFieldsAcrossVersions: during a rolling update a replica reads events of a newer
// version. A fact (ready) with a field this version does not know is read, the field ignored; a
// request with one is refused, naming it.
func TestNewerFieldsAcrossVersions(t *testing.T) {
	r := events.Release{Namespace: "prod", Name: "web"}
	ready, err := events.NewEvent("troupe/health", events.TypeReady, r, map[string]any{"timeToReady": "3s", "objects": 2, "slowest": "Deployment/web"})
	require.NoError(t, err)
	got, err := events.Data[events.Ready](ready)
	require.NoError(t, err)
	assert.Equal(t, 2, got.Objects)

	req, err := events.NewEvent("troupe/cli", events.TypeRequested, r, map[string]any{"source": map[string]any{"helm": map[string]any{"path": "x"}}})
	require.NoError(t, err)
	require.NoError(t, req.SetData("application/json", []byte(`{"source":{"helm":{"path":"x"}},"atomicity":"all"}`)))
	_, err = events.Data[events.Requested](req)
	assert.ErrorContains(t, err, `unknown field "atomicity"`)
}

func TestDecodeErrors(t *testing.T) {
	good := requested(t)
	body, err := json.Marshal(good)
	require.NoError(t, err)
	tests := []struct {
		name    string
		subject string
		body    string
		want    string
	}{
		{"empty", "troupe.release.prod.podinfo.requested", "", "empty message"},
		{"not json", "troupe.release.prod.podinfo.requested", "hello", "not a structured-mode CloudEvent"},
		{"json but not an event", "troupe.release.prod.podinfo.requested", `{"hello":"world"}`, "specversion"},
		{"type does not match subject", "troupe.release.prod.podinfo.ready", string(body), "does not match subject"},
		{"release does not match subject", "troupe.release.prod.other.requested", string(body), "does not match NATS subject"},
		{"bad subject", "troupe.release.prod", string(body), "invalid subject"},
		{"bad payload", "troupe.release.prod.podinfo.requested",
			`{"specversion":"1.0","id":"x","source":"s","type":"release.requested","subject":"prod/podinfo","datacontenttype":"application/json","data":{"source":{}}}`,
			"exactly one of helm"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := events.Names{}.Decode(tc.subject, nil, []byte(tc.body))
			require.Error(t, err)
			assert.ErrorIs(t, err, events.ErrMalformed)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// FuzzDecode feeds arbitrary bytes and headers to the decoder: it must never panic, and what it
// accepts must survive a round trip through the wire form.
func FuzzDecode(f *testing.F) {
	e, _ := events.NewEvent("troupe/cli", events.TypeReady, podinfo, events.Ready{TimeToReady: 1, Objects: 1})
	b, _ := json.Marshal(e)
	f.Add("troupe.release.prod.podinfo.ready", string(b), "")
	f.Add("troupe.release.prod.podinfo.ready", `{"timeToReady":"1s","objects":1}`, "1.0")
	f.Add("troupe.release.prod.podinfo.requested", `{"specversion":"1.0"}`, "")
	f.Add("troupe.release.a.b.rollback.requested", `{}`, "1.0")
	v, _ := events.NewEvent("troupe/gate-policy", events.TypeRejected, podinfo, events.Rejected{Gate: "policy", Revision: 1,
		Bundle: "sha256:" + strings.Repeat("a", 64), Message: "no"})
	b, _ = json.Marshal(v)
	f.Add("troupe.release.prod.podinfo.rejected.policy", string(b), "")
	f.Add("troupe.release.prod.podinfo.approved.policy", `{"gate":"policy","revision":1,"bundle":"sha256:`+strings.Repeat("a", 64)+`"}`, "1.0")
	f.Add("troupe.release.prod.podinfo.approved.manual", `{"Gate":"manual","gate":"policy","revision":1,"bundle":"sha256:`+strings.Repeat("a", 64)+`"}`, "1.0")
	f.Fuzz(func(t *testing.T, subject, body, ceVersion string) {
		var h nats.Header
		if ceVersion != "" {
			h = nats.Header{}
			h.Set("ce-specversion", ceVersion)
			h.Set("ce-id", "id")
			h.Set("ce-source", "s")
			if _, typ, err := (events.Names{}).ParseSubject(subject); err == nil {
				h.Set("ce-type", typ)
			}
			h.Set("ce-subject", "prod/podinfo")
		}
		got, err := events.Names{}.Decode(subject, h, []byte(body))
		if err != nil {
			return
		}
		msg, err := events.Names{}.Message(got)
		require.NoError(t, err, "a decoded event can be written back")
		assert.Equal(t, subject, msg.Subject, "on the subject it was read from (a verdict: its gate's)")
		again, err := events.Names{}.Decode(msg.Subject, msg.Header, msg.Data)
		require.NoError(t, err)
		assert.Equal(t, got.ID(), again.ID())
		assert.Equal(t, got.Type(), again.Type())
	})
}
