package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func TestLeases(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	a, err := events.NewLeases(ctx, js, events.Names{}, "a")
	require.NoError(t, err)
	b, err := events.NewLeases(ctx, js, events.Names{}, "b")
	require.NoError(t, err)

	t.Run("one holder at a time, until released", func(t *testing.T) {
		la, err := a.Acquire(ctx, "apply.prod.web", time.Minute, "revision 3")
		require.NoError(t, err)
		_, err = b.Acquire(ctx, "apply.prod.web", time.Minute, "revision 4")
		require.ErrorIs(t, err, events.ErrLeaseHeld)
		assert.Contains(t, err.Error(), "a (revision 3)", "names the holder")
		info, err := b.Holder(ctx, "apply.prod.web")
		require.NoError(t, err)
		assert.Equal(t, "a", info.Holder)
		require.NoError(t, la.Release(ctx))
		lb, err := b.Acquire(ctx, "apply.prod.web", time.Minute, "")
		require.NoError(t, err, "released: the next holder gets it")
		require.NoError(t, la.Release(ctx), "releasing again does nothing")
		_, err = a.Acquire(ctx, "apply.prod.web", time.Minute, "")
		require.ErrorIs(t, err, events.ErrLeaseHeld, "a stale release did not free b's lease")
		require.NoError(t, lb.Release(ctx))
	})

	t.Run("expires when not renewed; renewing keeps it", func(t *testing.T) {
		crashed, err := a.Acquire(ctx, "apply.prod.crash", time.Second, "")
		require.NoError(t, err)
		kept, err := a.Acquire(ctx, "apply.prod.kept", time.Second, "")
		require.NoError(t, err)
		lost := kept.Keep(ctx)
		require.Eventually(t, func() bool {
			_, err := b.Acquire(ctx, "apply.prod.crash", time.Minute, "")
			return err == nil
		}, 10*time.Second, 100*time.Millisecond, "an unrenewed lease expires")
		_, err = b.Acquire(ctx, "apply.prod.kept", time.Minute, "")
		require.ErrorIs(t, err, events.ErrLeaseHeld, "a renewed lease outlives its TTL")
		select {
		case <-lost:
			t.Fatal("a kept lease is not lost")
		default:
		}
		require.ErrorIs(t, crashed.Renew(ctx), events.ErrLeaseLost, "the crashed holder learns it lost the lease")
		require.NoError(t, kept.Release(ctx))
	})

	t.Run("Keep reports a lost lease", func(t *testing.T) {
		le, err := a.Acquire(ctx, "apply.prod.taken", time.Second, "")
		require.NoError(t, err)
		kv, err := js.KeyValue(ctx, events.KVLeases)
		require.NoError(t, err)
		require.NoError(t, kv.Delete(ctx, "apply.prod.taken")) // as if it had expired
		select {
		case <-le.Keep(ctx):
		case <-time.After(5 * time.Second):
			t.Fatal("Keep did not report the lost lease")
		}
		assert.True(t, errors.Is(le.Renew(ctx), events.ErrLeaseLost))
	})
}
