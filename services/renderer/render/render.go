package render

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"text/template"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/internal/helmengine"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Input is one render: what was requested, for which release and revision.
type Input struct {
	Release  events.Release
	Revision int
	Request  events.Requested
}

// Output is a rendered revision.
type Output struct {
	// Bundle is the canonical bundle: equal inputs give equal bytes.
	Bundle []byte
	// Objects lists the bundle's objects in apply order.
	Objects []events.ObjectRef
	Notes   string
	Chart   *events.ChartInfo
	// Hooks counts the chart's hooks, kept out of Objects (see events.Bundle).
	Hooks int
	// Values is the revision's events.ValuesRecord, encoded (charts only).
	Values []byte
	// Adopted is the Helm release the bundle is (a helmRelease source).
	Adopted *Adopted

	fetched    bool // remote pieces were fetched: what they hold may change, so it is not cached
	lookedUp   bool // the render read the cluster (a chart's lookup, a Helm release): never cached
	revision   int  // the revision rendered
	byRevision bool // the chart may read .Release.Revision: cached for its revision only
}

// pass is one render: its input and what the cluster looked like when it began.
type pass struct {
	Input
	caps *common.Capabilities
	view *clusterView // nil without a cluster, or before it answered
}

// SourceFetcher opens an uploaded source (chart archive, kustomize archive, manifests) by digest.
type SourceFetcher func(ctx context.Context, digest string) (io.ReadCloser, error)

// Options configure a Renderer. Zero values take the defaults named on each field.
type Options struct {
	// Sources opens uploaded sources. Without it, sources by digest fail.
	Sources SourceFetcher
	// Records opens what renders stored beside bundles, by digest: the events.ValuesRecord a
	// request's ReuseValues names. Without it, such a request fails.
	Records SourceFetcher
	// KubeVersion is .Capabilities.KubeVersion (and what kubeVersion constraints are checked
	// against) while Cluster is not set or has not answered. Default DefaultKubeVersion.
	KubeVersion string
	// APIVersions are added to .Capabilities.APIVersions while Cluster is not set or has not
	// answered.
	APIVersions []string
	// Cluster is the target cluster (Discover sets it): .Capabilities, kind scopes and lookup
	// read it, as `helm upgrade` does. Without it, lookup finds nothing, as in `helm template`.
	Cluster *Cluster
	// LookupAllNamespaces lets a chart's lookup read namespaced objects of any namespace the
	// renderer may read. Without it, lookup reads the release's own namespace and cluster-scoped
	// kinds: whoever may release into a namespace can already read what it holds (a Pod of
	// theirs mounts it), but not what other namespaces hold.
	LookupAllNamespaces bool
	// MaxBundleSize bounds a bundle. Default 32 MiB.
	MaxBundleSize int
	// MaxSourceSize bounds an uploaded source as stored (a chart or kustomize archive, a
	// manifests file), and a kustomize archive's files unpacked, together. Default 64 MiB.
	MaxSourceSize int
	// MaxArchiveEntries bounds the entries of an uploaded kustomize archive. Default 10000.
	MaxArchiveEntries int
	// Credentials by name, for HelmSource.Credentials.
	Credentials map[string]Credential
	// HTTPTimeout bounds each download. Default 60s.
	HTTPTimeout time.Duration
	// PlainHTTPRegistries lists OCI registries (host:port) reached without TLS, e.g. local ones.
	PlainHTTPRegistries []string
	// SourceRoots are the directories path sources (helm.path, kustomize.path, manifests.path)
	// may name, symlinks resolved; a kustomization there reads nothing outside them. Without
	// any, path sources are refused: sources are uploaded, or come from a repository or
	// registry. A path source reads the renderer's own disk, so name only directories meant
	// for it (a mounted volume of charts).
	SourceRoots []string
	// Kube reads requests' valuesFrom (Secrets and ConfigMaps of the release's namespace) from
	// the target cluster; Discover sets it. Without it, a request with valuesFrom fails.
	Kube kubernetes.Interface
	// KustomizeRemoteHosts lists where kustomizations may fetch remote resources, bases,
	// components and files (a generator's, a patch's, …) from: "host" or "host:port" for https,
	// "http://host:port" for plain http. Git repositories are fetched with the git CLI (at its
	// ref, depth 1), files with a GET; each within HTTPTimeout, all of one build within
	// MaxSourceSize and MaxArchiveEntries; redirects only to listed hosts. A credential of
	// Credentials whose Host is the fetch's host is sent there. Without any host, nothing
	// remote is fetched and a kustomization naming a remote piece fails.
	KustomizeRemoteHosts []string
	// CacheSize bounds how many recent outputs are kept to answer identical inputs without
	// rendering again. Default 128; negative turns the cache off.
	CacheSize int
}

// DefaultKubeVersion is the Kubernetes version assumed when none is configured: the one troupe's
// Kubernetes libraries and local cluster are built from.
const DefaultKubeVersion = "v1.37.1"

// Credential authenticates to a chart repository or OCI registry: the one at Host, and only
// there — a chart URL an index.yaml names elsewhere, or a request pointing the credential's
// name at another host, gets no credentials.
type Credential struct {
	Host     string `json:"host"` // host[:port], as in the repository's or registry's URL
	Username string `json:"username"`
	Password string `json:"password"`
}

// Renderer renders requests into canonical bundles. It is safe for concurrent use.
type Renderer struct {
	opts        Options
	caps        *common.Capabilities
	roots       roots                // where path sources may be
	remoteHosts remoteHosts          // where kustomizations may fetch from
	cache       *lru[*Output]        // outputs by cacheKey; nil when off
	charts      *lru[*chart.Chart]   // uploaded charts by digest
	values      *lru[map[string]any] // parsed values files by content
	// templates keeps charts' templates parsed, by their names and text: Helm's engine would
	// parse them on every render (see internal/helmengine).
	templates parsedTemplates
}

// New returns a Renderer.
func New(o Options) (*Renderer, error) {
	if o.MaxBundleSize <= 0 {
		o.MaxBundleSize = 32 << 20
	}
	if o.MaxSourceSize <= 0 {
		o.MaxSourceSize = 64 << 20
	}
	if o.MaxArchiveEntries <= 0 {
		o.MaxArchiveEntries = 10000
	}
	if o.HTTPTimeout <= 0 {
		o.HTTPTimeout = 60 * time.Second
	}
	if o.KubeVersion == "" {
		o.KubeVersion = DefaultKubeVersion
	}
	caps := common.DefaultCapabilities.Copy()
	kv, err := common.ParseKubeVersion(o.KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("renderer: kube version %q: %w", o.KubeVersion, err)
	}
	caps.KubeVersion = *kv
	caps.APIVersions = append(caps.APIVersions, o.APIVersions...)
	r := &Renderer{opts: o, caps: caps, charts: newLRU[*chart.Chart](32), values: newLRU[map[string]any](64),
		templates: parsedTemplates{newLRU[*template.Template](32)}}
	if r.roots, err = newRoots(o.SourceRoots); err != nil {
		return nil, err
	}
	if r.remoteHosts, err = newRemoteHosts(o.KustomizeRemoteHosts); err != nil {
		return nil, err
	}
	for name, c := range o.Credentials {
		if c.Host == "" {
			return nil, fmt.Errorf("renderer: credentials %q: no host: a credential is sent only to the host it is for", name)
		}
	}
	if o.CacheSize == 0 {
		o.CacheSize = 128
	}
	if o.CacheSize > 0 {
		r.cache = newLRU[*Output](o.CacheSize)
	}
	return r, nil
}

// Render renders in. Identical inputs are answered from the cache (see Options.CacheSize). Every
// error is an *events.Error with a reason code.
func (r *Renderer) Render(ctx context.Context, in Input) (*Output, error) {
	p := &pass{Input: in, caps: r.caps}
	if r.opts.Cluster != nil {
		if p.view = r.opts.Cluster.current(ctx); p.view != nil {
			p.caps = p.view.caps
		}
	}
	if r.cache == nil {
		return r.render(ctx, p)
	}
	key, ok := r.cacheKey(p)
	if !ok {
		return r.render(ctx, p)
	}
	if out, hit := r.cache.get(key); hit && (!out.byRevision || out.revision == in.Revision) {
		return out, nil
	}
	out, err := r.render(ctx, p)
	if err == nil && !out.fetched && !out.lookedUp {
		r.cache.put(key, out)
	}
	return out, err
}

func (r *Renderer) render(ctx context.Context, in *pass) (*Output, error) {
	src := in.Request.Source
	var objs []object
	var out Output
	var hooks []hook
	switch {
	case src.Helm != nil:
		ch, err := r.loadChart(ctx, src.Helm)
		if err != nil {
			return nil, err
		}
		if out.fetched, err = r.resolveDependencies(ctx, ch, src.Helm); err != nil {
			return nil, err
		}
		vals, user, err := r.mergeValues(ctx, in.Input)
		if err != nil {
			return nil, err
		}
		var fromHelm bool
		if user, fromHelm, err = r.reuseValues(ctx, ch, user, in.Input); err != nil {
			return nil, err
		}
		res, err := r.renderChart(ctx, ch, loader.MergeMaps(vals, user), in)
		if err != nil {
			return nil, err
		}
		if out.Values, err = valuesRecord(ch, user, in.Release, fromHelm); err != nil {
			return nil, err
		}
		objs, hooks, out.Notes = res.objects, res.hooks, res.notes
		out.lookedUp, out.byRevision, out.revision = res.lookedUp, readsRevision(ch, in.Request), in.Revision
		out.Chart = &events.ChartInfo{Name: ch.Metadata.Name, Version: ch.Metadata.Version, AppVersion: ch.Metadata.AppVersion}
	case src.Kustomize != nil:
		var err error
		if objs, out.fetched, err = r.renderKustomize(ctx, src.Kustomize); err != nil {
			return nil, err
		}
	case src.Manifests != nil:
		var err error
		if objs, err = r.renderManifests(ctx, src.Manifests); err != nil {
			return nil, err
		}
	case src.HelmRelease != nil:
		out, err := r.renderHelmRelease(ctx, in)
		if err != nil {
			return nil, err
		}
		out.lookedUp = true
		return out, nil
	default:
		return nil, fail(ReasonUnsupported, nil, "the request names no source")
	}
	return r.bundle(in, objs, hooks, out)
}

// loadChart loads the chart a HelmSource names.
func (r *Renderer) loadChart(ctx context.Context, h *events.HelmSource) (*chart.Chart, error) {
	switch {
	case h.Path != "":
		dir, err := r.roots.confine("helm.path", h.Path)
		if err != nil {
			return nil, err
		}
		if link := r.roots.linkOut(dir); link != "" {
			return nil, fail(ReasonSourceNotAllowed, nil, "helm.path %s: %s is a link out of the renderer's source roots", h.Path, link)
		}
		ch, err := loader.Load(dir)
		if err != nil {
			return nil, fail(ReasonNotAChart, err, "chart %s is not a valid Helm chart", h.Path)
		}
		return ch, nil
	case h.Object != "":
		return r.loadCached(h.Object, func() (*chart.Chart, error) {
			data, err := r.fetchSource(ctx, h.Object)
			if err != nil {
				return nil, err
			}
			ch, err := loader.LoadArchive(bytes.NewReader(data))
			if err != nil {
				return nil, fail(ReasonNotAChart, err, "uploaded chart %s is not a valid Helm chart archive", h.Object)
			}
			return ch, nil
		})
	case h.OCI != "":
		return r.pullOCI(ctx, h)
	case h.RepoURL != "":
		return r.pullRepo(ctx, h)
	}
	return nil, fail(ReasonUnsupported, nil, "helm source names no chart")
}

func (r *Renderer) fetchSource(ctx context.Context, digest string) ([]byte, error) {
	if r.opts.Sources == nil {
		return nil, fail(ReasonSourceNotFound, nil, "source %s: this renderer has no sources object store", digest)
	}
	rc, err := r.opts.Sources(ctx, digest)
	if errors.Is(err, events.ErrNotFound) {
		return nil, fail(ReasonSourceNotFound, nil, "source %s is not in the sources object store (upload it first)", digest)
	}
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "source %s", digest)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, int64(r.opts.MaxSourceSize)+1))
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "read source %s", digest)
	}
	if len(data) > r.opts.MaxSourceSize {
		return nil, fail(ReasonSourceTooLarge, nil, "source %s is larger than the renderer's limit of %d bytes", digest, r.opts.MaxSourceSize)
	}
	return data, nil
}

// LabelValuesFrom marks the Secrets and ConfigMaps a request's valuesFrom may read: the
// namespace's owner opts each one in, so that whoever may publish a request cannot read any
// Secret the renderer can.
const LabelValuesFrom = "troupe.dev/values-from"

// valuesFrom reads the values ref names from the release's namespace in the cluster: an object
// labelled LabelValuesFrom=true. Errors name the object and key, never what they hold, and say
// the same of an object that is missing and of one not labelled.
func (r *Renderer) valuesFrom(ctx context.Context, namespace string, ref events.ValuesFrom) (map[string]any, error) {
	what := fmt.Sprintf("valuesFrom %s %s/%s key %s", ref.Kind, namespace, ref.Name, ref.ValuesKey())
	if r.opts.Kube == nil {
		return nil, fail(ReasonUnsupported, nil, "%s: this renderer does not reach the cluster (start it with --kubeconfig)", what)
	}
	var data []byte
	var found bool
	var err error
	switch ref.Kind {
	case "Secret":
		var s *corev1.Secret
		if s, err = r.opts.Kube.CoreV1().Secrets(namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil && s.Labels[LabelValuesFrom] == "true" {
			data, found = s.Data[ref.ValuesKey()]
		}
	case "ConfigMap":
		var cm *corev1.ConfigMap
		if cm, err = r.opts.Kube.CoreV1().ConfigMaps(namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil && cm.Labels[LabelValuesFrom] == "true" {
			var str string
			str, found = cm.Data[ref.ValuesKey()]
			data = []byte(str)
		}
	default:
		return nil, fail(ReasonInvalidValues, nil, "%s: kind is Secret or ConfigMap", what)
	}
	switch {
	case apierrors.IsNotFound(err) || (err == nil && !found):
		if ref.Optional {
			return map[string]any{}, nil
		}
		return nil, fail(ReasonSourceNotFound, nil, "%s: not found, or not labelled %s=true", what, LabelValuesFrom)
	case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
		return nil, fail(ReasonAuthDenied, nil, "%s: the renderer may not read it (RBAC)", what)
	case err != nil:
		return nil, fail(ReasonSourceUnreachable, err, "%s", what)
	}
	v := map[string]any{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fail(ReasonInvalidValues, nil, "%s: not a YAML map of values", what) // the parser's error may quote it
	}
	return v, nil
}

// mergeValues merges values as Helm does: valuesFrom in order (read from the cluster), then
// values files in order, then inline values, then each --set, in order; it returns those from
// the cluster and the request's own (user) apart, the latter to be merged over the former. A
// values file is parsed once for its content: the same file comes with request after request,
// other values and revisions with it.
func (r *Renderer) mergeValues(ctx context.Context, in Input) (fromCluster, user map[string]any, err error) {
	req := in.Request
	fromCluster = map[string]any{}
	for _, ref := range req.ValuesFrom {
		v, err := r.valuesFrom(ctx, in.Release.Namespace, ref)
		if err != nil {
			return nil, nil, err
		}
		fromCluster = loader.MergeMaps(fromCluster, v)
	}
	base := map[string]any{}
	for _, f := range req.ValuesFiles {
		sum := sha256.Sum256([]byte(f.Content))
		key := string(sum[:])
		v, ok := r.values.get(key)
		if !ok {
			v = map[string]any{}
			if err := yaml.Unmarshal([]byte(f.Content), &v); err != nil {
				return nil, nil, fail(ReasonInvalidValues, err, "values file %s is not valid YAML", f.Name)
			}
			r.values.put(key, v)
		}
		base = loader.MergeMaps(base, copyValues(v)) // merging and --set change maps in place
	}
	if len(req.Values) > 0 {
		// A JSON round trip turns the event's numbers and nesting into what Helm reads from YAML.
		b, _ := json.Marshal(req.Values)
		v := map[string]any{}
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, nil, fail(ReasonInvalidValues, err, "inline values")
		}
		base = loader.MergeMaps(base, v)
	}
	for i, s := range req.Set {
		if err := strvals.ParseInto(s, base); err != nil {
			// The event is kept for weeks and read by many: name the key, never the value.
			key, value, _ := strings.Cut(s, "=")
			msg := err.Error()
			if value != "" {
				msg = strings.ReplaceAll(msg, value, "…")
			}
			return nil, nil, fail(ReasonInvalidValues, nil, "--set #%d (%s=…): %s", i+1, key, msg)
		}
	}
	return fromCluster, base, nil
}

type chartResult struct {
	objects  []object
	hooks    []hook
	notes    string
	lookedUp bool
}

// renderChart renders ch as Helm's install and upgrade actions do, without a cluster: the same
// steps, in the same order, with the same Helm functions — subchart conditions and imports,
// values merged with the chart's and checked against values.schema.json, .Release and
// .Capabilities, the template engine, NOTES.txt of the top chart, manifests sorted from hooks.
// Unlike Helm's install action it sets .Release.Revision and .Release.IsUpgrade from the revision,
// and lookup reads the target cluster as under `helm upgrade` (see lookup.go).
// CRDs from crds/ come first, marked as such; hooks are kept apart; test hooks are dropped. A
// test holds this to what Helm's install action gives for the fixture charts.
func (r *Renderer) renderChart(ctx context.Context, ch *chart.Chart, vals map[string]any, in *pass) (*chartResult, error) {
	if ch.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, in.caps.KubeVersion.String()) {
		return nil, fail(ReasonKubeVersion, nil, "chart %s requires Kubernetes %s, the cluster runs %s",
			ch.Metadata.Name, ch.Metadata.KubeVersion, in.caps.KubeVersion.String())
	}
	if err := chartutil.ProcessDependencies(ch, vals); err != nil {
		return nil, fail(ReasonNotAChart, err, "chart %s: dependencies", ch.Metadata.Name)
	}
	options := common.ReleaseOptions{Name: in.Release.Name, Namespace: in.Release.Namespace,
		Revision: max(in.Revision, 1), IsInstall: in.Revision <= 1, IsUpgrade: in.Revision > 1}
	toRender, err := util.ToRenderValuesWithSchemaValidation(ch, vals, options, in.caps, false)
	if err != nil {
		return nil, classifyHelmError(ch, err)
	}
	engine := helmengine.Engine{}
	lookups := r.lookups(ctx, in)
	if lookups != nil {
		engine = helmengine.WithClientProvider(lookups)
	}
	files, err := engine.RenderCached(ctx, r.templates, ch, toRender)
	if err := lookups.transient(); err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "chart %s: lookup", ch.Metadata.Name)
	}
	if err != nil {
		return nil, classifyHelmError(ch, err)
	}
	res := &chartResult{lookedUp: lookups != nil && lookups.used.Load()}
	topNotes := path.Join(ch.Name(), "templates", "NOTES.txt")
	for name, body := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			if name == topNotes {
				res.notes = body
			}
			delete(files, name)
		}
	}
	for _, crd := range ch.CRDObjects() {
		if h := in.Request.Source.Helm; h != nil && h.SkipCRDs {
			break // --skip-crds
		}
		docs, err := parseDocs(crd.Filename, string(crd.File.Data))
		if err != nil {
			return nil, err
		}
		res.objects = append(res.objects, docs...)
	}
	if err := splitChartOutput(files, res); err != nil {
		return nil, err
	}
	return res, nil
}

// classifyHelmError maps Helm's errors onto reason codes; Helm's message already names the
// template file and line.
func classifyHelmError(ch *chart.Chart, err error) *events.Error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "values don't meet the specifications of the schema"):
		return fail(ReasonValuesSchema, err, "values of chart %s do not match its values.schema.json", ch.Metadata.Name)
	case strings.Contains(msg, "chart requires kubeVersion"):
		return fail(ReasonKubeVersion, err, "chart %s", ch.Metadata.Name)
	case strings.Contains(msg, "YAML parse error"), strings.Contains(msg, "unable to build kubernetes objects"):
		return fail(ReasonInvalidOutput, err, "chart %s rendered invalid YAML", ch.Metadata.Name)
	case strings.Contains(msg, "found in Chart.yaml, but missing in charts/ directory"):
		return fail(ReasonNotAChart, err, "chart %s", ch.Metadata.Name)
	default:
		return fail(ReasonTemplateError, err, "chart %s", ch.Metadata.Name)
	}
}

// sortObjects orders objects for applying: CRDs from crds/ first, then Helm's install order by
// kind, then namespace and name.
func sortObjects(objs []object) {
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.crd != b.crd {
			return a.crd
		}
		if ra, rb := kindRank(a.ref.Kind), kindRank(b.ref.Kind); ra != rb {
			return ra < rb
		}
		if a.ref.Kind != b.ref.Kind {
			return a.ref.Kind < b.ref.Kind
		}
		if a.ref.APIVersion != b.ref.APIVersion {
			return a.ref.APIVersion < b.ref.APIVersion
		}
		if a.ref.Namespace != b.ref.Namespace {
			return a.ref.Namespace < b.ref.Namespace
		}
		return a.ref.Name < b.ref.Name
	})
}

// installRank is each kind's place in Helm's install order, from 1.
var installRank = func() map[string]int {
	rank := map[string]int{}
	for i, k := range releaseutil.InstallOrder {
		rank[k] = i + 1
	}
	return rank
}()

// kindRank is kind's place in Helm's install order; kinds Helm does not list come last.
func kindRank(kind string) int {
	if r, ok := installRank[kind]; ok {
		return r
	}
	return len(installRank) + 1
}
