package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/troupe-dev/troupe/events/flow"
)

// TestReleaseInManyNamespaces: `release NAME SOURCE --namespaces a,b,c --wait` requests NAME in
// each namespace over one connection and follows them together, one line per release as it
// ends. A release that fails in one namespace (an object there belongs to no release) fails
// there only, and the command exits 1 saying how many did not succeed; the others are applied.
// `rollback --namespaces` and `uninstall --namespaces` act on each, and -o json lists every
// outcome.
func TestReleaseInManyNamespaces(t *testing.T) {
	server := startDev(t)
	a, b, c := testKube.Namespace(t), testKube.Namespace(t), testKube.Namespace(t)
	kube, err := kubernetes.NewForConfig(testKube.Config)
	require.NoError(t, err)
	_, err = kube.CoreV1().ConfigMaps(b).Create(t.Context(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "many"}, Data: map[string]string{"greeting": "mine"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	manifest := func(greeting string) string {
		file := filepath.Join(t.TempDir(), "cm.yaml")
		require.NoError(t, os.WriteFile(file, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: many\ndata:\n  greeting: "+greeting+"\n"), 0o644))
		return file
	}
	greeting := func(ns string) string {
		cm, err := kube.CoreV1().ConfigMaps(ns).Get(t.Context(), "many", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "(none)"
		}
		require.NoError(t, err)
		return cm.Data["greeting"]
	}

	code, out, errOut := troupe(t, server, "", "release", "many", manifest("hello"), "--namespaces", a+","+b+","+c, "--wait", "--timeout", "1m")
	assert.Equal(t, 1, code, "one of three failed: %s\n%s", out, errOut)
	assert.Contains(t, errOut, "1 of 3 releases did not succeed")
	for _, ns := range []string{a, b, c} {
		assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(ns+"/many: revision 1 requested (event "), out)
	}
	for _, ns := range []string{a, c} {
		assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(ns+"/many: revision 1 ready after "), out)
		assert.Equal(t, "hello", greeting(ns))
	}
	assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(b+"/many revision 1 failed at apply (ownership_conflict)")+".*ConfigMap.*many.*belongs to no release", out)
	assert.Equal(t, "mine", greeting(b), "the failed release changed nothing in its namespace")

	code, out, errOut = troupe(t, server, "", "release", "many", manifest("bye"), "--namespaces", a+","+c, "--wait", "-o", "json")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	var outs []flow.Outcome
	require.NoError(t, json.Unmarshal([]byte(out), &outs), out)
	require.Len(t, outs, 2)
	for i, ns := range []string{a, c} {
		assert.Equal(t, ns+"/many", outs[i].Release, "in the order given")
		assert.Equal(t, 2, outs[i].Revision)
		assert.Equal(t, "ready", outs[i].State)
		assert.Equal(t, "bye", greeting(ns))
	}

	code, out, errOut = troupe(t, server, "", "rollback", "many", "1", "--namespaces", a+","+c, "--wait")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	for _, ns := range []string{a, c} {
		assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(ns+"/many: release.rollback.requested published (event "), out)
		assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(ns+"/many: revision 1 ready after "), out)
		assert.Equal(t, "hello", greeting(ns), "rolled back")
	}

	code, out, errOut = troupe(t, server, "", "uninstall", "many", "--namespaces", a+","+c, "--wait")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	for _, ns := range []string{a, c} {
		assert.Equal(t, "(none)", greeting(ns), "uninstalled")
	}
	assert.Equal(t, "mine", greeting(b), "not asked")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"release", "many", manifest("x"), "-n", a, "--namespaces", c}, "-n and --namespaces: one or the other"},
		{[]string{"release", a + "/many", manifest("x"), "--namespaces", c}, "with --namespaces, give the release's name alone"},
		{[]string{"rollback", "many", "--namespaces", a + ",Bad_NS"}, `namespace "Bad_NS" must consist of lower-case`},
		{[]string{"uninstall", "many", "--namespaces", a + ",Bad_NS"}, `namespace "Bad_NS" must consist of lower-case`},
	} {
		code, out, errOut := troupe(t, server, "", tc.args...)
		assert.Equal(t, 2, code, "%v: %s", tc.args, out)
		assert.Contains(t, errOut, tc.want, "%v", tc.args)
	}
}
