package history_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
)

// TestSandboxPrunesItsOwnBundles: a sandbox's history deletes the bundles of the revisions it no
// longer keeps from the sandbox's own store; the live store, holding the same content for the
// live history, keeps it.
func TestSandboxPrunesItsOwnBundles(t *testing.T) {
	_, nc, js := natstest.Start(t)
	ctx := t.Context()
	sbx, err := events.NewNames("sbx")
	require.NoError(t, err)
	_, err = events.Provision(ctx, js, events.ProvisionConfig{Names: sbx})
	require.NoError(t, err)
	svc, err := history.New(ctx, js, history.Options{Names: sbx, Keep: 1, Subscriber: events.SubscriberConfig{AckWait: 3 * time.Second}})
	require.NoError(t, err)
	natstest.Run(t, svc)
	e := &env{t: t, nc: nc, js: js, svc: svc, pub: events.NewPublisher(js, sbx)}

	live, err := events.OpenObjects(ctx, js, events.BucketBundles)
	require.NoError(t, err)
	own, err := events.OpenObjects(ctx, js, sbx.Objects(events.BucketBundles))
	require.NoError(t, err)
	rel := events.Release{Namespace: "prod", Name: "web"}
	var first string
	for n, content := range []string{"bundle one", "bundle two"} {
		d, _, err := live.Put(ctx, bytes.NewReader([]byte(content)))
		require.NoError(t, err)
		_, _, err = own.Put(ctx, bytes.NewReader([]byte(content)))
		require.NoError(t, err)
		if n == 0 {
			first = d
		}
		req := e.request(rel, events.Options{})
		rd := e.derive(req, "troupe/renderer", events.TypeRendered, n+1, events.Rendered{Bundle: d, Size: int64(len(content))})
		e.goesReady(rd, n+1)
	}
	e.view(rel, func(v *historyapi.View) bool { return v.Current == 2 && len(v.Revisions) == 1 })
	require.Eventually(t, func() bool {
		has, err := own.Has(ctx, first)
		return err == nil && !has
	}, 10*time.Second, 20*time.Millisecond, "the sandbox prunes revision 1's bundle from its own store")
	has, err := live.Has(ctx, first)
	require.NoError(t, err)
	assert.True(t, has, "the live store keeps it")
}
