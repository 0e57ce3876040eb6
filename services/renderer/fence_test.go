package renderer_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/renderer"
)

// A request that reaches the renderer past its deadline, or after its flow ended, is not
// rendered: the deadline watchdog ends it (or ended it), and a late bundle would deploy a
// revision the user was told had failed.
func TestLateRequestsAreNotRendered(t *testing.T) {
	_, _, js := natstest.Start(t)
	chart := filepath.Join(fixtures(t), "podinfo/charts/podinfo")
	runRenderer(t, js)() // the consumer exists; the renderer is down while the requests land
	src := events.Source{Helm: &events.HelmSource{Path: chart}}

	late := events.Release{Namespace: "prod", Name: "late"}
	lateReq := request(t, js, late, events.Requested{Source: src, Options: events.Options{Timeout: events.Duration(time.Second)}})

	ended := events.Release{Namespace: "prod", Name: "ended"}
	endedReq := request(t, js, ended, events.Requested{Source: src})
	failed, err := events.Derive(endedReq, "troupe/deadlines", events.TypeFailed, events.Failed{Stage: events.StageRender, Reason: "deadline_exceeded", Message: "m"})
	require.NoError(t, err)
	_, err = events.NewPublisher(js, events.Names{}).Publish(t.Context(), failed)
	require.NoError(t, err)

	time.Sleep(time.Until(events.FlowDeadline(lateReq).Add(100 * time.Millisecond)))
	defer runRenderer(t, js)()
	// Every request handled and acked: then nothing more comes from the renderer.
	require.Eventually(t, func() bool {
		c, err := js.Consumer(t.Context(), events.StreamName, renderer.Name)
		require.NoError(t, err)
		info, err := c.Info(t.Context())
		require.NoError(t, err)
		return info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= info.Delivered.Stream
	}, 30*time.Second, 50*time.Millisecond)

	for _, rel := range []events.Release{late, ended} {
		for _, e := range eventsOf(t, js, rel) {
			assert.NotEqual(t, "troupe/renderer", e.Source(), "%s: the renderer published %s", rel, e.Type())
		}
	}
}
