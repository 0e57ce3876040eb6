package events_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// TestSupersedingIsOfTheSameKind: requests real 1, dry 2, dry 3, real 4, dry 5, real 6, dry 7
// (another release's in between): a real revision is superseded by a newer real one only, a dry
// run by a newer dry run only, whichever kind the newest request is.
func TestSupersedingIsOfTheSameKind(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	pub := events.NewPublisher(js, events.Names{})
	rel, other := events.Release{Namespace: "prod", Name: "a"}, events.Release{Namespace: "prod", Name: "b"}
	publish := func(r events.Release, dry bool) {
		e, err := events.NewEvent("troupe/test", events.TypeRequested, r, events.Requested{
			Source: events.Source{Helm: &events.HelmSource{Path: "x"}}, Options: events.Options{DryRun: dry}})
		require.NoError(t, err)
		_, err = pub.Publish(ctx, e)
		require.NoError(t, err)
	}
	revs, err := events.NewRevisions(ctx, js, events.Names{})
	require.NoError(t, err)
	superseding := func(revision int, dry bool) int {
		seq, n, err := revs.Superseding(ctx, rel, revision, dry)
		require.NoError(t, err)
		assert.Equal(t, seq == 0, n == 0)
		return n
	}
	for _, dry := range []bool{false, true, true, false, true} {
		publish(rel, dry)
		publish(other, false)
	}
	assert.Equal(t, 4, superseding(1, false), "the first real one after it, the newest being a dry run")
	assert.Equal(t, 0, superseding(4, false), "only dry runs after it")
	assert.Equal(t, 5, superseding(2, true), "the newest, a dry run")
	assert.Equal(t, 0, superseding(5, true))
	publish(rel, false)
	assert.Equal(t, 6, superseding(4, false))
	assert.Equal(t, 6, superseding(1, false), "the newest, real")
	assert.Equal(t, 5, superseding(3, true), "the first dry run after it, the newest being real")
	assert.Equal(t, 0, superseding(6, false))
	publish(rel, true)
	assert.Equal(t, 4, superseding(1, false), "the first real one after it, the newest being a dry run again")
	assert.Equal(t, 6, superseding(5, false))
	assert.Equal(t, 7, superseding(5, true))
}
