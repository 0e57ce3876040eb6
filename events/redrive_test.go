package events_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

// TestRedrive: a dead-lettered request is asked again as a new request with the same data (a
// new id and flow, the re-driver's source); a fact and an unreadable event are refused, saying
// why.
func TestRedrive(t *testing.T) {
	names := events.Names{}
	letter := func(typ string, data any) events.DeadLetter {
		t.Helper()
		e, err := events.NewEvent("troupe/cli", typ, podinfo, data)
		require.NoError(t, err)
		body, err := events.Encode(e)
		require.NoError(t, err)
		subj, err := names.Subject(podinfo, typ)
		require.NoError(t, err)
		return events.DeadLetter{Service: "renderer", Subject: subj, Header: nats.Header{}, Data: body}
	}
	req := events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}, RequestedBy: "ada"}
	d := letter(events.TypeRequested, req)
	orig, err := names.Decode(d.Subject, d.Header, d.Data)
	require.NoError(t, err)

	again, err := names.Redrive(d, "troupe/ui")
	require.NoError(t, err)
	assert.Equal(t, events.TypeRequested, again.Type())
	assert.Equal(t, "troupe/ui", again.Source())
	assert.NotEqual(t, orig.ID(), again.ID(), "a new request")
	assert.Equal(t, again.ID(), events.CorrelationID(again), "its own flow")
	rel, err := events.ReleaseOf(again)
	require.NoError(t, err)
	assert.Equal(t, podinfo, rel)
	got, err := events.Data[events.Requested](again)
	require.NoError(t, err)
	assert.Equal(t, "ada", got.RequestedBy)
	assert.Equal(t, "deploy/", got.Source.Manifests.Path)

	_, err = names.Redrive(letter(events.TypeRendered, events.Rendered{Bundle: "sha256:" + sixtyFour}), "troupe/ui")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "release.rendered is a fact")

	bad := d
	bad.Data = []byte("not a cloudevent {")
	_, err = names.Redrive(bad, "troupe/ui")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot be read")
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
