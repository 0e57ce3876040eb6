package render

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	chart "helm.sh/helm/v4/pkg/chart/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/troupe-dev/troupe/events"
)

// lookups is the cluster a chart's lookup function reads in one render: Helm's own lookup
// (internal/helmengine) over this provider, so `lookup` answers as under `helm upgrade` — an
// object, a list, or an empty map for one not there. It reads with the renderer's own RBAC and
// only gets and lists; a namespaced kind is read in the release's namespace only, unless
// Options.LookupAllNamespaces. A render that called lookup is never cached (Render).
type lookups struct {
	ctx     context.Context
	cluster *Cluster
	view    *clusterView
	release events.Release
	all     bool // Options.LookupAllNamespaces

	used        atomic.Bool
	mu          sync.Mutex
	unreachable error // the first lookup the cluster did not answer
}

// lookups returns the provider for in's render, or nil without a cluster (lookup then finds
// nothing, as in `helm template`).
func (r *Renderer) lookups(ctx context.Context, in *pass) *lookups {
	if r.opts.Cluster == nil {
		return nil
	}
	return &lookups{ctx: ctx, cluster: r.opts.Cluster, view: in.view, release: in.Release, all: r.opts.LookupAllNamespaces}
}

// GetClientFor is helmengine.ClientProvider's: the resource of apiVersion/kind, and its scope.
func (l *lookups) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	l.used.Store(true)
	k, ok := l.view.kind(apiVersion, kind)
	if !ok {
		// A kind another release just installed: read discovery again once (not for a view
		// just read: a chart probing for a kind the cluster lacks would read it every render).
		if l.view == nil || time.Since(l.view.read) > time.Second {
			l.cluster.stale.Store(true)
		}
		if v := l.cluster.current(l.ctx); v != nil {
			l.view = v
		}
		if k, ok = l.view.kind(apiVersion, kind); !ok {
			if l.view == nil {
				err := fmt.Errorf("lookup %s %s: the cluster has not answered API discovery", apiVersion, kind)
				l.failed(err)
				return nil, false, err
			}
			return nil, false, fmt.Errorf("lookup %s %s: the cluster serves no such kind", apiVersion, kind)
		}
	}
	return &confined{NamespaceableResourceInterface: l.cluster.dyn.Resource(k.resource), l: l, kind: kind,
		namespaced: k.namespaced, secrets: k.resource.Group == "" && k.resource.Resource == "secrets"}, k.namespaced, nil
}

// failed keeps the first error that says the cluster did not answer (rather than refused).
func (l *lookups) failed(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unreachable == nil {
		l.unreachable = err
	}
}

// transient returns the first lookup the cluster did not answer, if any: the render is tried
// again rather than failed for good.
func (l *lookups) transient() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.unreachable
}

// confined is a resource lookup reads: gets and lists in the namespaces it may read.
type confined struct {
	dynamic.NamespaceableResourceInterface
	l          *lookups
	kind       string
	namespaced bool
	secrets    bool // Secrets: only the release's own, or opted in, are read (readable)
}

func (c *confined) Namespace(ns string) dynamic.ResourceInterface {
	if c.l.all || ns == c.l.release.Namespace {
		return &reads{ResourceInterface: c.NamespaceableResourceInterface.Namespace(ns), l: c.l, secrets: c.secrets}
	}
	return &reads{l: c.l, refused: fmt.Errorf("lookup %s in namespace %q: the renderer reads only the release's namespace %q (renderer --lookup-all-namespaces)",
		c.kind, ns, c.l.release.Namespace)}
}

// Get and List without a namespace: cluster-scoped kinds, or every namespace of a namespaced one.
func (c *confined) Get(ctx context.Context, name string, o metav1.GetOptions, sub ...string) (*unstructured.Unstructured, error) {
	return c.cluster().Get(ctx, name, o, sub...)
}

func (c *confined) List(ctx context.Context, o metav1.ListOptions) (*unstructured.UnstructuredList, error) {
	return c.cluster().List(ctx, o)
}

func (c *confined) cluster() *reads {
	if c.namespaced && !c.l.all {
		return &reads{l: c.l, refused: fmt.Errorf("lookup %s in every namespace: the renderer reads only the release's namespace %q (renderer --lookup-all-namespaces)",
			c.kind, c.l.release.Namespace)}
	}
	return &reads{ResourceInterface: c.NamespaceableResourceInterface, l: c.l, secrets: c.secrets}
}

// reads passes gets and lists on, or refuses them; it notes errors that say the cluster did not
// answer. Lookup calls nothing else.
type reads struct {
	dynamic.ResourceInterface
	l       *lookups
	refused error
	secrets bool
}

func (r *reads) Get(ctx context.Context, name string, o metav1.GetOptions, sub ...string) (*unstructured.Unstructured, error) {
	if r.refused != nil {
		return nil, r.refused
	}
	obj, err := r.ResourceInterface.Get(ctx, name, o, sub...)
	r.note(err)
	if err == nil && r.secrets && !r.l.readable(obj) {
		return nil, fmt.Errorf("lookup Secret %s/%s: not release %s's: a chart reads the Secrets its release made (troupe's or Helm's labels say so) and those labelled %s=true",
			obj.GetNamespace(), obj.GetName(), r.l.release, LabelValuesFrom)
	}
	return obj, err
}

func (r *reads) List(ctx context.Context, o metav1.ListOptions) (*unstructured.UnstructuredList, error) {
	if r.refused != nil {
		return nil, r.refused
	}
	list, err := r.ResourceInterface.List(ctx, o)
	r.note(err)
	if err == nil && r.secrets {
		list.Items = slices.DeleteFunc(list.Items, func(s unstructured.Unstructured) bool { return !r.l.readable(&s) })
	}
	return list, err
}

// readable says whether a lookup may read the Secret obj: one the release made (troupe's
// labels name it, or Helm's annotations, for a release adopted from Helm), or one its
// namespace's owner opted in as valuesFrom's are. Whoever may publish a request must not read
// any Secret the renderer can (see valuesFrom).
func (l *lookups) readable(obj *unstructured.Unstructured) bool {
	labels, annotations := obj.GetLabels(), obj.GetAnnotations()
	ns := obj.GetNamespace()
	switch {
	case labels[LabelValuesFrom] == "true":
		return true
	case labels["troupe.dev/release"] == l.release.Name && labels["troupe.dev/release-namespace"] == l.release.Namespace && ns == l.release.Namespace:
		return true
	case annotations["meta.helm.sh/release-name"] == l.release.Name && annotations["meta.helm.sh/release-namespace"] == l.release.Namespace && ns == l.release.Namespace:
		return true
	}
	return false
}

// note keeps err when it says the cluster did not answer: not a refusal (forbidden, not found,
// invalid) but a timeout, an unavailable server, a connection that failed.
func (r *reads) note(err error) {
	if err == nil || apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsInvalid(err) || apierrors.IsMethodNotSupported(err) {
		return
	}
	r.l.failed(err)
}

// readsRevision says whether ch (its templates, values and those of its dependencies) or req's
// values may read .Release.Revision: such a render is cached for its revision only. Any
// "Revision" in them counts, a template's or a string tpl renders, and .Release taken whole
// (`.Release | toYaml`).
func readsRevision(ch *chart.Chart, req events.Requested) bool {
	word := []byte("Revision")
	if wholeRelease.MatchString(string(jsonOf(req))) {
		return true
	}
	var walk func(c *chart.Chart) bool
	walk = func(c *chart.Chart) bool {
		for _, f := range c.Raw { // every file the loader read: templates and values too
			if bytes.Contains(f.Data, word) || wholeRelease.Match(f.Data) {
				return true
			}
		}
		for _, d := range c.Dependencies() {
			if walk(d) {
				return true
			}
		}
		return false
	}
	if walk(ch) {
		return true
	}
	return bytes.Contains(jsonOf(req), word)
}

// wholeRelease matches .Release used as a whole, not one field of it.
var wholeRelease = regexp.MustCompile(`\.Release\b[^.]`)

// jsonOf is what of req's values tpl could render.
func jsonOf(req events.Requested) []byte {
	b, _ := json.Marshal(struct {
		V any      `json:"v"`
		F any      `json:"f"`
		S []string `json:"s"`
	}{req.Values, req.ValuesFiles, req.Set})
	return b
}
