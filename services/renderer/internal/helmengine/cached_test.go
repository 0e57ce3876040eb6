package helmengine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"text/template"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	helmengine "helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/services/renderer/internal/fixtures"
)

// TestCopyIsHelms: the copied files are Helm's, of the version in go.mod, but for the package
// name. After a Helm upgrade this fails until `make generate` copies them again.
func TestCopyIsHelms(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}} {{.Version}}", "helm.sh/helm/v4").Output()
	require.NoError(t, err)
	dir, version, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	recorded, err := os.ReadFile("HELM_VERSION")
	require.NoError(t, err)
	assert.Equal(t, version, strings.TrimSpace(string(recorded)), "copied from another Helm: run `make generate`")
	for _, f := range []string{"engine.go", "funcs.go", "files.go", "lookup_func.go"} {
		helm, err := os.ReadFile(filepath.Join(dir, "pkg/engine", f))
		require.NoError(t, err)
		copied, err := os.ReadFile(f)
		require.NoError(t, err)
		want := strings.Replace(string(helm), "\npackage engine\n", "\npackage helmengine\n", 1)
		assert.True(t, want == string(copied), "%s differs from Helm %s's: run `make generate`", f, version)
	}
}

// parsedMap is a Parsed that counts parses.
type parsedMap struct {
	mu   sync.Mutex
	sets map[string]*template.Template
	puts int
}

func (p *parsedMap) Get(key string) (*template.Template, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.sets[key]
	return t, ok
}

func (p *parsedMap) Put(key string, t *template.Template) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sets[key] = t
	p.puts++
}

// renderValues prepares values for ch as the renderer does (dependencies, coalescing, .Release).
func renderValues(t *testing.T, ch *chart.Chart, vals map[string]any, revision int) common.Values {
	t.Helper()
	require.NoError(t, chartutil.ProcessDependencies(ch, vals))
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "web", Namespace: "prod", Revision: revision,
		IsInstall: revision == 1, IsUpgrade: revision > 1}, common.DefaultCapabilities)
	require.NoError(t, err)
	return rv
}

func load(t *testing.T, dir string) func() *chart.Chart {
	return func() *chart.Chart {
		ch, err := loader.Load(dir)
		require.NoError(t, err)
		return ch
	}
}

func values(t *testing.T, doc string) map[string]any {
	v := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte(doc), &v))
	return v
}

// TestRenderCachedIsHelms: for every fixture chart and several values, a render from a parsed set
// kept from an earlier render gives what Helm's engine gives, file by file; a set is parsed once
// for equal templates and again when the templates differ (a subchart turned off).
func TestRenderCachedIsHelms(t *testing.T) {
	fx := fixtures.Dir(t)
	prod, err := os.ReadFile(filepath.Join(fx, "podinfo/charts/podinfo/values-prod.yaml"))
	require.NoError(t, err)
	cases := []struct {
		name  string
		chart string
		vals  []string
	}{
		{"podinfo", "podinfo/charts/podinfo", []string{"", string(prod), "replicaCount: 7\nhooks:\n  preInstall:\n    job:\n      enabled: true\n", "redis:\n  enabled: true\ningress:\n  enabled: true\n"}},
		{"nats", "nats/helm/charts/nats", []string{"", "config:\n  cluster:\n    enabled: true\n  jetstream:\n    enabled: true\n"}},
		{"nack", "nats/helm/charts/nack", []string{"", "jetstream:\n  nats:\n    url: nats://elsewhere:4222\n"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			chartOf := load(t, filepath.Join(fx, c.chart))
			parsed := &parsedMap{sets: map[string]*template.Template{}}
			for i, v := range c.vals {
				for rev := 1; rev <= 2; rev++ {
					helmCh, ch := chartOf(), chartOf()
					want, err := helmengine.Engine{CustomTemplateFuncs: notRandom}.RenderWithContext(t.Context(), helmCh, renderValues(t, helmCh, values(t, v), rev))
					require.NoError(t, err)
					got, err := Engine{CustomTemplateFuncs: notRandom}.RenderCached(t.Context(), parsed, ch, renderValues(t, ch, values(t, v), rev))
					require.NoError(t, err)
					sameFiles(t, want, got, fmt.Sprintf("values %d, revision %d", i, rev))
				}
			}
			assert.Equal(t, 1, parsed.puts, "the chart's templates are parsed once")
		})
	}

	t.Run("a subchart turned off is another set", func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, map[string]string{
			"Chart.yaml":                   "apiVersion: v2\nname: top\nversion: 1.0.0\ndependencies:\n- name: sub\n  version: 1.0.0\n  condition: sub.enabled\n",
			"values.yaml":                  "sub:\n  enabled: true\n",
			"templates/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: top\ndata:\n  sub: {{ .Values.sub.enabled | quote }}\n",
			"charts/sub/Chart.yaml":        "apiVersion: v2\nname: sub\nversion: 1.0.0\n",
			"charts/sub/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include \"sub.name\" . }}\n",
			"charts/sub/templates/_h.tpl":  "{{ define \"sub.name\" }}sub-{{ .Release.Name }}{{ end }}",
		})
		parsed := &parsedMap{sets: map[string]*template.Template{}}
		for _, v := range []string{"", "sub:\n  enabled: false\n", ""} {
			helmCh, ch := load(t, dir)(), load(t, dir)()
			want, err := helmengine.Engine{}.RenderWithContext(t.Context(), helmCh, renderValues(t, helmCh, values(t, v), 1))
			require.NoError(t, err)
			got, err := Engine{}.RenderCached(t.Context(), parsed, ch, renderValues(t, ch, values(t, v), 1))
			require.NoError(t, err)
			sameFiles(t, want, got, "values "+v)
		}
		assert.Equal(t, 2, parsed.puts, "with and without the subchart")
	})

	t.Run("same names, other text is another set", func(t *testing.T) {
		parsed := &parsedMap{sets: map[string]*template.Template{}}
		for _, text := range []string{"a: {{ .Release.Name }}\n", "b: {{ .Release.Namespace }}\n"} {
			dir := t.TempDir()
			write(t, dir, map[string]string{"Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n", "templates/t.yaml": text})
			helmCh, ch := load(t, dir)(), load(t, dir)()
			want, err := helmengine.Engine{}.RenderWithContext(t.Context(), helmCh, renderValues(t, helmCh, nil, 1))
			require.NoError(t, err)
			got, err := Engine{}.RenderCached(t.Context(), parsed, ch, renderValues(t, ch, nil, 1))
			require.NoError(t, err)
			sameFiles(t, want, got, text)
		}
		assert.Equal(t, 2, parsed.puts)
	})
}

// TestRenderCachedErrorsAreHelms: parse and execution errors, required, fail, tpl and include
// recursion come out as Helm's engine gives them, on a first render and from a kept set.
func TestRenderCachedErrorsAreHelms(t *testing.T) {
	for name, tpl := range map[string]string{
		"parse":     "a: {{ .Values.x \n",
		"exec":      "a: {{ index .Values.list 5 }}\n",
		"required":  "a: {{ required \"x is required\" .Values.x }}\n",
		"fail":      "{{ fail \"no, not like this\" }}\n",
		"tpl":       "a: {{ tpl \"{{ .Values.nope.deeper }}\" . }}\n",
		"recursion": "{{ define \"loop\" }}{{ include \"loop\" . }}{{ end }}a: {{ include \"loop\" . }}\n",
		"nil":       "a: {{ .Values.list.x.y }}\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, map[string]string{"Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n",
				"values.yaml": "list: [1]\n", "templates/t.yaml": tpl, "templates/ok.yaml": "ok: {{ .Release.Name }}\n"})
			parsed := &parsedMap{sets: map[string]*template.Template{}}
			for range 2 {
				helmCh, ch := load(t, dir)(), load(t, dir)()
				_, want := helmengine.Engine{}.RenderWithContext(t.Context(), helmCh, renderValues(t, helmCh, nil, 1))
				require.Error(t, want)
				_, got := Engine{}.RenderCached(t.Context(), parsed, ch, renderValues(t, ch, nil, 1))
				require.Error(t, got)
				assert.Equal(t, want.Error(), got.Error())
			}
		})
	}
}

// TestRenderCachedConcurrently: renders from one kept set at once, with other values each, give
// each its own output (run under -race).
func TestRenderCachedConcurrently(t *testing.T) {
	dir := filepath.Join(fixtures.Dir(t), "podinfo/charts/podinfo")
	parsed := &parsedMap{sets: map[string]*template.Template{}}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			ch := load(t, dir)()
			got, err := Engine{}.RenderCached(t.Context(), parsed, ch, renderValues(t, ch, values(t, fmt.Sprintf("replicaCount: %d\n", i+10)), 1))
			if assert.NoError(t, err) {
				assert.Contains(t, got["podinfo/templates/deployment.yaml"], fmt.Sprintf("replicas: %d", i+10))
			}
		})
	}
	wg.Wait()
}

// notRandom replaces the random function podinfo's test hooks name their pods with, so that two
// renders can be compared.
var notRandom = template.FuncMap{"randAlphaNum": func(n int) string { return strings.Repeat("r", n) }}

// sameFiles asserts equal rendered files, file by file (a diff of one file, not of the chart).
func sameFiles(t *testing.T, want, got map[string]string, msg string) {
	t.Helper()
	for name, w := range want {
		assert.Equal(t, w, got[name], "%s: %s", msg, name)
	}
	for name := range got {
		assert.Contains(t, want, name, "%s: %s rendered, not by Helm", msg, name)
	}
	assert.NotEmpty(t, want)
}

func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
}
