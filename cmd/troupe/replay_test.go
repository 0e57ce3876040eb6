package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// TestReplayCopiesObjects: a sandbox has its own object stores, and replaying into it copies the
// chart a request uploaded and the bundle a release.rendered names, so the sandbox's services
// find them; the live stores keep theirs. Into a sandbox nobody provisioned, replay says what to
// start first.
func TestReplayCopiesObjects(t *testing.T) {
	s, _, js := natstest.Start(t)
	ctx := t.Context()
	sbx, err := events.NewNames("sbx")
	require.NoError(t, err)
	_, err = events.Provision(ctx, js, events.ProvisionConfig{Names: sbx})
	require.NoError(t, err)
	put := func(names events.Names, bucket, content string) (*events.Objects, string) {
		o, err := events.OpenObjects(ctx, js, names.Objects(bucket))
		require.NoError(t, err)
		d, _, err := o.Put(ctx, strings.NewReader(content))
		require.NoError(t, err)
		return o, d
	}
	_, chart := put(events.Names{}, events.BucketSources, "a chart archive")
	_, bundle := put(events.Names{}, events.BucketBundles, "a bundle")
	rel := events.Release{Namespace: "prod", Name: "web"}
	pub := events.NewPublisher(js, events.Names{})
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, rel, events.Requested{Source: events.Source{Helm: &events.HelmSource{Object: chart}}})
	require.NoError(t, err)
	_, err = pub.Publish(ctx, req)
	require.NoError(t, err)
	rd, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: bundle, Size: 8})
	require.NoError(t, err)
	events.WithRevision(&rd, 1)
	_, err = pub.Publish(ctx, rd)
	require.NoError(t, err)

	code, _, errOut := troupe(t, s.ClientURL(), "", "replay", "--release", "prod/web", "--to", "nosbx")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no object store nosbx-troupe-sources: start 'troupe dev --subjects-prefix nosbx")

	code, out, errOut := troupe(t, s.ClientURL(), "", "replay", "--release", "prod/web", "--to", "sbx")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "replayed 2 events under sbx.troupe.release.>, 2 charts and bundles copied into its object stores")
	for bucket, d := range map[string]string{events.BucketSources: chart, events.BucketBundles: bundle} {
		for _, names := range []events.Names{sbx, {}} {
			o, err := events.OpenObjects(ctx, js, names.Objects(bucket))
			require.NoError(t, err)
			has, err := o.Has(ctx, d)
			require.NoError(t, err)
			assert.True(t, has, "%s has %s", names.Objects(bucket), d)
		}
	}
}
