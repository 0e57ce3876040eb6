package e2e

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events/access"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestAdoptFromHelm: a release installed and upgraded by the real Helm CLI is adopted with no
// object written (resourceVersions equal), its Helm revisions and values are in troupe's
// history, and the next `troupe release` changes only what changed — a pod annotation Helm set
// and the new values drop is removed, which needs Helm's field ownership handed over.
func TestAdoptFromHelm(t *testing.T) {
	ns := env.kube.Namespace(t)
	helmRun := helmCLI(t, ns)
	helmRun("install", "web", chart(), "--set", "message=from helm", "--wait", "--timeout", "2m")
	helmRun("upgrade", "web", chart(), "--reuse-values", "--set", "podAnnotations.team=blue", "--wait", "--timeout", "2m")

	kube := env.kube.Client
	versions := func() map[string]string {
		d, err := kube.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
		require.NoError(t, err)
		s, err := kube.CoreV1().Services(ns).Get(t.Context(), "web", metav1.GetOptions{})
		require.NoError(t, err)
		return map[string]string{"Deployment": d.ResourceVersion, "Service": s.ResourceVersion}
	}
	before := versions()

	r := troupe(t, "adopt", "web", "-n", ns, "--wait", "--timeout", "2m")
	require.Equal(t, 0, r.code, r)
	assert.Equal(t, before, versions(), "adopting writes no object")

	revs := history(t, "web", ns)
	require.Len(t, revs, 3, "Helm's two revisions and troupe's")
	assert.Equal(t, []bool{true, true, false}, []bool{revs[0].Helm, revs[1].Helm, revs[2].Helm})
	assert.Equal(t, []string{"superseded", "deployed", "ready"}, []string{revs[0].State, revs[1].State, revs[2].State})
	assert.Equal(t, 2, revs[2].AdoptedHelm)
	assert.True(t, revs[2].Current)
	assert.Equal(t, "hello-0.1.0", revs[1].Chart)

	var helmValues, troupeValues any
	require.NoError(t, json.Unmarshal(helmRun("get", "values", "web", "-o", "json"), &helmValues))
	r = troupe(t, "get", "values", "web", "-n", ns, "-o", "json")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "came from Helm's release Secret", "Helm kept them in a Secret: the CLI's identity may not read them")
	r = troupe(t, "get", "values", "web", "-n", ns, "-o", "json", "--show-secrets", "--creds", env.creds[access.Admin])
	require.Equal(t, 0, r.code, r)
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &troupeValues))
	assert.Equal(t, helmValues, troupeValues, "Helm's values, as helm get values shows them")

	r = troupe(t, "adopt", "web", "-n", ns, "--wait", "--timeout", "1m")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "troupe already manages")
	assert.Equal(t, before, versions(), "the refused adoption changed nothing")

	// Upgrade with troupe: the values Helm had, a new replica count, the annotation dropped
	// (--reuse-values would keep it: Helm's computed values stand in for the chart's there).
	r = troupe(t, "release", "web", chart(), "-n", ns, "--reset-then-reuse-values", "--set", "replicaCount=2,podAnnotations=null", "--wait", "--timeout", "2m")
	require.Equal(t, 0, r.code, r)
	d, err := kube.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
	require.NoError(t, err)
	assert.EqualValues(t, 2, *d.Spec.Replicas)
	assert.NotContains(t, d.Spec.Template.Annotations, "team", "Helm's fields were handed over: what the chart no longer sets is removed")
	assert.Equal(t, "from helm", d.Spec.Template.Spec.Containers[0].Env[0].Value, "the reused value stays")
	for _, f := range d.ManagedFields {
		if f.Subresource == "" {
			assert.NotEqual(t, "helm", f.Manager, "no field is left to Helm's manager")
		}
	}
	_, err = kube.CoreV1().Secrets(ns).Get(t.Context(), "sh.helm.release.v1.web.v2", metav1.GetOptions{})
	assert.NoError(t, err, "Helm's Secrets are kept unless --remove-helm-secrets")
	r = troupe(t, "get", "values", "web", "-n", ns)
	assert.Equal(t, 1, r.code, "values reusing Helm's are Helm's too: %s", r)

	revs = history(t, "web", ns)
	require.Len(t, revs, 5, "Helm's two, the adoption, the refused one, the upgrade")
	assert.Equal(t, "ready", revs[4].State)
	assert.True(t, revs[4].Current)

	// An adoption that removes Helm's Secrets, of another Helm release.
	helmRun("install", "api", chart(), "--wait", "--timeout", "2m")
	r = troupe(t, "adopt", "api", "-n", ns, "--remove-helm-secrets", "--wait", "--timeout", "2m")
	require.Equal(t, 0, r.code, r)
	_, err = kube.CoreV1().Secrets(ns).Get(t.Context(), "sh.helm.release.v1.api.v1", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "removed: %v", err)

	// Uninstalling the adopted release deletes Helm's objects, though troupe never labelled them.
	r = troupe(t, "uninstall", "api", "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	_, err = kube.AppsV1().Deployments(ns).Get(t.Context(), "api", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the adopted Deployment is deleted: %v", err)

	// Objects troupe's release web now holds are taken over by no other adoption.
	helmRun("install", "other", chart(), "--wait", "--timeout", "2m")
	r = troupe(t, "adopt", "other", "-n", ns, "--helm-name", "web", "--wait", "--timeout", "1m")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "belongs to troupe release", "the refusal names the owner")

	r = troupe(t, "adopt", "nothing", "-n", ns, "--wait", "--timeout", "1m")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "Helm release nothing in namespace "+ns+": not found")
}
