package render

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Discover connects o to the target cluster at cfg: .Capabilities (its version and API versions,
// as `helm upgrade` sees them), which kinds are namespaced, valuesFrom and the charts' lookup
// function all read it. What discovery says is read again whenever a CustomResourceDefinition or
// an APIService changes (a watch on both) and at least every five minutes, so a chart checking
// .Capabilities.APIVersions sees a CRD another release installed a moment ago. It returns an
// error when the cluster cannot be reached now; o is connected all the same and renders use
// o.KubeVersion and the built-in kind table until the cluster answers. The watch stops with ctx.
func Discover(ctx context.Context, cfg *rest.Config, o *Options) error {
	c, err := newCluster(cfg)
	if err != nil {
		return fmt.Errorf("discover %s: %w", cfg.Host, err)
	}
	if o.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("discover %s: %w", cfg.Host, err)
	}
	o.Cluster = c
	_, err = c.refresh(ctx)
	c.watch(ctx)
	return err
}

// Cluster is the target cluster as renders see it: what API discovery says (kept fresh) and a
// dynamic client for lookup. Make one with Discover.
type Cluster struct {
	host   string
	disco  discovery.DiscoveryInterface
	dyn    dynamic.Interface
	meta   metadata.Interface
	stale  atomic.Bool                 // a CRD or APIService changed since view was read
	view   atomic.Pointer[clusterView] // nil until discovery first answers
	mu     sync.Mutex                  // one refresh at a time
	tried  time.Time                   // the last refresh that failed, under mu
	maxAge time.Duration               // how long a view is trusted without a watch event
}

// clusterView is one discovery read: .Capabilities and each kind's resource and scope.
type clusterView struct {
	caps  *common.Capabilities
	kinds map[string]apiKind // by apiVersion + " " + kind
	read  time.Time
}

type apiKind struct {
	resource   schema.GroupVersionResource
	namespaced bool
}

const (
	viewMaxAge      = 5 * time.Minute  // with a watch on CRDs and APIServices
	viewMaxAgeBlind = 15 * time.Second // when the renderer may not watch them
	refreshBackoff  = 10 * time.Second // between failed refreshes
)

func newCluster(cfg *rest.Config) (*Cluster, error) {
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	meta, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Cluster{host: cfg.Host, disco: disco, dyn: dyn, meta: meta, maxAge: viewMaxAge}, nil
}

// current returns what discovery says now: the last read, read again first when something
// changed or it is old. When the cluster does not answer, the last read stands (nil before the
// first); a failed read is tried again at most every refreshBackoff.
func (c *Cluster) current(ctx context.Context) *clusterView {
	v := c.view.Load()
	if v != nil && !c.stale.Load() && time.Since(v.read) < c.maxAge {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v = c.view.Load(); v != nil && !c.stale.Load() && time.Since(v.read) < c.maxAge {
		return v // another render read it meanwhile
	}
	if time.Since(c.tried) < refreshBackoff {
		return v
	}
	if nv, err := c.refresh(ctx); err == nil {
		return nv
	}
	c.tried = time.Now()
	return v
}

// refresh reads discovery once, for both the API versions and the scopes, so they agree.
func (c *Cluster) refresh(ctx context.Context) (*clusterView, error) {
	c.stale.Store(false) // before reading: a change during the read marks it stale again
	v, err := c.disco.ServerVersion()
	if err != nil {
		c.stale.Store(true)
		return nil, fmt.Errorf("discover %s: server version: %w", c.host, err)
	}
	groups, lists, err := c.disco.ServerGroupsAndResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		c.stale.Store(true)
		return nil, fmt.Errorf("discover %s: resources: %w", c.host, err)
	}
	kv, err := common.ParseKubeVersion(v.GitVersion)
	if err != nil {
		c.stale.Store(true)
		return nil, fmt.Errorf("discover %s: version %q: %w", c.host, v.GitVersion, err)
	}
	// .Capabilities.APIVersions as Helm builds them: every group/version, and group/version/Kind.
	seen := map[string]bool{}
	var versions []string
	add := func(v string) {
		if !seen[v] {
			seen[v] = true
			versions = append(versions, v)
		}
	}
	for _, g := range groups {
		for _, gv := range g.Versions {
			add(gv.GroupVersion)
		}
	}
	kinds := map[string]apiKind{}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			add(l.GroupVersion + "/" + r.Kind) // subresources' kinds too (apps/v1/Scale), as Helm lists them
			if strings.Contains(r.Name, "/") {
				continue // a subresource: not what lookup reads
			}
			kinds[l.GroupVersion+" "+r.Kind] = apiKind{resource: gv.WithResource(r.Name), namespaced: r.Namespaced}
		}
	}
	sort.Strings(versions)
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kv
	caps.APIVersions = append(caps.APIVersions, versions...)
	view := &clusterView{caps: caps, kinds: kinds, read: time.Now()}
	c.view.Store(view)
	return view, nil
}

// watch marks the view stale whenever a CustomResourceDefinition or an APIService is added,
// changed (a CRD becoming Established, a version added) or deleted. Metadata is enough to know
// that something changed. Without permission to list them, views are read again every
// viewMaxAgeBlind instead.
func (c *Cluster) watch(ctx context.Context) {
	gvrs := []schema.GroupVersionResource{
		{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"},
		{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"},
	}
	for _, gvr := range gvrs {
		_, err := c.meta.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if err != nil {
			// Forbidden, or the cluster is not there yet: no watch (an informer would log its
			// failures for ever); a shorter trust in each view does the watch's work.
			c.maxAge = viewMaxAgeBlind
			return
		}
	}
	f := metadatainformer.NewSharedInformerFactory(c.meta, 0)
	mark := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.stale.Store(true) },
		UpdateFunc: func(any, any) { c.stale.Store(true) },
		DeleteFunc: func(any) { c.stale.Store(true) },
	}
	for _, gvr := range gvrs {
		if _, err := f.ForResource(gvr).Informer().AddEventHandler(mark); err != nil {
			c.maxAge = viewMaxAgeBlind
			return
		}
	}
	f.Start(ctx.Done())
}

// kind returns how apiVersion/kind is served: its resource and scope.
func (v *clusterView) kind(apiVersion, kind string) (apiKind, bool) {
	if v == nil {
		return apiKind{}, false
	}
	k, ok := v.kinds[apiVersion+" "+kind]
	return k, ok
}
