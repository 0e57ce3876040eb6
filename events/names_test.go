package events_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func TestNames(t *testing.T) {
	prod := events.Release{Namespace: "prod", Name: "podinfo"}
	tests := []struct {
		prefix                           string
		root, stream, dlqStream, kv, sub string
	}{
		{"", "troupe", "TROUPE", "TROUPE_DLQ", "troupe-leases", "troupe.release.prod.podinfo.rollback.requested"},
		{"replay", "replay.troupe", "REPLAY_TROUPE", "REPLAY_TROUPE_DLQ", "replay-troupe-leases", "replay.troupe.release.prod.podinfo.rollback.requested"},
		{"ci.run-7", "ci.run-7.troupe", "CI_RUN_7_TROUPE", "CI_RUN_7_TROUPE_DLQ", "ci-run-7-troupe-leases", "ci.run-7.troupe.release.prod.podinfo.rollback.requested"},
	}
	for _, tc := range tests {
		t.Run("prefix "+tc.prefix, func(t *testing.T) {
			n, err := events.NewNames(tc.prefix)
			require.NoError(t, err)
			assert.Equal(t, tc.prefix, n.Prefix())
			assert.Equal(t, tc.root, n.Root())
			assert.Equal(t, tc.root+".release.>", n.ReleaseSubjects())
			assert.Equal(t, tc.root+".dlq.>", n.DeadLetterSubjects())
			assert.Equal(t, tc.stream, n.Stream())
			assert.Equal(t, tc.dlqStream, n.DeadLetterStream())
			assert.Equal(t, tc.kv, n.KV(events.KVLeases))
			assert.Equal(t, strings.TrimSuffix(tc.kv, "leases")+"bundles", n.Objects(events.BucketBundles), "a sandbox's own object store")
			sub, err := n.Subject(prod, events.TypeRollbackRequested)
			require.NoError(t, err)
			assert.Equal(t, tc.sub, sub)
			r, typ, err := n.ParseSubject(sub)
			require.NoError(t, err)
			assert.Equal(t, prod, r)
			assert.Equal(t, events.TypeRollbackRequested, typ)
			assert.Equal(t, tc.root+".dlq.applier.release.prod.podinfo.rollback.requested", n.DeadLetterSubject("applier", sub))
		})
	}

	live, sandbox := events.Names{}, must(events.NewNames("replay"))
	sub, err := sandbox.Subject(prod, events.TypeReady)
	require.NoError(t, err)
	_, _, err = live.ParseSubject(sub)
	assert.ErrorIs(t, err, events.ErrInvalidSubject, "a sandbox's subject is not the live system's")
	sub, err = live.Subject(prod, events.TypeReady)
	require.NoError(t, err)
	_, _, err = sandbox.ParseSubject(sub)
	assert.ErrorIs(t, err, events.ErrInvalidSubject, "the live system's subject is not a sandbox's")

	for _, bad := range []string{"troupe", "troupe.x", "Upper", "a..b", "a.*", "a.>", "a b", "."} {
		_, err := events.NewNames(bad)
		assert.Error(t, err, bad)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestTwoSystemsInOneProcess runs one service in the live system and in a sandbox at once, in
// one process on one connection: each sees its own events only, numbers its own revisions, and
// dead-letters and fails into its own streams.
func TestTwoSystemsInOneProcess(t *testing.T) {
	_, _, js := natstest.Start(t) // the live system, provisioned
	sandbox := must(events.NewNames("sandbox"))
	_, err := events.Provision(t.Context(), js, events.ProvisionConfig{Names: sandbox})
	require.NoError(t, err)

	type seen struct {
		mu  sync.Mutex
		ids []string
	}
	handler := func(s *seen, fail bool) events.Handler {
		return func(ctx context.Context, e event.Event) error {
			s.mu.Lock()
			s.ids = append(s.ids, e.ID())
			s.mu.Unlock()
			if fail {
				return events.Reject("bad_chart", errors.New("sandbox says no"))
			}
			return nil
		}
	}
	var liveSeen, sandboxSeen seen
	cfg := events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested}, FailStage: events.StageRender}
	run(t, js, cfg, handler(&liveSeen, false))
	cfg.Names = sandbox
	run(t, js, cfg, handler(&sandboxSeen, true))

	r := rel(1)
	liveReq := publishRequest(t, events.NewPublisher(js, events.Names{}), r)
	sandboxReq := publishRequest(t, events.NewPublisher(js, sandbox), r)

	require.Eventually(t, func() bool {
		sandboxSeen.mu.Lock()
		defer sandboxSeen.mu.Unlock()
		liveSeen.mu.Lock()
		defer liveSeen.mu.Unlock()
		return len(liveSeen.ids) == 1 && len(sandboxSeen.ids) == 1
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, []string{liveReq.ID()}, liveSeen.ids)
	assert.Equal(t, []string{sandboxReq.ID()}, sandboxSeen.ids)

	// The sandbox's failure went to the sandbox's streams only.
	require.Eventually(t, func() bool {
		return len(readAll(t, js, sandbox.DeadLetterStream(), sandbox.DeadLetterSubjects())) == 1
	}, 10*time.Second, 10*time.Millisecond)
	f, err := sandbox.TypeFilter(events.TypeFailed)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(readAll(t, js, sandbox.Stream(), f)) == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Empty(t, deadLetters(t, js), "nothing dead-lettered live")
	assert.Empty(t, releaseEvents(t, js, events.TypeFailed), "nothing failed live")

	// Each system numbers its own revisions.
	for _, n := range []events.Names{{}, sandbox} {
		revs, err := events.NewRevisions(t.Context(), js, n)
		require.NoError(t, err)
		_, latest, err := revs.Latest(t.Context(), r)
		require.NoError(t, err)
		assert.Equal(t, 1, latest, "system %q", n.Prefix())
	}
}
