package apply_test

import (
	"encoding/base64"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/applier/apply"
)

// TestDiffShowsNoSecrets: a dry run of a release that names an existing Secret it does not own
// shows no content of it (the object exists and whose it is, not its data); a Secret the
// release owns shows which keys changed, never a value.
func TestDiffShowsNoSecrets(t *testing.T) {
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	a := newApplier(t, apply.Options{})
	secret := func(name string, data map[string]string) map[string]any {
		d := map[string]any{}
		for k, v := range data {
			d[k] = base64.StdEncoding.EncodeToString([]byte(v))
		}
		return map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": name, "namespace": ns}, "data": d}
	}
	_, err := kube.Client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "theirs"},
		Data: map[string][]byte{"password": []byte("hunter2-not-yours")}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = a.Apply(t.Context(), apply.Request{Release: rel, Revision: 1, Objects: []map[string]any{
		secret("ours", map[string]string{"token": "old-t0ken", "same": "s4me"})}})
	require.NoError(t, err)

	diffs, err := a.Diff(t.Context(), apply.Request{Release: rel, Revision: 2, Options: events.Options{DryRun: true}, Objects: []map[string]any{
		secret("ours", map[string]string{"token": "new-t0ken", "same": "s4me", "added": "add3d"}),
		secret("theirs", map[string]string{"password": "mine-now"})}})
	require.NoError(t, err)
	got := map[string]events.ObjectDiff{}
	for _, d := range diffs {
		got[d.Name] = d
	}
	for _, leak := range []string{"hunter2-not-yours", "mine-now", "old-t0ken", "new-t0ken", "s4me", "add3d"} {
		b64 := base64.StdEncoding.EncodeToString([]byte(leak))
		for name, d := range got {
			assert.NotContains(t, d.Diff, leak, name)
			assert.NotContains(t, d.Diff, b64, name)
		}
	}
	assert.Equal(t, events.ActionUpdate, got["ours"].Action)
	assert.Contains(t, got["ours"].Diff, "token: (changed)")
	assert.Contains(t, got["ours"].Diff, "added: (added)")
	assert.Contains(t, got["ours"].Diff, "same: (unchanged)")
	assert.Contains(t, got["theirs"].Diff, "belongs to no release: its content is not shown")
}
