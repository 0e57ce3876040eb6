package events_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// TestRedrive: a request its own handler gave up on is asked again as a new request with the
// same data, from the re-driver, with an id derived from the original's (twice is once); a
// fact, an unreadable event, a request another service gave up on, and a request a newer one
// came after are refused, saying why.
func TestRedrive(t *testing.T) {
	_, _, js := natstest.Start(t)
	names := events.Names{}
	pub := events.NewPublisher(js, names)
	// letter stores e on the stream and returns its dead letter from service.
	letter := func(service, typ string, data any) events.DeadLetter {
		t.Helper()
		e, err := events.NewEvent("troupe/cli", typ, podinfo, data)
		require.NoError(t, err)
		ack, err := pub.Publish(t.Context(), e)
		require.NoError(t, err)
		body, err := events.Encode(e)
		require.NoError(t, err)
		subj, err := names.Subject(podinfo, typ)
		require.NoError(t, err)
		return events.DeadLetter{Service: service, Subject: subj, Sequence: ack.Sequence, Header: nats.Header{}, Data: body}
	}
	req := events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, RequestedBy: "ada"}
	d := letter("renderer", events.TypeRequested, req)
	orig, err := names.Decode(d.Subject, d.Header, d.Data)
	require.NoError(t, err)

	again, err := names.Redrive(t.Context(), js, d, "troupe/ui")
	require.NoError(t, err)
	assert.Equal(t, events.TypeRequested, again.Type())
	assert.Equal(t, "troupe/ui", again.Source())
	assert.NotEqual(t, orig.ID(), again.ID(), "a new request")
	assert.Equal(t, again.ID(), events.CorrelationID(again), "its own flow")
	twice, err := names.Redrive(t.Context(), js, d, "troupe/cli")
	require.NoError(t, err)
	assert.Equal(t, again.ID(), twice.ID(), "re-driving one dead letter twice is one request")
	rel, err := events.ReleaseOf(again)
	require.NoError(t, err)
	assert.Equal(t, podinfo, rel)
	got, err := events.Data[events.Requested](again)
	require.NoError(t, err)
	assert.Equal(t, "ada", got.RequestedBy)
	assert.Equal(t, "deploy/", got.Source.Manifests.Path)

	refused := func(d events.DeadLetter, why string) {
		t.Helper()
		_, err := names.Redrive(t.Context(), js, d, "troupe/ui")
		require.Error(t, err)
		assert.Contains(t, err.Error(), why)
	}
	refused(letter("applier", events.TypeRendered, events.Rendered{Bundle: "sha256:" + sixtyFour}), "release.rendered is a fact")
	refused(letter("notifier", events.TypeRequested, req), "notifier gave up on this release.requested for itself")
	bad := d
	bad.Data = []byte("not a cloudevent {")
	refused(bad, "cannot be read")
	// d's request is older than the ones the letters above stored.
	refused(d, "a newer release.requested for prod/podinfo")
	unknown := letter("renderer", events.TypeRequested, req)
	unknown.Sequence = 0
	refused(unknown, "does not say where its original is")
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
