package render_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	rel "helm.sh/helm/v4/pkg/release/v1"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"helm.sh/helm/v4/pkg/storage"
	"helm.sh/helm/v4/pkg/storage/driver"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	sharedfixtures "github.com/troupe-dev/troupe/services/renderer/internal/fixtures"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

func fixtures(t *testing.T) string { return sharedfixtures.Dir(t) }

func newRenderer(t *testing.T, o render.Options) *render.Renderer {
	t.Helper()
	if o.SourceRoots == nil { // the fixtures, and the charts tests write
		o.SourceRoots = []string{fixtures(t), os.TempDir()}
	}
	r, err := render.New(o)
	require.NoError(t, err)
	return r
}

func helmInput(path string, valuesFiles ...string) render.Input {
	req := events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: path}}}
	for _, f := range valuesFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			panic(err)
		}
		req.ValuesFiles = append(req.ValuesFiles, events.ValuesFile{Name: filepath.Base(f), Content: string(b)})
	}
	return render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: req}
}

func keys(refs []events.ObjectRef) []string {
	var out []string
	for _, r := range refs {
		out = append(out, r.APIVersion+" "+r.Kind+" "+r.Name)
	}
	sort.Strings(out)
	return out
}

// helmEngineObjects renders chart with Helm's template engine directly — a second path to the same
// answer — and returns its regular objects (CRDs from crds/ included, hooks and NOTES excluded).
func helmEngineObjects(t *testing.T, chartPath string, valuesFiles ...string) []string {
	t.Helper()
	ch, err := loader.Load(chartPath)
	require.NoError(t, err)
	vals := readValues(t, valuesFiles...)
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "web", Namespace: "prod", Revision: 1, IsInstall: true}, common.DefaultCapabilities)
	require.NoError(t, err)
	files, err := engine.Render(ch, rv)
	require.NoError(t, err)
	for name := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			delete(files, name)
		}
	}
	_, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	require.NoError(t, err)
	var out []string
	for _, m := range manifests {
		out = append(out, m.Head.Version+" "+m.Head.Kind+" "+m.Head.Metadata.Name)
	}
	for _, crd := range ch.CRDObjects() {
		var obj map[string]any
		for _, doc := range releaseutil.SplitManifests(string(crd.File.Data)) {
			require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
			if len(obj) > 0 {
				out = append(out, obj["apiVersion"].(string)+" "+obj["kind"].(string)+" "+obj["metadata"].(map[string]any)["name"].(string))
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestRenderFixtureCharts(t *testing.T) {
	fx := fixtures(t)
	podinfo := filepath.Join(fx, "podinfo/charts/podinfo")
	tests := []struct {
		name   string
		chart  string
		values []string
		crds   int
	}{
		{"podinfo defaults", podinfo, nil, 0},
		{"podinfo prod values", podinfo, []string{filepath.Join(podinfo, "values-prod.yaml")}, 0},
		{"nats", filepath.Join(fx, "nats/helm/charts/nats"), nil, 0},
		{"nack with CRDs", filepath.Join(fx, "nats/helm/charts/nack"), nil, -1},
	}
	r := newRenderer(t, render.Options{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := r.Render(t.Context(), helmInput(tc.chart, tc.values...))
			require.NoError(t, err)
			assert.Equal(t, helmEngineObjects(t, tc.chart, tc.values...), keys(out.Objects), "the same objects as Helm's engine")
			assert.NotEmpty(t, out.Objects)
			b, err := events.ReadBundle(out.Bundle)
			require.NoError(t, err)
			assert.Len(t, b.Objects, len(out.Objects))
			for i, ref := range out.Objects {
				if ref.Kind == "CustomResourceDefinition" {
					assert.Less(t, i, b.CRDs, "CRDs come first")
					assert.Empty(t, ref.Namespace, "CRDs are cluster-scoped")
				} else if ref.Kind != "Namespace" && !strings.HasPrefix(ref.Kind, "Cluster") {
					assert.Equal(t, "prod", ref.Namespace, "%s gets the release's namespace", ref)
				}
			}
			if tc.crds < 0 {
				assert.Positive(t, b.CRDs, "nack's crds/ are in the bundle")
			}
			again, err := r.Render(t.Context(), helmInput(tc.chart, tc.values...))
			require.NoError(t, err)
			assert.Equal(t, events.Digest(out.Bundle), events.Digest(again.Bundle), "the same inputs give the same digest")
		})
	}
}

func TestRenderPodinfoHooksNotesAndTests(t *testing.T) {
	podinfo := filepath.Join(fixtures(t), "podinfo/charts/podinfo")
	// podinfo's hook jobs are off by default; its test hooks (templates/tests/) are always there.
	in := helmInput(podinfo)
	in.Request.Set = []string{"hooks.preInstall.job.enabled=true", "hooks.postUpgrade.job.enabled=true"}
	out, err := newRenderer(t, render.Options{}).Render(t.Context(), in)
	require.NoError(t, err)
	assert.Contains(t, out.Notes, "web", "NOTES.txt rendered with the release name")
	assert.Equal(t, "podinfo", out.Chart.Name)
	b, err := events.ReadBundle(out.Bundle)
	require.NoError(t, err)
	for _, o := range b.Objects {
		ann, _ := o["metadata"].(map[string]any)["annotations"].(map[string]any)
		assert.NotContains(t, ann, "helm.sh/hook", "hooks are kept out of the objects")
	}
	require.NotEmpty(t, b.Hooks, "the enabled hook jobs are recorded")
	var events []string
	for _, h := range b.Hooks {
		assert.NotContains(t, h.Events, "test", "test hooks are dropped")
		assert.Equal(t, "Job", h.Object["kind"])
		events = append(events, h.Events...)
	}
	sort.Strings(events)
	assert.Equal(t, []string{"post-upgrade", "pre-install"}, events)
	assert.Positive(t, installAction(t, podinfo).testHooks, "Helm itself renders podinfo's test hooks, so dropping them is what this checks")
}

func TestRenderKustomizeFixtures(t *testing.T) {
	fx := fixtures(t)
	dirs := []string{filepath.Join(fx, "podinfo/kustomize")}
	overlays, err := filepath.Glob(filepath.Join(fx, "podinfo/deploy/overlays/*"))
	require.NoError(t, err)
	require.NotEmpty(t, overlays)
	dirs = append(dirs, overlays...)
	r := newRenderer(t, render.Options{})
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			req := events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Path: dir}}}
			out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1, Request: req})
			require.NoError(t, err)
			res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
			require.NoError(t, err)
			var want []string
			for _, res := range res.Resources() {
				want = append(want, res.GetApiVersion()+" "+res.GetKind()+" "+res.GetName())
			}
			sort.Strings(want)
			assert.Equal(t, want, keys(out.Objects), "the same objects as kustomize's API")
		})
	}
}

// helmResult is what Helm's install action gives: objects and hooks (not test hooks) by
// "apiVersion kind name", notes, and how many test hooks it rendered.
type helmResult struct {
	objects   map[string]map[string]any
	hooks     map[string]helmHook
	notes     string
	testHooks int
}

type helmHook struct {
	events []string
	weight int
	object map[string]any
}

func objectKey(obj map[string]any) string {
	return fmt.Sprintf("%s %s %s", obj["apiVersion"], obj["kind"], obj["metadata"].(map[string]any)["name"])
}

// installAction renders chart as Helm's own install action does (`helm template`): the oracle
// the renderer's own steps are held to.
func installAction(t *testing.T, chartPath string, valuesFiles ...string) helmResult {
	t.Helper()
	ch, err := loader.Load(chartPath)
	require.NoError(t, err)
	vals := readValues(t, valuesFiles...)
	caps := common.DefaultCapabilities.Copy()
	kv, err := common.ParseKubeVersion(render.DefaultKubeVersion)
	require.NoError(t, err)
	caps.KubeVersion = *kv
	inst := action.NewInstall(&action.Configuration{Releases: storage.Init(driver.NewMemory()), Capabilities: caps})
	inst.DryRunStrategy = action.DryRunClient
	inst.Replace = true
	inst.ReleaseName, inst.Namespace = "web", "prod"
	inst.IncludeCRDs = true
	inst.KubeVersion = kv
	r, err := inst.RunWithContext(t.Context(), ch, vals)
	require.NoError(t, err)
	rl := r.(*rel.Release)
	res := helmResult{objects: map[string]map[string]any{}, hooks: map[string]helmHook{}, notes: rl.Info.Notes}
	for _, doc := range releaseutil.SplitManifests(rl.Manifest) {
		var obj map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(doc), &obj))
		if len(obj) > 0 {
			res.objects[objectKey(obj)] = obj
		}
	}
	for _, h := range rl.Hooks {
		if slices.Contains(h.Events, rel.HookTest) {
			res.testHooks++
			continue
		}
		var obj map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(h.Manifest), &obj))
		hh := helmHook{weight: h.Weight, object: obj}
		for _, e := range h.Events {
			hh.events = append(hh.events, e.String())
		}
		res.hooks[objectKey(obj)] = hh
	}
	return res
}

// TestRendersAsHelmsInstallAction: for every fixture chart, the same objects (whole, field by
// field: only metadata.namespace is added, for namespaced kinds), hooks (with their events and
// weights) and notes as Helm's install action; and .Release.Revision follows the revision, where
// the action says 1.
func TestRendersAsHelmsInstallAction(t *testing.T) {
	fx := fixtures(t)
	podinfo := filepath.Join(fx, "podinfo/charts/podinfo")
	hooksOn := filepath.Join(t.TempDir(), "hooks.yaml")
	require.NoError(t, os.WriteFile(hooksOn, []byte("hooks:\n  preInstall:\n    job:\n      enabled: true\n  postDelete:\n    job:\n      enabled: true\n"), 0o644))
	charts := []struct {
		path   string
		values []string
	}{
		{podinfo, nil}, {podinfo, []string{filepath.Join(podinfo, "values-prod.yaml")}},
		{podinfo, []string{hooksOn}}, // so that hooks, not only their absence, are compared
		{filepath.Join(fx, "nats/helm/charts/nats"), nil}, {filepath.Join(fx, "nats/helm/charts/nack"), nil},
	}
	r := newRenderer(t, render.Options{})
	for _, c := range charts {
		t.Run(filepath.Base(c.path)+fmt.Sprint(len(c.values)), func(t *testing.T) {
			want := installAction(t, c.path, c.values...)
			out, err := r.Render(t.Context(), helmInput(c.path, c.values...))
			require.NoError(t, err)
			assert.Equal(t, want.notes, out.Notes)
			b, err := events.ReadBundle(out.Bundle)
			require.NoError(t, err)
			got := map[string]map[string]any{}
			for _, o := range b.Objects {
				key := objectKey(o)
				if h, ok := want.objects[key]; ok {
					if _, set := h["metadata"].(map[string]any)["namespace"]; !set {
						meta := o["metadata"].(map[string]any)
						if ns, ok := meta["namespace"]; ok {
							assert.Equal(t, "prod", ns, "%s: the namespace troupe sets is the release's", key)
							delete(meta, "namespace")
						}
					}
				}
				got[key] = o
			}
			assert.Equal(t, want.objects, got)
			gotHooks := map[string]helmHook{}
			for _, h := range b.Hooks {
				gotHooks[objectKey(h.Object)] = helmHook{events: h.Events, weight: h.Weight, object: h.Object}
			}
			assert.Equal(t, want.hooks, gotHooks)
			if len(c.values) > 0 && c.values[0] == hooksOn {
				assert.Len(t, gotHooks, 2, "both enabled hook jobs")
			}
		})
	}

	chart := writeChart(t, map[string]string{"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rev\ndata:\n  revision: {{ .Release.Revision | quote }}\n  upgrade: {{ .Release.IsUpgrade | quote }}\n  install: {{ .Release.IsInstall | quote }}\n"})
	for rev, want := range map[int]string{1: `"install":"true","revision":"1","upgrade":"false"`, 3: `"install":"false","revision":"3","upgrade":"true"`} {
		in := helmInput(chart)
		in.Revision = rev
		out, err := r.Render(t.Context(), in)
		require.NoError(t, err)
		assert.Contains(t, string(out.Bundle), want, "revision %d", rev)
	}
}

// readValues merges values files in order, as `helm -f a -f b` does.
func readValues(t *testing.T, files ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		v := map[string]any{}
		require.NoError(t, yaml.Unmarshal(b, &v))
		vals = loader.MergeMaps(vals, v)
	}
	return vals
}

// TestSkipCRDs: --skip-crds leaves a chart's crds/ out of the bundle, as helm install --skip-crds.
func TestSkipCRDs(t *testing.T) {
	r := newRenderer(t, render.Options{})
	in := helmInput(filepath.Join(fixtures(t), "nats/helm/charts/nack"))
	with, err := r.Render(t.Context(), in)
	require.NoError(t, err)
	in.Request.Source.Helm.SkipCRDs = true
	without, err := r.Render(t.Context(), in)
	require.NoError(t, err)
	b, err := events.ReadBundle(with.Bundle)
	require.NoError(t, err)
	require.Positive(t, b.CRDs)
	b, err = events.ReadBundle(without.Bundle)
	require.NoError(t, err)
	assert.Zero(t, b.CRDs)
	for _, o := range without.Objects {
		assert.NotEqual(t, "CustomResourceDefinition", o.Kind)
	}
	assert.Len(t, without.Objects, len(with.Objects)-countCRDs(with.Objects))
}

func countCRDs(refs []events.ObjectRef) int {
	n := 0
	for _, r := range refs {
		if r.Kind == "CustomResourceDefinition" {
			n++
		}
	}
	return n
}
