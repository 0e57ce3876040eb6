package events_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func TestRevisionsFollowStreamOrder(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	pub := events.NewPublisher(js, events.Names{})
	a, b := events.Release{Namespace: "prod", Name: "a"}, events.Release{Namespace: "prod", Name: "b"}
	type req struct {
		r   events.Release
		seq uint64
	}
	var reqs []req
	for i := range 10 { // interleaved: a, b, a, a, b, …
		r := a
		if i%3 == 1 {
			r = b
		}
		e, err := events.NewEvent("troupe/test", events.TypeRequested, r, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "x"}}})
		require.NoError(t, err)
		ack, err := pub.Publish(ctx, e)
		require.NoError(t, err)
		reqs = append(reqs, req{r, ack.Sequence})
		// Other events of the release in between do not count.
		f, err := events.Derive(e, "troupe/test", events.TypeFailed, events.Failed{Stage: "render", Reason: "x", Message: "m"})
		require.NoError(t, err)
		_, err = pub.Publish(ctx, f)
		require.NoError(t, err)
	}
	want := map[uint64]int{}
	count := map[events.Release]int{}
	for _, q := range reqs {
		count[q.r]++
		want[q.seq] = count[q.r]
	}

	// Four replicas number concurrently, asking in reverse order: all agree with stream order.
	var wg sync.WaitGroup
	results := make([]map[uint64]int, 4)
	for i := range results {
		results[i] = map[uint64]int{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rv, err := events.NewRevisions(ctx, js, events.Names{})
			if !assert.NoError(t, err) {
				return
			}
			for j := len(reqs) - 1; j >= 0; j-- {
				n, err := rv.Of(ctx, reqs[j].r, reqs[j].seq)
				if assert.NoError(t, err) {
					results[i][reqs[j].seq] = n
				}
			}
		}()
	}
	wg.Wait()
	for i := range results {
		assert.Equal(t, want, results[i], "replica %d", i)
	}

	rv, err := events.NewRevisions(ctx, js, events.Names{})
	require.NoError(t, err)
	seq, n, err := rv.Latest(ctx, a)
	require.NoError(t, err)
	assert.Equal(t, count[a], n)
	assert.Equal(t, reqs[len(reqs)-1].seq, seq)
	_, n, err = rv.Latest(ctx, events.Release{Namespace: "prod", Name: "none"})
	require.NoError(t, err)
	assert.Zero(t, n)

	// A sequence that is not a request of the release is an error, not a number.
	_, err = rv.Of(ctx, b, reqs[0].seq)
	assert.ErrorIs(t, err, events.ErrNotRequested)
	_, err = rv.Of(ctx, a, reqs[len(reqs)-1].seq+1)
	assert.ErrorIs(t, err, events.ErrNotRequested)
}

// TestRevisionsUnderConcurrencyOnR3: many callers number the requests of one release at once, as
// `troupe release` (Latest) and every service (Of) do, against a 3-node cluster with R3 streams
// and buckets — where a lost compare-and-set on the counter is reported as error 10164, not
// 10071. Nobody sees an error for a race they lost, and everyone agrees with the stream's order.
func TestRevisionsUnderConcurrencyOnR3(t *testing.T) {
	_, urls := natstest.InProcessCluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	ctx := t.Context()
	_, err := events.Provision(ctx, js, events.ProvisionConfig{Replicas: 3})
	require.NoError(t, err)
	pub := events.NewPublisher(js, events.Names{})
	r := events.Release{Namespace: "chaos", Name: "r1"}
	const rounds, callers = 6, 8
	numberers := make([]*events.Revisions, callers)
	for i := range numberers {
		numberers[i], err = events.NewRevisions(ctx, js, events.Names{})
		require.NoError(t, err)
	}
	for round := 1; round <= rounds; round++ {
		// One more request, then every caller numbers it at once: they all read the same counter
		// and race to move it; all but one lose the compare-and-set.
		e, err := events.NewEvent("troupe/test", events.TypeRequested, r, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "x"}}})
		require.NoError(t, err)
		ack, err := pub.Publish(ctx, e)
		require.NoError(t, err)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, rv := range numberers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if i%2 == 0 {
					seq, n, err := rv.Latest(ctx, r)
					if assert.NoError(t, err, "Latest, round %d", round) {
						assert.Equal(t, ack.Sequence, seq)
						assert.Equal(t, round, n, "Latest, round %d", round)
					}
					return
				}
				n, err := rv.Of(ctx, r, ack.Sequence)
				if assert.NoError(t, err, "Of, round %d", round) {
					assert.Equal(t, round, n, "Of, round %d", round)
				}
			}()
		}
		close(start)
		wg.Wait()
	}
}

// TestPeekNumbersWithoutWriting: Peek gives each request the revision Of will, before and after
// a service numbered it, and writes nothing (the CLI's identity may not).
func TestPeekNumbersWithoutWriting(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	pub := events.NewPublisher(js, events.Names{})
	r := events.Release{Namespace: "prod", Name: "a"}
	var seqs []uint64
	for range 3 {
		e, err := events.NewEvent("troupe/test", events.TypeRequested, r, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "x"}}})
		require.NoError(t, err)
		ack, err := pub.Publish(ctx, e)
		require.NoError(t, err)
		seqs = append(seqs, ack.Sequence)
	}
	rv, err := events.NewRevisions(ctx, js, events.Names{})
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, events.KVReleases)
	require.NoError(t, err)

	n, err := rv.Peek(ctx, r, seqs[1])
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	keys, err := kv.ListKeys(ctx)
	require.NoError(t, err)
	var written []string
	for k := range keys.Keys() {
		written = append(written, k)
	}
	assert.Empty(t, written, "Peek wrote the counter or a revision")

	n, err = rv.Of(ctx, r, seqs[0])
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	for i, seq := range seqs {
		n, err := rv.Peek(ctx, r, seq)
		require.NoError(t, err)
		assert.Equal(t, i+1, n, "after the counter moved to revision 1")
	}
	_, err = rv.Peek(ctx, r, seqs[2]+1)
	assert.ErrorIs(t, err, events.ErrNotRequested)
}
