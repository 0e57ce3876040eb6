package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// helmCLI returns a runner of the Helm CLI (`./bin/helm`, built by make cluster-bin) on the test
// cluster in namespace ns, with homes of its own; it fails the test when helm fails, and returns
// its standard output.
func helmCLI(t *testing.T, ns string) func(args ...string) []byte {
	t.Helper()
	helm := filepath.Join(env.root, "bin", "helm")
	_, err := os.Stat(helm)
	require.NoError(t, err, "the Helm CLI is built by `make cluster-bin`")
	return func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(helm, append(args, "-n", ns, "--kubeconfig", env.kube.Kubeconfig)...)
		cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
		out, err := cmd.Output()
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		require.NoError(t, err, "helm %v: %s%s", args, out, stderr)
		return out
	}
}

// valuesChart writes a chart of version with defaults, whose ConfigMap holds every value.
func valuesChart(t *testing.T, version, defaults string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vals")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "templates"), 0o755))
	files := map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: vals\nversion: " + version + "\n",
		"values.yaml": defaults,
		"templates/cm.yaml": `apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-values
data:
  values.json: {{ toJson .Values | quote }}
`,
	}
	for name, content := range files {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
	}
	return dir
}

// TestValuesAsHelmKeepsThem: the same sequence of installs and upgrades — values files, --set,
// --reuse-values over a new chart version (whose new default Helm does not take),
// --reset-then-reuse-values (which takes it), then plain values — leaves `troupe get values`
// (with and without --all, of each revision) equal to `helm get values`, and the rendered
// objects equal.
func TestValuesAsHelmKeepsThem(t *testing.T) {
	v1 := valuesChart(t, "0.1.0", "a: 1\nnested:\n  x: default\n  y: default\nlist: [1, 2]\nkeep: chart\n")
	v2 := valuesChart(t, "0.2.0", "a: 1\nnested:\n  x: default\n  y: default\nlist: [1, 2]\nkeep: chart\nadded: new-default\n")
	file := filepath.Join(t.TempDir(), "prod.yaml")
	require.NoError(t, os.WriteFile(file, []byte("nested:\n  x: from-file\nlist: [3]\n"), 0o644))
	helmNS, troupeNS := env.kube.Namespace(t), env.kube.Namespace(t)
	helmRun := helmCLI(t, helmNS)
	decode := func(what string, b []byte) any {
		t.Helper()
		var v any
		require.NoError(t, json.Unmarshal(b, &v), "%s: %s", what, b)
		if v == nil {
			v = map[string]any{} // helm prints null for no values
		}
		return v
	}
	steps := []struct {
		name string
		args []string // after NAME CHART
		v2   bool
	}{
		{"install", []string{"-f", file, "--set", "a=2"}, false},
		{"reuse", []string{"--reuse-values", "--set", "nested.y=set"}, false},
		{"reuse over a new chart version", []string{"--reuse-values", "--set", "b=3"}, true},
		{"reset then reuse", []string{"--reset-then-reuse-values", "--set", "c=4,keep=null"}, true},
		{"plain", []string{"--set", "only=1"}, true},
	}
	for i, step := range steps {
		chart := v1
		if step.v2 {
			chart = v2
		}
		helmRun(append([]string{"upgrade", "--install", "app", chart}, step.args...)...)
		r := troupe(t, append([]string{"release", "app", chart, "-n", troupeNS, "--wait"}, step.args...)...)
		require.Equal(t, 0, r.code, "troupe %s: %s", step.name, r)
		for _, all := range []bool{false, true} {
			args := []string{"get", "values", "app", "-o", "json"}
			if all {
				args = append(args, "--all")
			}
			want := decode("helm", helmRun(args...))
			r := troupe(t, append(args, "-n", troupeNS)...)
			require.Equal(t, 0, r.code, "%s: %s", step.name, r)
			assert.Equal(t, want, decode("troupe", []byte(r.stdout)), "%s (revision %d): get values, all=%t", step.name, i+1, all)
		}
		cm := func(ns string) string {
			c, err := env.kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "app-values", metav1.GetOptions{})
			require.NoError(t, err)
			return c.Data["values.json"]
		}
		assert.JSONEq(t, cm(helmNS), cm(troupeNS), "%s: the values the chart rendered with", step.name)
	}
	// An earlier revision's, by number; and the table Helm prints.
	want := decode("helm", helmRun("get", "values", "app", "--revision", "2", "-o", "json"))
	r := troupe(t, "get", "values", "app", "-n", troupeNS, "--revision", "2", "-o", "json")
	require.Equal(t, 0, r.code, r)
	assert.Equal(t, want, decode("troupe", []byte(r.stdout)))
	r = troupe(t, "get", "values", "app", "-n", troupeNS)
	require.Equal(t, 0, r.code, r)
	assert.Equal(t, "USER-SUPPLIED VALUES:\nonly: 1\n", r.stdout)

	r = troupe(t, "get", "values", "app", "-n", troupeNS, "--revision", "9")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "has no revision 9")
}
