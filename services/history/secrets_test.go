package history_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// TestManifestsHideSecrets: a revision's manifests and the diff between two revisions, as the
// history serves them (get manifest, troupe diff, the HTTP API), say which keys of a Secret a
// revision has and which changed, never a value.
func TestManifestsHideSecrets(t *testing.T) {
	e := newEnv(t)
	rel := events.Release{Namespace: "prod", Name: "web"}
	secret := func(token string) map[string]any {
		return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "creds", "namespace": "prod"},
			"data":       map[string]any{"token": base64.StdEncoding.EncodeToString([]byte(token)), "user": base64.StdEncoding.EncodeToString([]byte("adm1n"))},
			"stringData": map[string]any{"extra": "str1ng-" + token}}
	}
	for i, token := range []string{"first-t0ken", "second-t0ken", "third-t0ken"} {
		revision := i + 1
		req := e.request(rel, events.Options{})
		obj := secret(token)
		if revision == 3 { // no data at all: a diff from 2 reports the whole map
			delete(obj, "data")
		}
		b, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String(), Objects: []map[string]any{obj}})
		require.NoError(t, err)
		store, err := events.OpenObjects(t.Context(), e.js, events.BucketBundles)
		require.NoError(t, err)
		digest, size, err := store.Put(t.Context(), bytes.NewReader(b))
		require.NoError(t, err)
		e.derive(req, "troupe/renderer", events.TypeRendered, revision, events.Rendered{Bundle: digest, Size: size,
			Objects: []events.ObjectRef{{APIVersion: "v1", Kind: "Secret", Namespace: "prod", Name: "creds"}}})
		e.view(rel, func(v *historyapi.View) bool { return v.Get(revision) != nil && v.Get(revision).Bundle != "" })
	}

	rev, err := e.svc.RevisionOf(t.Context(), rel.String(), 2)
	require.NoError(t, err)
	require.Len(t, rev.Manifests, 1)
	diff, err := e.svc.DiffOf(t.Context(), rel.String(), 1, 2)
	require.NoError(t, err)
	whole, err := e.svc.DiffOf(t.Context(), rel.String(), 2, 3)
	require.NoError(t, err)
	out, err := json.Marshal([]any{rev, diff, whole})
	require.NoError(t, err)
	for _, v := range []string{"first-t0ken", "second-t0ken", "third-t0ken", "adm1n"} {
		assert.NotContains(t, string(out), base64.StdEncoding.EncodeToString([]byte(v)))
		assert.NotContains(t, string(out), v)
	}
	data := rev.Manifests[0]["data"].(map[string]any)
	assert.Equal(t, map[string]any{"token": "(redacted)", "user": "(redacted)"}, data, "the keys, not the values")
	require.Len(t, diff.Objects, 1)
	var paths []string
	for _, f := range diff.Objects[0].Fields {
		paths = append(paths, f.Path)
		assert.Equal(t, "(redacted)", f.From, f.Path)
		assert.Equal(t, "(redacted)", f.To, f.Path)
	}
	assert.ElementsMatch(t, []string{"data.token", "stringData.extra"}, paths, "which keys changed")
}
