package applier

import (
	"errors"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// TestUninstallRequestedSince: a revision whose request came before an uninstall request is
// superseded by it even before the applier handled the uninstall (after a crash the revision's
// redelivery may take the lease first); one requested after it goes on, as does a dry run; an
// unreadable message on the uninstall subject uninstalls nothing.
func TestUninstallRequestedSince(t *testing.T) {
	_, nc, js := natstest.Start(t)
	names := events.Names{}
	stream, err := js.Stream(t.Context(), names.Stream())
	require.NoError(t, err)
	s := &Service{stream: stream, opts: Options{Names: names}}
	pub := events.NewPublisher(js, names)
	rel := events.Release{Namespace: "demo", Name: "web"}
	publish := func(typ string, data any) event.Event {
		t.Helper()
		e, err := events.NewEvent("troupe/cli", typ, rel, data)
		require.NoError(t, err)
		_, err = pub.Publish(t.Context(), e)
		require.NoError(t, err)
		return e
	}
	rendered := func(req event.Event, dryRun bool) (event.Event, *events.Rendered) {
		t.Helper()
		r := &events.Rendered{Bundle: "sha256:" + sixtyFour, Options: events.Options{DryRun: dryRun}}
		e, err := events.Derive(req, "troupe/renderer", events.TypeRendered, r)
		require.NoError(t, err)
		return e, r
	}
	source := events.Requested{Source: events.Source{Manifests: &events.ManifestsSource{Path: "deploy/"}}}

	req1 := publish(events.TypeRequested, source)
	e1, r1 := rendered(req1, false)
	require.NoError(t, s.uninstalledSince(t.Context(), rel, nil, e1, r1), "no uninstall yet")

	un := publish(events.TypeUninstallRequested, events.UninstallRequested{})
	var sup errSuperseded
	require.True(t, errors.As(s.uninstalledSince(t.Context(), rel, nil, e1, r1), &sup), "requested before the uninstall, which is not handled yet")
	assert.Equal(t, un.ID(), sup.uninstall)
	d1, dr1 := rendered(req1, true)
	assert.NoError(t, s.uninstalledSince(t.Context(), rel, nil, d1, dr1), "a dry run goes on")

	req2 := publish(events.TypeRequested, source)
	e2, r2 := rendered(req2, false)
	assert.NoError(t, s.uninstalledSince(t.Context(), rel, nil, e2, r2), "requested after the uninstall: installs it again")

	subj, err := names.Subject(rel, events.TypeUninstallRequested)
	require.NoError(t, err)
	require.NoError(t, nc.Publish(subj, []byte("not a cloudevent {")))
	require.NoError(t, nc.Flush())
	assert.NoError(t, s.uninstalledSince(t.Context(), rel, nil, e2, r2), "an unreadable uninstall uninstalls nothing")
}

const sixtyFour = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
