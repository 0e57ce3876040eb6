package events_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

func TestObjectsByDigest(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	objs, err := events.OpenObjects(ctx, js, events.BucketBundles)
	require.NoError(t, err)

	content := make([]byte, 5<<20) // bundles can be many MB
	_, err = rand.Read(content)
	require.NoError(t, err)

	d, size, err := objs.Put(ctx, bytes.NewReader(content))
	require.NoError(t, err)
	assert.Equal(t, events.Digest(content), d)
	assert.EqualValues(t, len(content), size)

	d2, _, err := objs.Put(ctx, bytes.NewReader(content))
	require.NoError(t, err)
	assert.Equal(t, d, d2, "the same content, the same digest")
	store, err := js.ObjectStore(ctx, events.BucketBundles)
	require.NoError(t, err)
	list, err := store.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 1, "stored once, no temporary uploads left")

	rc, err := objs.Get(ctx, d)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.True(t, bytes.Equal(content, got))

	ok, err := objs.Has(ctx, d)
	require.NoError(t, err)
	assert.True(t, ok)

	missing := events.Digest([]byte("nothing"))
	_, err = objs.Get(ctx, missing)
	assert.ErrorIs(t, err, events.ErrNotFound)
	ok, err = objs.Has(ctx, missing)
	require.NoError(t, err)
	assert.False(t, ok)
	_, err = objs.Get(ctx, "sha256:zz")
	assert.ErrorContains(t, err, "not a digest")

	require.NoError(t, objs.Delete(ctx, d))
	_, err = objs.Get(ctx, d)
	assert.ErrorIs(t, err, events.ErrNotFound)

	for _, small := range [][]byte{[]byte(`{"kind":"Bundle"}`), {}} { // one chunk, none
		d, _, err := objs.Put(ctx, bytes.NewReader(small))
		require.NoError(t, err)
		rc, err := objs.Get(ctx, d)
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		assert.Equal(t, string(small), string(got))
	}
}

// TestPutBytes: content in memory is stored as Put stores it, and content stored already costs
// no write.
func TestPutBytes(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	objs, err := events.OpenObjects(ctx, js, events.BucketBundles)
	require.NoError(t, err)
	stream, err := js.Stream(ctx, "OBJ_"+events.BucketBundles)
	require.NoError(t, err)
	lastSeq := func() uint64 {
		info, err := stream.Info(ctx)
		require.NoError(t, err)
		return info.State.LastSeq
	}

	content := []byte(`{"kind":"Bundle","objects":[]}`)
	d, size, err := objs.PutBytes(ctx, content)
	require.NoError(t, err)
	assert.Equal(t, events.Digest(content), d)
	assert.EqualValues(t, len(content), size)
	written := lastSeq()
	require.NotZero(t, written)

	for _, put := range []func() (string, error){
		func() (string, error) { d, _, err := objs.PutBytes(ctx, content); return d, err },
		func() (string, error) { d, _, err := objs.Put(ctx, bytes.NewReader(content)); return d, err },
	} {
		d2, err := put()
		require.NoError(t, err)
		assert.Equal(t, d, d2)
	}
	before := lastSeq()
	_, _, err = objs.PutBytes(ctx, content)
	require.NoError(t, err)
	assert.Equal(t, before, lastSeq(), "stored already: nothing written")

	rc, err := objs.Get(ctx, d)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	assert.Equal(t, content, got)
	store, err := js.ObjectStore(ctx, events.BucketBundles)
	require.NoError(t, err)
	list, err := store.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 1, "stored once, no temporary uploads left")

}

func TestObjectsDetectTampering(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	objs, err := events.OpenObjects(ctx, js, events.BucketSources)
	require.NoError(t, err)
	store, err := js.ObjectStore(ctx, events.BucketSources)
	require.NoError(t, err)
	// Content stored under a digest that is not its own, as a buggy or hostile writer could.
	wrong := events.Digest([]byte("the real chart"))
	_, err = store.PutBytes(ctx, wrong, []byte("something else"))
	require.NoError(t, err)
	rc, err := objs.Get(ctx, wrong)
	require.NoError(t, err)
	_, err = io.ReadAll(rc)
	assert.ErrorIs(t, err, events.ErrDigestMismatch)
}

func TestShortDigests(t *testing.T) {
	d := events.Digest([]byte("chart"))
	assert.Equal(t, "helm upload "+d[:len("sha256:")+12]+", and again "+d[:len("sha256:")+12], events.ShortDigests("helm upload "+d+", and again "+d))
	assert.Equal(t, "sha256:abc", events.ShortDigests("sha256:abc"), "not a digest")
}
