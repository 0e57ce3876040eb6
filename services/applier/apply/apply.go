package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/troupe-dev/troupe/events"
)

// Labels and annotations troupe puts on every object it applies.
const (
	LabelManagedBy        = "app.kubernetes.io/managed-by"
	ManagedBy             = "troupe"
	LabelRelease          = "troupe.dev/release"
	LabelReleaseNamespace = "troupe.dev/release-namespace"
	// AnnotationRevision is the revision that last changed the object's manifest.
	AnnotationRevision = "troupe.dev/revision"
	// AnnotationKeep set to "true" keeps an object when it leaves the bundle or the release is
	// uninstalled. Helm's own helm.sh/resource-policy: keep does the same.
	AnnotationKeep     = "troupe.dev/keep"
	annotationHelmKeep = "helm.sh/resource-policy"
)

// Options configure an Applier. Zero values take the defaults named on each field.
type Options struct {
	// FieldManager is the server-side apply field manager. Default "troupe".
	FieldManager string
	// Concurrency bounds the API requests the Applier has in flight, all releases together: what
	// the API server is asked to bear. A release's requests of one phase (its dry runs, then
	// each stage's applies) are all issued at once within it, so releases applied side by side
	// keep the server busy without waiting on each other's slowest request. Default 64.
	Concurrency int
	// AllowNamespaces, when set, are the only namespaces the applier touches.
	AllowNamespaces []string
	// DenyClusterScoped refuses cluster-scoped objects (CRDs, ClusterRoles, Namespaces…).
	DenyClusterScoped bool
	// AllowAdopt honours a request's options.adopt: taking over objects that exist and belong
	// to another release or to none. Off, such a request fails (adopt_not_allowed): anyone who
	// may publish a request could otherwise take any object over.
	AllowAdopt bool
	// ImpersonateServiceAccount, when set, makes every request for a release run as this
	// service account of the release's namespace (system:serviceaccount:<namespace>:<name>), so
	// a release can do no more than that account may.
	ImpersonateServiceAccount string
	// CRDTimeout bounds the wait for a bundle's CRDs to be Established. Default 60s.
	CRDTimeout time.Duration
	// NoHookLogs keeps a failed hook's container log out of release.failed, unless its chart
	// asks for it (helm.sh/hook-output-log-policy: hook-failed). By default the last lines are
	// in the message: anyone who may read the release's events reads them.
	NoHookLogs bool
}

// Applier applies bundles to one cluster with server-side apply. It is safe for concurrent use;
// different releases apply in parallel.
type Applier struct {
	opts    Options
	cfg     *rest.Config
	mapper  *restmapper.DeferredDiscoveryRESTMapper
	dynamic dynamic.Interface

	inflight chan struct{} // Concurrency tokens

	mu      sync.Mutex
	clients map[string]dynamic.Interface // by impersonated namespace
	conns   map[string]*conn             // by impersonated namespace ("": the applier's own)
}

// New returns an Applier for the cluster cfg reaches.
func New(cfg *rest.Config, o Options) (*Applier, error) {
	if o.FieldManager == "" {
		o.FieldManager = ManagedBy
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 64
	}
	if o.CRDTimeout <= 0 {
		o.CRDTimeout = 60 * time.Second
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("applier: discovery: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("applier: %w", err)
	}
	return &Applier{opts: o, cfg: cfg, dynamic: dyn, clients: map[string]dynamic.Interface{}, conns: map[string]*conn{},
		inflight: make(chan struct{}, o.Concurrency),
		mapper:   restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Request is one revision to apply, diff or delete.
type Request struct {
	Release  events.Release
	Revision int
	// Objects are the bundle's objects, in the bundle's order.
	Objects []map[string]any
	// Previous is what the release's last applied revision left in the cluster, if any.
	Previous []Object
	// Pending are objects a revision may have applied without its inventory being recorded
	// (its process was killed): pruned like Previous's when the bundle no longer has them, but
	// not taken for the release's own (an existing one's owner is checked), as they may never
	// have been applied.
	Pending []events.ObjectRef
	Options events.Options
	// Intent, when set, is called once the objects are validated, before the first change to
	// the cluster, with every object Apply is about to apply (namespaces defaulted); an error
	// stops Apply there. The caller records them, so that however Apply is interrupted (a
	// crash) a later revision or an uninstall finds what it applied. An object of a kind the
	// bundle's own CRDs define is given both in the release's namespace and cluster-scoped
	// when its manifest names no namespace: its scope is known only once the CRD exists.
	Intent func(ctx context.Context, objects []events.ObjectRef) error
	// Hooks are the chart's hooks of this revision's pre phase (pre-install, pre-upgrade or
	// pre-rollback, HookPhase), in the order Helm runs them: checked with the objects before
	// anything changes, run after the CRDs and Namespaces are applied and before every other
	// object (see runHooks). Hooks are not inventory: never pruned, never in Result.Objects.
	Hooks     []events.BundleHook
	HookPhase string
	// HookDeadline, when set, is how long a hook may run: the revision's deadline.
	HookDeadline time.Time
	// HooksRan, when set, is called with what the hooks did once every one succeeded, before
	// the other objects are applied; an error stops Apply there.
	HooksRan func(ctx context.Context, runs []events.HookRun) error
}

// Object is one object of an inventory: where it is, a digest of the manifest troupe applied,
// and the revision that last changed that manifest.
type Object struct {
	events.ObjectRef
	Hash     string `json:"hash,omitempty"`
	Revision int    `json:"revision,omitempty"`
	// HandOver are field managers whose fields the next apply hands to troupe's first (an
	// object adopted from Helm: Adopt).
	HandOver []string `json:"handOver,omitempty"`
}

// Result is what Apply did.
type Result struct {
	// Inventory is every object of the revision, in apply order, with what applying did:
	// created (it did not exist), configured (its manifest differs from the previous
	// revision's, or it was not the release's before), unchanged (the previous revision applied
	// the same manifest; applying it again only undoes drift, if any).
	Inventory []events.AppliedObject
	// Objects is the new inventory, to give the next revision as Previous.
	Objects []Object
	// Pruned are the previous revision's objects deleted because the bundle no longer has them.
	Pruned []events.ObjectRef
	// Kept are the previous revision's objects the bundle no longer has but that stay: annotated
	// to be kept, CRDs (never pruned: deleting one deletes every custom resource of its kind),
	// or taken over by another release meanwhile.
	Kept []events.ObjectRef
	// Hooks is what the request's hooks did, in the order they ran (a failed one last).
	Hooks []events.HookRun
}

// item is one object of a request on its way to the cluster.
type item struct {
	ref       events.ObjectRef
	obj       *unstructured.Unstructured // what is applied: the manifest with troupe's metadata
	hash      string
	revision  int // the revision that last changed the manifest
	gvr       schema.GroupVersionResource
	namespced bool
	deferred  bool   // its kind comes from a CRD of the bundle not yet established
	body      []byte // obj as JSON, encoded once for the dry run and the apply
	// lead: applied first, with no dry run of its own (see markLead)
	lead bool
	// known: the previous revision applied it (so it is the release's own)
	known bool
	// sameManifest: the previous revision applied this very manifest (hash and revision kept)
	sameManifest bool
	action       string
	// handOver are field managers whose fields are handed to troupe's before the apply
	// (Object.HandOver).
	handOver []string
}

// Apply applies req: every object validated by a server-side dry run first (objects of kinds
// defined by the bundle's own CRDs once those are Established), but the lead (markLead), applied
// alone before any other, so that a bundle with an invalid object changes nothing; then CRDs
// and Namespaces, a wait until the CRDs are Established, then the other cluster-scoped objects,
// then the namespaced ones; then the previous revision's objects the bundle no longer has are
// pruned (unless options.prune is false). Every error is an *Error; on one, the Result still
// lists what was applied before it (Objects), for the caller to remember.
func (a *Applier) Apply(ctx context.Context, req Request) (res *Result, err error) {
	res = &Result{}
	items, err := a.prepare(req)
	if err != nil {
		return nil, err
	}
	hooks, err := a.prepareHooks(req)
	if err != nil {
		return nil, err
	}
	validated, createdNamespace := false, false
	if req.Options.CreateNamespace {
		if a.opts.DenyClusterScoped {
			return nil, &Error{Reason: ReasonNamespaceNotAllowed, Objects: []ObjectError{{Ref: events.ObjectRef{APIVersion: "v1", Kind: "Namespace", Name: req.Release.Namespace},
				Message: "createNamespace: this applier does not apply cluster-scoped objects"}}}
		}
		if !a.namespaceAllowed(req.Release.Namespace) {
			return nil, &Error{Reason: ReasonNamespaceNotAllowed, Objects: []ObjectError{{Ref: events.ObjectRef{APIVersion: "v1", Kind: "Namespace", Name: req.Release.Namespace},
				Message: fmt.Sprintf("createNamespace: namespace %s is not on this applier's allowlist", req.Release.Namespace)}}}
		}
		created, err := a.createNamespace(ctx, req.Release)
		if err != nil {
			return nil, err
		}
		createdNamespace = created
		if created {
			// Made only so that the objects in it could be dry-run: it goes if they fail.
			defer func() {
				if !validated {
					a.deleteNamespace(context.WithoutCancel(ctx), req.Release)
				}
			}()
		}
	}
	var crds, first, cluster, namespaced []*item
	for _, it := range items {
		switch {
		case isCRD(it.ref) || (it.ref.APIVersion == "v1" && it.ref.Kind == "Namespace"):
			first = append(first, it)
			if isCRD(it.ref) {
				crds = append(crds, it)
			}
		case !it.namespced && !it.deferred:
			cluster = append(cluster, it)
		default:
			namespaced = append(namespaced, it)
		}
	}
	if !createdNamespace {
		markLead(first, cluster, namespaced, len(hooks) > 0)
	}
	// Each stage in a span of its own (events.Stage), under the handler's: where a revision's
	// time goes, in its trace.
	if err := events.Stage(ctx, "apply validate", func(ctx context.Context) error { return a.validate(ctx, req, items, false) }); err != nil {
		return nil, err
	}
	validated = true
	if req.Intent != nil {
		if err := req.Intent(ctx, intent(req.Release, items)); err != nil {
			return nil, err
		}
	}
	applied := func() *Result {
		for _, it := range items {
			if it.action != "" {
				res.Objects = append(res.Objects, Object{ObjectRef: it.ref, Hash: it.hash, Revision: it.revision})
			}
		}
		return res
	}

	// The lead first of all, alone: until its apply succeeds, nothing has changed.
	applyGroup := func(ctx context.Context, group []*item) error {
		if i := slices.IndexFunc(group, func(it *item) bool { return it.lead }); i >= 0 {
			if err := a.applyAll(ctx, req.Release, group[i:i+1]); err != nil {
				return err
			}
			group = slices.Delete(slices.Clone(group), i, i+1)
		}
		return a.applyAll(ctx, req.Release, group)
	}
	if err := events.Stage(ctx, "apply crds and namespaces", func(ctx context.Context) error {
		if err := applyGroup(ctx, first); err != nil {
			return err
		}
		if len(crds) == 0 {
			return nil
		}
		return a.waitEstablished(ctx, req.Release, crds)
	}); err != nil {
		return applied(), err
	}
	if len(crds) > 0 {
		a.mapper.Reset()
		var later []*item
		for _, it := range namespaced {
			if it.deferred {
				later = append(later, it)
			}
		}
		if len(later) > 0 {
			if err := a.resolve(later); err != nil {
				return applied(), err
			}
			if err := a.validate(ctx, req, later, true); err != nil {
				return applied(), err
			}
			// Custom resources of cluster-scoped kinds go with the other cluster-scoped objects.
			var ns []*item
			for _, it := range namespaced {
				if it.namespced {
					ns = append(ns, it)
				} else {
					cluster = append(cluster, it)
				}
			}
			namespaced = ns
		}
	}
	if len(hooks) > 0 {
		runs, err := a.runHooks(ctx, req, hooks)
		res.Hooks = runs
		if err != nil {
			return applied(), err
		}
		if req.HooksRan != nil {
			if err := req.HooksRan(ctx, runs); err != nil {
				return applied(), err
			}
		}
	}
	if err := events.Stage(ctx, "apply cluster-scoped", func(ctx context.Context) error { return applyGroup(ctx, cluster) }); err != nil {
		return applied(), err
	}
	if err := events.Stage(ctx, "apply namespaced", func(ctx context.Context) error { return applyGroup(ctx, namespaced) }); err != nil {
		return applied(), err
	}
	for _, it := range items {
		res.Inventory = append(res.Inventory, events.AppliedObject{ObjectRef: it.ref, Action: it.action})
	}
	applied()

	if req.Options.PruneEnabled() {
		current := map[events.ObjectRef]bool{}
		for _, it := range items {
			current[it.ref] = true
		}
		var gone []events.ObjectRef
		for _, o := range req.Previous {
			if !current[o.ObjectRef] {
				gone = append(gone, o.ObjectRef)
				current[o.ObjectRef] = true
			}
		}
		for _, ref := range req.Pending {
			if !current[ref] {
				gone = append(gone, ref)
				current[ref] = true
			}
		}
		err := events.Stage(ctx, "apply prune", func(ctx context.Context) (err error) {
			res.Pruned, res.Kept, err = a.Delete(ctx, req.Release, gone, false, AdoptedOf(req.Previous))
			return err
		})
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// intent lists what applying items may create: each item's object, both scopes of one whose
// kind is not resolved yet (see Request.Intent).
func intent(rel events.Release, items []*item) []events.ObjectRef {
	out := make([]events.ObjectRef, 0, len(items))
	for _, it := range items {
		out = append(out, it.ref)
		if it.deferred && it.ref.Namespace == "" {
			ref := it.ref
			ref.Namespace = rel.Namespace
			out = append(out, ref)
		}
	}
	return out
}

// prepare turns the bundle's objects into items: troupe's labels and annotations added, kinds
// mapped to resources, the namespace allowlist checked.
func (a *Applier) prepare(req Request) ([]*item, error) {
	if req.Options.Adopt && !a.opts.AllowAdopt {
		return nil, &Error{Reason: ReasonAdoptNotAllowed, Err: errors.New("options.adopt: this applier does not take objects over (started without --allow-adopt)")}
	}
	previous := map[events.ObjectRef]Object{}
	for _, o := range req.Previous {
		previous[o.ObjectRef] = o
	}
	bundleCRDs := map[schema.GroupKind]bool{} // kind → namespaced, of the bundle's own CRDs
	for _, m := range req.Objects {
		u := unstructured.Unstructured{Object: m}
		if isCRD(refOf(&u)) {
			group, _, _ := unstructured.NestedString(m, "spec", "group")
			kind, _, _ := unstructured.NestedString(m, "spec", "names", "kind")
			scope, _, _ := unstructured.NestedString(m, "spec", "scope")
			bundleCRDs[schema.GroupKind{Group: group, Kind: kind}] = scope != "Cluster"
		}
	}
	var errs []*Error
	items := make([]*item, 0, len(req.Objects))
	for _, m := range req.Objects {
		src := &unstructured.Unstructured{Object: m}
		it := &item{ref: refOf(src), revision: req.Revision}
		it.hash = hashOf(m)
		p, known := previous[it.ref]
		it.known, it.handOver = known, p.HandOver
		if known && p.Hash == it.hash && p.Revision > 0 {
			it.revision = p.Revision // unchanged manifest: the revision that last changed it stays
			it.sameManifest = true
		}
		it.obj = a.withMetadata(src, req.Release, it.revision)
		// Where the object lands is known once its kind is: a cluster-scoped kind loses any
		// namespace it was given, a namespaced one gets the release's. The allowlist and the
		// cluster-scoped switch are checked on that, not on what the bundle says.
		checked := it.ref
		if err := a.resolve([]*item{it}); err != nil {
			gk := schema.FromAPIVersionAndKind(it.ref.APIVersion, it.ref.Kind).GroupKind()
			namespaced, ours := bundleCRDs[gk]
			if e, ok := err.(*Error); !ok || e.Reason != ReasonUnknownKind || !ours {
				errs = append(errs, err.(*Error))
				continue
			}
			it.deferred = true // its CRD comes with the bundle: its scope is the CRD's
			if !namespaced {
				checked.Namespace = ""
			}
		} else {
			if it.namespced && it.ref.Namespace == "" {
				it.ref.Namespace = req.Release.Namespace
				it.obj.SetNamespace(req.Release.Namespace)
			}
			checked = it.ref
		}
		if err := a.allowed(req.Release, checked); err != nil {
			errs = append(errs, err)
			continue
		}
		items = append(items, it)
	}
	if e := merge(errs); e != nil {
		return nil, e
	}
	return items, nil
}

// allowed checks ref against the namespace allowlist and the cluster-scoped switch.
func (a *Applier) allowed(rel events.Release, ref events.ObjectRef) *Error {
	ns := ref.Namespace
	switch {
	case ns == "" && a.opts.DenyClusterScoped: // the release's own Namespace too: its labels set Pod Security
		return &Error{Reason: ReasonNamespaceNotAllowed, Objects: []ObjectError{{Ref: ref, Message: "this applier does not apply cluster-scoped objects"}}}
	case ns == "":
		ns = rel.Namespace
	}
	if !a.namespaceAllowed(ns) {
		return &Error{Reason: ReasonNamespaceNotAllowed, Objects: []ObjectError{{Ref: ref,
			Message: fmt.Sprintf("namespace %s is not on this applier's allowlist", ns)}}}
	}
	return nil
}

// namespaceAllowed reports whether ns is on the allowlist, or there is none.
func (a *Applier) namespaceAllowed(ns string) bool {
	return len(a.opts.AllowNamespaces) == 0 || slices.Contains(a.opts.AllowNamespaces, ns)
}

// resolve maps each item's kind to its resource and scope, asking discovery again once when a
// kind is unknown (a CRD may have just been created).
func (a *Applier) resolve(items []*item) error {
	var errs []*Error
	for _, it := range items {
		gvk := schema.FromAPIVersionAndKind(it.ref.APIVersion, it.ref.Kind)
		m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if meta.IsNoMatchError(err) {
			a.mapper.Reset()
			m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		}
		if err != nil {
			errs = append(errs, objectError(it.ref, err))
			continue
		}
		it.gvr, it.deferred = m.Resource, false
		it.namespced = m.Scope.Name() == meta.RESTScopeNameNamespace
		if !it.namespced && it.ref.Namespace != "" {
			it.ref.Namespace = ""
			it.obj.SetNamespace("")
			it.body = nil
		}
	}
	if e := merge(errs); e != nil {
		return e
	}
	return nil
}

// withMetadata returns a copy of src with troupe's labels and annotations.
func (a *Applier) withMetadata(src *unstructured.Unstructured, rel events.Release, revision int) *unstructured.Unstructured {
	obj := src.DeepCopy()
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[LabelManagedBy] = ManagedBy
	labels[LabelRelease] = rel.Name
	labels[LabelReleaseNamespace] = rel.Namespace
	obj.SetLabels(labels)
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[AnnotationRevision] = strconv.Itoa(revision)
	obj.SetAnnotations(annotations)
	return obj
}

// validate dry-runs every item that can be (not deferred ones, unless deferred is true: those
// are the custom resources checked once their CRDs exist) but the lead, and checks that an
// existing object belongs to the release (or options.adopt) — the lead's by reading it, unless
// the release knows it. Every failing object is reported, not only the first: when one fails,
// the lead is dry-run too.
func (a *Applier) validate(ctx context.Context, req Request, items []*item, deferred bool) error {
	var mu sync.Mutex
	var errs []*Error
	failed := func(it *item, err error) {
		mu.Lock()
		defer mu.Unlock()
		if e, ok := errors.AsType[*Error](err); ok {
			errs = append(errs, e)
		} else {
			errs = append(errs, objectError(it.ref, err))
		}
	}
	a.each(ctx, items, func(ctx context.Context, it *item) {
		if it.deferred && !deferred {
			return
		}
		exists := true // unless the dry run says it does not
		if !it.lead {
			rv, _, err := a.applyRaw(ctx, req.Release, it, true)
			if err != nil {
				failed(it, err)
				return
			}
			exists = rv != ""
		}
		// An adopted object (handOver) is checked too: another release may have taken the
		// same Helm release over, and applied first.
		if exists && (!it.known || len(it.handOver) > 0) && !req.Options.Adopt {
			if err := a.checkOwner(ctx, req.Release, it); err != nil {
				failed(it, err)
			}
		}
	})
	if i := slices.IndexFunc(items, func(it *item) bool { return it.lead }); len(errs) > 0 && i >= 0 {
		if _, _, err := a.applyRaw(ctx, req.Release, items[i], true); err != nil {
			failed(items[i], err)
		}
	}
	if e := merge(errs); e != nil {
		return e
	}
	return ctx.Err()
}

// ownerOf is the release troupe's labels say obj belongs to; zero when none.
func ownerOf(obj metav1.Object) events.Release {
	labels := obj.GetLabels()
	return events.Release{Namespace: labels[LabelReleaseNamespace], Name: labels[LabelRelease]}
}

// checkOwner fails when the existing object it names belongs to another release or to none.
func (a *Applier) checkOwner(ctx context.Context, rel events.Release, it *item) error {
	c, err := a.conn(rel)
	if err != nil {
		return objectError(it.ref, err)
	}
	// Its metadata only: the API server need not encode the rest, managed fields and all.
	live, err := c.meta.Resource(it.gvr).Namespace(it.ref.Namespace).Get(ctx, it.ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return objectError(it.ref, err)
	}
	owner := ownerOf(live)
	switch {
	case owner == rel:
		return nil // ours, though no inventory says so (e.g. a failed revision created it)
	case owner.Name == "" && len(it.handOver) > 0:
		return nil // taken over from Helm, not labelled yet
	case owner.Name == "":
		return &Error{Reason: ReasonOwnershipConflict, Objects: []ObjectError{{Ref: it.ref,
			Message: "exists and belongs to no release (set options.adopt to take it over)"}}}
	default:
		return &Error{Reason: ReasonOwnershipConflict, Objects: []ObjectError{{Ref: it.ref,
			Message: fmt.Sprintf("belongs to release %s (set options.adopt to take it over)", owner)}}}
	}
}

// markLead marks the item applied first, alone, with no dry run of its own, if one may be: the
// largest (the costliest dry run to spare) of the first objects to be applied — the CRDs and
// Namespaces, else, when no pre-phase hook runs before them, the cluster-scoped objects, else
// the namespaced ones (a stage's objects are applied in parallel, so which goes first within it
// is troupe's to choose) — but not one whose other managers' fields are handed over to troupe's
// first, a write of its own. Its apply validates it as strictly as the dry run would have, and
// until it succeeds nothing has changed: the API server stores nothing of an apply it rejects.
// Every other object is dry-run before it — but custom resources of the bundle's own CRDs, which
// are checked once those CRDs are Established, as without a lead — so a bundle with an invalid
// object still changes nothing. Whose it is, when the release does not know it, is read (its
// metadata only: a fraction of what a server-side dry run costs the API server). A Deployment
// and its Service take three requests instead of four once the release knows them, and on
// install a metadata read stands in for the Deployment's dry run: the dry runs were the largest
// part of what the applier asks of the API server beyond the applies themselves (make
// bench-scale).
func markLead(first, cluster, namespaced []*item, hooks bool) {
	var group []*item
	switch {
	case len(first) > 0:
		group = first
	case hooks: // they run before the other objects: no object may change before they do
		return
	case len(cluster) > 0:
		group = cluster
	default:
		group = namespaced
	}
	var it *item
	for _, c := range group {
		if len(c.handOver) > 0 || c.deferred || c.encode() != nil {
			continue // an unencodable one fails its dry run, saying why
		}
		if it == nil || len(c.body) > len(it.body) {
			it = c
		}
	}
	if it != nil {
		it.lead = true
	}
}

// applyAll applies items, in parallel, recording what each apply did.
func (a *Applier) applyAll(ctx context.Context, rel events.Release, items []*item) error {
	var mu sync.Mutex
	var errs []*Error
	a.each(ctx, items, func(ctx context.Context, it *item) {
		err, created := error(nil), false
		if len(it.handOver) > 0 {
			err = a.handOver(ctx, rel, it, it.handOver)
		}
		if err == nil {
			_, created, err = a.applyRaw(ctx, rel, it, false)
		}
		if err != nil {
			mu.Lock()
			errs = append(errs, err.(*Error))
			mu.Unlock()
			return
		}
		switch {
		case created:
			it.action = events.ActionCreated
		case it.sameManifest:
			it.action = events.ActionUnchanged
		default:
			it.action = events.ActionConfigured
		}
	})
	if e := merge(errs); e != nil {
		return e
	}
	return ctx.Err()
}

// createNamespace creates the release's namespace unless it exists; created says it did.
func (a *Applier) createNamespace(ctx context.Context, rel events.Release) (created bool, _ error) {
	ref := events.ObjectRef{APIVersion: "v1", Kind: "Namespace", Name: rel.Namespace}
	namespaces := a.client(rel).Resource(namespaceResource)
	_, err := namespaces.Get(ctx, rel.Namespace, metav1.GetOptions{})
	if err == nil {
		return false, nil
	}
	if !apierrors.IsNotFound(err) {
		return false, objectError(ref, err)
	}
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": rel.Namespace, "labels": map[string]any{LabelManagedBy: ManagedBy}}}}
	if _, err := namespaces.Create(ctx, ns, metav1.CreateOptions{FieldManager: a.opts.FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return false, objectError(ref, err)
	}
	return true, nil
}

func (a *Applier) deleteNamespace(ctx context.Context, rel events.Release) {
	_ = a.client(rel).Resource(namespaceResource).Delete(ctx, rel.Namespace, metav1.DeleteOptions{})
}

var namespaceResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// waitEstablished waits until every CRD of items is Established and its names accepted.
func (a *Applier) waitEstablished(ctx context.Context, rel events.Release, crds []*item) error {
	ctx, cancel := context.WithTimeout(ctx, a.opts.CRDTimeout)
	defer cancel()
	pending := slices.Clone(crds)
	for {
		var still []*item
		for _, it := range pending {
			live, err := a.client(rel).Resource(crdResource).Get(ctx, it.ref.Name, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				if ctx.Err() == nil {
					return objectError(it.ref, err)
				}
			}
			if err != nil || !established(live) {
				still = append(still, it)
			}
		}
		if len(still) == 0 {
			return nil
		}
		pending = still
		select {
		case <-ctx.Done():
			e := &Error{Reason: ReasonCRDNotEstablished, Err: ctx.Err()}
			for _, it := range still {
				e.Objects = append(e.Objects, ObjectError{Ref: it.ref, Message: fmt.Sprintf("not Established after %s", a.opts.CRDTimeout)})
			}
			return e
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	ok := map[string]bool{}
	for _, c := range conds {
		m, _ := c.(map[string]any)
		t, _ := m["type"].(string)
		s, _ := m["status"].(string)
		ok[t] = s == "True"
	}
	return ok["Established"] && ok["NamesAccepted"]
}

// client is the dynamic client requests for rel go through: the applier's own, or one
// impersonating the release namespace's service account.
func (a *Applier) client(rel events.Release) dynamic.Interface {
	if a.opts.ImpersonateServiceAccount == "" {
		return a.dynamic
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[rel.Namespace]; ok {
		return c
	}
	c, err := dynamic.NewForConfig(a.cfgFor(rel))
	if err != nil {
		return a.dynamic // cannot happen: the config is a copy of one that worked
	}
	a.clients[rel.Namespace] = c
	return c
}

// cfgFor is the client configuration for rel: the applier's, impersonating the release
// namespace's service account when so configured.
func (a *Applier) cfgFor(rel events.Release) *rest.Config {
	cfg := rest.CopyConfig(a.cfg)
	if a.opts.ImpersonateServiceAccount != "" {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + rel.Namespace + ":" + a.opts.ImpersonateServiceAccount}
	}
	return cfg
}

// each runs f for every item, each call holding one of the Applier's in-flight tokens, and
// returns when all are done; once ctx ends, the calls not started are skipped.
func (a *Applier) each(ctx context.Context, items []*item, f func(context.Context, *item)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Go(func() {
			select {
			case <-ctx.Done():
				return
			case a.inflight <- struct{}{}:
			}
			defer func() { <-a.inflight }()
			f(ctx, it)
		})
	}
	wg.Wait()
}

func refOf(u *unstructured.Unstructured) events.ObjectRef {
	return events.ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
}

func isCRD(r events.ObjectRef) bool {
	return r.Kind == "CustomResourceDefinition" && r.APIVersion == "apiextensions.k8s.io/v1"
}

// hashOf is a digest of a manifest (JSON with sorted keys).
func hashOf(m map[string]any) string {
	b, _ := json.Marshal(m)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// keep reports whether an object's annotations ask to keep it.
func keep(annotations map[string]string) bool {
	return annotations[AnnotationKeep] == "true" || annotations[annotationHelmKeep] == "keep"
}
