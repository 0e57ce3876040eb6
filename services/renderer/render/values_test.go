package render_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// TestReuseValues: a request reusing a revision's values builds on them as Helm does, and the
// revision's record says what it set; one naming values that are gone, or another release's,
// fails saying so.
func TestReuseValues(t *testing.T) {
	const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000001"
	records := map[string][]byte{}
	r := newRenderer(t, render.Options{Records: func(_ context.Context, d string) (io.ReadCloser, error) {
		b, ok := records[d]
		if !ok {
			return nil, events.ErrNotFound
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}})
	chart := writeChart(t, map[string]string{"values.yaml": "a: default\nb: default\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: v\ndata:\n  a: {{ .Values.a | quote }}\n  b: {{ .Values.b | quote }}\n  c: {{ .Values.c | default \"none\" | quote }}\n"})
	rel := events.Release{Namespace: "prod", Name: "app"}
	renderWith := func(reuse *events.ReuseValues, set ...string) (*render.Output, error) {
		return r.Render(t.Context(), render.Input{Release: rel, Revision: 2, Request: events.Requested{
			Source: events.Source{Helm: &events.HelmSource{Path: chart}}, Set: set, ReuseValues: reuse}})
	}
	first, err := renderWith(nil, "a=one")
	require.NoError(t, err)
	var rec events.ValuesRecord
	require.NoError(t, json.Unmarshal(first.Values, &rec))
	assert.Equal(t, events.ValuesRecord{Release: "prod/app", User: events.Values{"a": "one"},
		Computed: events.Values{"a": "one", "b": "default"}}, rec)

	records[digest] = first.Values
	out, err := renderWith(&events.ReuseValues{Mode: events.ReuseValuesResetThenReuse, Revision: 1, Values: digest}, "c=three")
	require.NoError(t, err)
	assert.Contains(t, string(out.Bundle), `"a":"one","b":"default","c":"three"`)
	require.NoError(t, json.Unmarshal(out.Values, &rec))
	assert.Equal(t, events.Values{"a": "one", "c": "three"}, rec.User, "what it set: its own over the revision's")

	var e *events.Error
	_, err = renderWith(&events.ReuseValues{Mode: events.ReuseValuesReuse, Revision: 1, Values: "sha256:" + string(bytes.Repeat([]byte("f"), 64))})
	require.ErrorAs(t, err, &e)
	assert.Equal(t, render.ReasonSourceNotFound, e.Reason)
	assert.Contains(t, e.Message, "reuseValues: the values of revision 1 (sha256:fff")
	assert.Contains(t, e.Message, "are no longer in the bundles object store")

	other, err := json.Marshal(events.ValuesRecord{Release: "prod/other", User: events.Values{"a": "theirs"}})
	require.NoError(t, err)
	records[digest] = other
	_, err = renderWith(&events.ReuseValues{Mode: events.ReuseValuesReuse, Revision: 1, Values: digest})
	require.ErrorAs(t, err, &e)
	assert.Contains(t, e.Message, "are prod/other's, not prod/app's")
}
