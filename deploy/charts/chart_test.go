package charts_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/deploy/charts"
	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// root is the repository's root (the go.work's directory).
func root(t *testing.T) string {
	t.Helper()
	r, err := natstest.WorkRoot()
	require.NoError(t, err)
	return r
}

// chartCopy is the chart, copied with its dependencies packaged into charts/ (make deploy-deps).
func chartCopy(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "troupe")
	require.NoError(t, os.CopyFS(dir, os.DirFS("troupe")))
	require.NoError(t, os.RemoveAll(filepath.Join(dir, "charts")))
	out, err := charts.BuildDependencies(dir, filepath.Join(root(t), "..", "shared", "fixtures", "nats", "helm", "charts"))
	require.NoError(t, err)
	require.Len(t, out, 1, "the NATS chart")
	return dir
}

// helmCLI runs ./bin/helm (make cluster-bin builds it) with args; its stdout, and stderr on failure.
func helmCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(root(t), "bin", "helm")
	_, err := os.Stat(bin)
	require.NoError(t, err, "the Helm CLI is built by `make cluster-bin`")
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), errors.New(stderr.String())
	}
	return stdout.String(), nil
}

// troupeRender renders the chart with troupe's renderer, as release troupe/troupe revision 1.
func troupeRender(t *testing.T, chart string, values string) (*events.Bundle, error) {
	t.Helper()
	r, err := render.New(render.Options{SourceRoots: []string{filepath.Dir(chart)}})
	require.NoError(t, err)
	req := events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: chart}}}
	if values != "" {
		req.ValuesFiles = []events.ValuesFile{{Name: "values.yaml", Content: values}}
	}
	out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "troupe", Name: "troupe"}, Revision: 1, Request: req})
	if err != nil {
		return nil, err
	}
	return events.ReadBundle(out.Bundle)
}

// helmRender renders the chart with `helm template`, as release troupe/troupe.
func helmRender(t *testing.T, chart string, values string) ([]map[string]any, error) {
	t.Helper()
	args := []string{"template", "troupe", chart, "-n", "troupe", "--kube-version", render.DefaultKubeVersion}
	if values != "" {
		args = append(args, "-f", valuesFile(t, values))
	}
	out, err := helmCLI(t, args...)
	if err != nil {
		return nil, err
	}
	var objs []map[string]any
	for _, doc := range strings.Split(out, "\n---") {
		var o map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(doc), &o))
		if o != nil {
			objs = append(objs, o)
		}
	}
	return objs, nil
}

// valuesFile writes values to a file whose path has no comma (helm -f splits at commas, and
// t.TempDir is named after the test).
func valuesFile(t *testing.T, values string) string {
	t.Helper()
	f, err := os.CreateTemp("", "values-*.yaml")
	require.NoError(t, err)
	t.Cleanup(func() { os.Remove(f.Name()) })
	_, err = f.WriteString(values)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return f.Name()
}

func key(o map[string]any) string {
	meta, _ := o["metadata"].(map[string]any)
	return strings.Join([]string{o["apiVersion"].(string), o["kind"].(string), str(meta["namespace"]), meta["name"].(string)}, " ")
}

func str(v any) string { s, _ := v.(string); return s }

// byKey indexes objects, with the namespace troupe's renderer gives a namespaced object that has
// none (the release's) removed where Helm's has none.
func byKey(objs []map[string]any) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, o := range objs {
		m[key(o)] = o
	}
	return m
}

var valueSets = map[string]string{
	"one namespace": "namespaces: [apps]\n",
	"namespaced tenants": `
namespaces: [team-a, team-b]
applier: {clusterScoped: {enabled: true}, allowAdopt: true, replicas: 3}
history: {api: {enabled: true, tokenSecret: history-token}, ui: {actions: true}}
tracing: {otlpEndpoint: "http://otel-collector.monitoring:4318"}
serviceMonitor: {enabled: true, labels: {release: prom}}
prometheusRule: {enabled: true, labels: {release: prom}}
grafanaDashboard: {enabled: true, annotations: {grafana_folder: troupe}}
networkPolicy: {enabled: true, metricsFrom: {matchLabels: {name: monitoring}}}
image: {tag: "1.2.3", pullSecrets: [regcred]}
subjectsPrefix: staging
`,
	"existing NATS, no impersonation": `
nats: {enabled: false}
natsURL: nats://nats-0.nats:4222,nats://nats-1.nats:4222
applier: {impersonate: {serviceAccount: ""}}
renderer: {cluster: false, replicas: 1}
podDisruptionBudget: {enabled: false}
provision: {replicas: 1}
`,
}

// TestChartRendersAsWithHelm: troupe's renderer and `helm template` give the same objects, field
// by field, for several sets of values; the objects are what the values ask for.
func TestChartRendersAsWithHelm(t *testing.T) {
	chart := chartCopy(t)
	for name, values := range valueSets {
		t.Run(name, func(t *testing.T) {
			b, err := troupeRender(t, chart, values)
			require.NoError(t, err)
			want, err := helmRender(t, chart, values)
			require.NoError(t, err)
			got := byKey(append(append([]map[string]any{}, b.Objects...), hookObjects(b)...))
			for k, o := range byKey(want) {
				meta := o["metadata"].(map[string]any)
				if _, ok := got[k]; ok || meta["namespace"] != nil {
					continue
				}
				// troupe sets the release's namespace on a namespaced object that has none
				withNS := strings.Join([]string{o["apiVersion"].(string), o["kind"].(string), "troupe", meta["name"].(string)}, " ")
				if g, ok := got[withNS]; ok {
					delete(g["metadata"].(map[string]any), "namespace")
					delete(got, withNS)
					got[k] = g
				}
			}
			assert.Equal(t, byKey(want), got)
			assert.Empty(t, b.Hooks, "the chart has no hooks")
		})
	}
}

func hookObjects(b *events.Bundle) []map[string]any {
	var out []map[string]any
	for _, h := range b.Hooks {
		out = append(out, h.Object)
	}
	return out
}

// objectsOf are the bundle's objects of kind, by name.
func objectsOf(b *events.Bundle, kind string) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, o := range b.Objects {
		if o["kind"] == kind {
			meta := o["metadata"].(map[string]any)
			m[strings.TrimPrefix(str(meta["namespace"])+"/", "/")+meta["name"].(string)] = o
		}
	}
	return m
}

func names[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// args is the container args of the Deployment of svc.
func args(t *testing.T, b *events.Bundle, svc string) []string {
	t.Helper()
	d, ok := objectsOf(b, "Deployment")["troupe/troupe-"+svc]
	require.True(t, ok, "the %s Deployment", svc)
	c := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	var out []string
	for _, a := range c["args"].([]any) {
		out = append(out, a.(string))
	}
	return out
}

// TestChartObjects: what each set of values makes — the services' flags, the NATS dependency,
// the roles, the hardening every pod has.
func TestChartObjects(t *testing.T) {
	chart := chartCopy(t)

	b, err := troupeRender(t, chart, "applier: {impersonate: {create: false}}") // every namespace: cluster-wide grants
	require.NoError(t, err)
	assert.Equal(t, []string{"troupe/troupe-applier", "troupe/troupe-health", "troupe/troupe-history", "troupe/troupe-renderer"}, names(objectsOf(b, "Deployment")))
	assert.Contains(t, names(objectsOf(b, "StatefulSet")), "troupe/troupe-nats", "the NATS chart")
	sts := objectsOf(b, "StatefulSet")["troupe/troupe-nats"]
	assert.EqualValues(t, 3, sts["spec"].(map[string]any)["replicas"], "a 3-node NATS cluster")
	conf := objectsOf(b, "ConfigMap")["troupe/troupe-nats-config"]["data"].(map[string]any)["nats.conf"].(string)
	assert.Contains(t, conf, "include ../troupe-nats-auth/auth.conf;", "NATS admits troupe's identities")
	assert.Contains(t, conf, "jetstream")
	for _, svc := range []string{"renderer", "applier", "health", "history"} {
		a := args(t, b, svc)
		assert.Contains(t, a, "--server=nats://troupe-nats.troupe.svc:4222", svc)
		assert.Contains(t, a, "--creds=/var/run/troupe/creds/"+svc+".creds", svc)
		assert.Contains(t, a, "--provision=false", svc)
		d := objectsOf(b, "Deployment")["troupe/troupe-"+svc]
		pod := d["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
		c := pod["containers"].([]any)[0].(map[string]any)
		sc := c["securityContext"].(map[string]any)
		assert.Equal(t, false, sc["allowPrivilegeEscalation"], svc)
		assert.Equal(t, true, sc["readOnlyRootFilesystem"], svc)
		assert.Equal(t, true, pod["securityContext"].(map[string]any)["runAsNonRoot"], svc)
		assert.Equal(t, "RuntimeDefault", pod["securityContext"].(map[string]any)["seccompProfile"].(map[string]any)["type"], svc)
		assert.Equal(t, "/readyz", c["readinessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"], svc)
		assert.Equal(t, "/healthz", c["livenessProbe"].(map[string]any)["httpGet"].(map[string]any)["path"], svc)
		assert.Equal(t, svc != "history", pod["automountServiceAccountToken"], "%s: only history holds no token", svc)
		assert.Contains(t, objectsOf(b, "PodDisruptionBudget"), "troupe/troupe-"+svc)
	}
	assert.Contains(t, args(t, b, "renderer"), "--in-cluster")
	assert.Contains(t, args(t, b, "applier"), "--impersonate-service-account=troupe-deployer")
	assert.Contains(t, args(t, b, "applier"), "--deny-cluster-scoped")
	assert.NotContains(t, strings.Join(args(t, b, "history"), " "), "--ui", "the web UI on, read-only")
	assert.NotContains(t, strings.Join(args(t, b, "history"), " "), "--otlp-endpoint", "no tracing")
	jobs := objectsOf(b, "Job")
	require.Contains(t, jobs, "troupe/troupe-provision-1")
	job := jobs["troupe/troupe-provision-1"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	assert.Subset(t, job["args"], []any{"--creds=/var/run/troupe/creds/admin.creds", "--provision-only", "--replicas=3"})
	assert.Equal(t, []string{"troupe-applier-cluster", "troupe-applier-impersonate", "troupe-health-watch", "troupe-renderer-cluster", "troupe-renderer-read"},
		names(objectsOf(b, "ClusterRole")), "cluster-wide grants without namespaces; none for history")
	assert.Empty(t, objectsOf(b, "Role"))
	assert.Empty(t, objectsOf(b, "PrometheusRule"), "off by default")
	assert.NotContains(t, objectsOf(b, "ConfigMap"), "troupe/troupe-dashboard", "off by default")

	b, err = troupeRender(t, chart, valueSets["namespaced tenants"])
	require.NoError(t, err)
	assert.Equal(t, []string{"team-a/troupe-applier-impersonate", "team-a/troupe-health-watch", "team-a/troupe-renderer-read",
		"team-b/troupe-applier-impersonate", "team-b/troupe-health-watch", "team-b/troupe-renderer-read"}, names(objectsOf(b, "Role")))
	assert.Equal(t, []string{"troupe-applier-cluster", "troupe-cluster-scoped", "troupe-renderer-cluster"}, names(objectsOf(b, "ClusterRole")))
	assert.Equal(t, []string{"team-a/troupe-deployer", "team-b/troupe-deployer", "troupe/troupe-applier", "troupe/troupe-health", "troupe/troupe-history", "troupe/troupe-renderer"},
		names(objectsOf(b, "ServiceAccount")))
	a := args(t, b, "applier")
	assert.Subset(t, a, []string{"--allow-namespace=team-a", "--allow-namespace=team-b", "--allow-adopt", "--subjects-prefix=staging"})
	assert.NotContains(t, a, "--deny-cluster-scoped")
	assert.Contains(t, args(t, b, "health"), "--per-namespace")
	assert.Subset(t, args(t, b, "history"), []string{"--api-listen=:8081", "--api-token-file=/var/run/troupe/api/token", "--ui-creds=/var/run/troupe/ui/cli.creds"})
	for _, svc := range []string{"renderer", "applier", "health", "history"} {
		assert.Contains(t, args(t, b, svc), "--otlp-endpoint=http://otel-collector.monitoring:4318", svc)
	}
	assert.Len(t, objectsOf(b, "NetworkPolicy"), 4)
	assert.Len(t, objectsOf(b, "ServiceMonitor"), 1)
	monitoring(t, b)

	b, err = troupeRender(t, chart, valueSets["existing NATS, no impersonation"])
	require.NoError(t, err)
	assert.Empty(t, objectsOf(b, "StatefulSet"), "no NATS")
	assert.Contains(t, args(t, b, "history"), "--server=nats://nats-0.nats:4222,nats://nats-1.nats:4222")
	assert.NotContains(t, args(t, b, "renderer"), "--in-cluster")
	assert.Contains(t, objectsOf(b, "ClusterRoleBinding"), "troupe-applier-cluster-admin")
	assert.Empty(t, objectsOf(b, "PodDisruptionBudget"))
}

// monitoring checks the monitoring objects of the "namespaced tenants" values: the
// ServiceMonitor keeps the services' labels, the PrometheusRule is deploy/monitoring/alerts.yaml's
// rules and the dashboard ConfigMap its dashboard, labelled for the Grafana sidecar.
func monitoring(t *testing.T, b *events.Bundle) {
	t.Helper()
	sm := objectsOf(b, "ServiceMonitor")["troupe/troupe"]
	require.NotNil(t, sm)
	endpoint := sm["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)
	assert.Equal(t, true, endpoint["honorLabels"], "the services' own service label stays")

	rule := objectsOf(b, "PrometheusRule")["troupe/troupe"]
	require.NotNil(t, rule)
	alerts, err := os.ReadFile(filepath.Join("..", "monitoring", "alerts.yaml"))
	require.NoError(t, err)
	var want map[string]any
	require.NoError(t, yaml.Unmarshal(alerts, &want))
	assert.Equal(t, want["spec"], rule["spec"], "alerts.yaml's rules, whole")
	assert.Equal(t, "prom", rule["metadata"].(map[string]any)["labels"].(map[string]any)["release"])

	cm := objectsOf(b, "ConfigMap")["troupe/troupe-dashboard"]
	require.NotNil(t, cm)
	meta := cm["metadata"].(map[string]any)
	assert.Equal(t, "1", meta["labels"].(map[string]any)["grafana_dashboard"])
	assert.Equal(t, "troupe", meta["annotations"].(map[string]any)["grafana_folder"])
	dashboard, err := os.ReadFile(filepath.Join("..", "monitoring", "grafana-dashboard.json"))
	require.NoError(t, err)
	assert.JSONEq(t, string(dashboard), cm["data"].(map[string]any)["troupe.json"].(string))
}

// TestChartRefusesBadValues: values.schema.json and the templates refuse what cannot work, under
// troupe's renderer and Helm alike, naming the value.
func TestChartRefusesBadValues(t *testing.T) {
	chart := chartCopy(t)
	for values, want := range map[string]string{
		"namespaces: []":           "namespaces: list the namespaces releases go to",
		"logLevel: loud":           "logLevel",
		"namespaces: [Team_A]":     "namespaces",
		"renderer: {replica: 2}":   "replica",
		"provision: {maxAge: 30d}": "maxAge",
		"nats: {enabled: false}":   "natsURL: required",
		"applier: {impersonate: {create: false}, clusterScoped: {enabled: true}}": "list namespaces",
		"history: {api: {enabled: true}}":                                         "history.api.tokenSecret",
	} {
		t.Run(values, func(t *testing.T) {
			if !strings.HasPrefix(values, "namespaces") && !strings.Contains(values, "impersonate") {
				values = "namespaces: [apps]\n" + values // past the one value a chart must be given
			}
			_, err := troupeRender(t, chart, values)
			require.Error(t, err, "troupe")
			assert.Contains(t, err.Error(), want, "troupe")
			_, err = helmRender(t, chart, values)
			require.Error(t, err, "helm")
			assert.Contains(t, err.Error(), want, "helm")
		})
	}
}

// TestHelmLint: `helm lint --strict` passes, with the dependency packaged.
func TestHelmLint(t *testing.T) {
	chart := chartCopy(t)
	for name, values := range valueSets {
		args := []string{"lint", chart, "--strict", "--kube-version", render.DefaultKubeVersion}
		if values != "" {
			args = append(args, "-f", valuesFile(t, values))
		}
		out, err := helmCLI(t, args...)
		assert.NoError(t, err, "%s: %s", name, out)
	}
}

// TestBuildDependencies: the NATS chart is packaged as Helm packages it (the archive loads as the
// chart), and a version the chart does not ask for is refused.
func TestBuildDependencies(t *testing.T) {
	chart := chartCopy(t)
	f, err := os.Open(filepath.Join(chart, "charts", "nats-2.14.2.tgz"))
	require.NoError(t, err)
	defer f.Close()
	head := make([]byte, 2)
	_, err = io.ReadFull(f, head)
	require.NoError(t, err)
	assert.Equal(t, []byte{0x1f, 0x8b}, head, "a gzipped archive")
	out, err := helmCLI(t, "show", "chart", filepath.Join(chart, "charts", "nats-2.14.2.tgz"))
	require.NoError(t, err)
	assert.Contains(t, out, "name: nats")

	other := filepath.Join(t.TempDir(), "nats")
	require.NoError(t, os.CopyFS(other, os.DirFS(filepath.Join(root(t), "..", "shared", "fixtures", "nats", "helm", "charts", "nats"))))
	b, err := os.ReadFile(filepath.Join(other, "Chart.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(other, "Chart.yaml"), bytes.ReplaceAll(b, []byte("version: 2.14.2"), []byte("version: 2.15.0")), 0o644))
	_, err = charts.BuildDependencies(chart, other)
	assert.ErrorContains(t, err, "is version 2.15.0, Chart.yaml asks for 2.14.2")
}

// TestValuesTable: the chart's README shows the values table `make generate` writes.
func TestValuesTable(t *testing.T) {
	readme, err := os.ReadFile("troupe/README.md")
	require.NoError(t, err)
	want, err := charts.WithValuesTable(os.DirFS("troupe"), readme)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, readme), "troupe/README.md's values table is stale: run make generate")
	assert.Contains(t, string(readme), "| `applier.impersonate.serviceAccount` | string | `\"troupe-deployer\"` |")
}
