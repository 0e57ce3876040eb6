package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Size limits. Events stay small: large content (bundles, charts, big values) lives in the object
// store and events carry its digest.
const (
	// MaxDataSize bounds an event's data.
	MaxDataSize = 512 << 10
	// MaxObjects bounds every object list of a payload.
	MaxObjects = 10000
	// MaxMessageLength bounds free-text fields (messages, reasons, diffs of one object).
	MaxMessageLength = 32 << 10
	// MaxNotesLength bounds a chart's rendered NOTES.txt.
	MaxNotesLength = 64 << 10
	// MaxTimeout bounds a release's timeout.
	MaxTimeout = 24 * time.Hour
)

// Stages name where a release failed or was superseded.
const (
	StageRequest   = "request"
	StageRender    = "render"
	StageApply     = "apply"
	StageHealth    = "health"
	StageRollback  = "rollback"
	StageUninstall = "uninstall"
	// StageHook: a chart's hook failed, or could not be run.
	StageHook = "hook"
	// StageGate: a gate the release requires rejected the revision, or gave no verdict in time.
	StageGate = "gate"
)

// Hook phases: when a chart's hooks run, in Helm's words (the helm.sh/hook annotation's).
const (
	HookPreInstall   = "pre-install"
	HookPostInstall  = "post-install"
	HookPreUpgrade   = "pre-upgrade"
	HookPostUpgrade  = "post-upgrade"
	HookPreRollback  = "pre-rollback"
	HookPostRollback = "post-rollback"
	HookPreDelete    = "pre-delete"
	HookPostDelete   = "post-delete"
)

// PostPhase is the phase that follows pre, once the objects are ready (post-install after
// pre-install, …); "" for another phase.
func PostPhase(pre string) string {
	switch pre {
	case HookPreInstall:
		return HookPostInstall
	case HookPreUpgrade:
		return HookPostUpgrade
	case HookPreRollback:
		return HookPostRollback
	}
	return ""
}

// Hook results.
const (
	HookSucceeded = "succeeded"
	HookFailed    = "failed"
)

var (
	stages      = []string{StageRequest, StageRender, StageApply, StageHealth, StageRollback, StageUninstall, StageHook, StageGate}
	hookPhases  = []string{HookPreInstall, HookPostInstall, HookPreUpgrade, HookPostUpgrade, HookPreRollback, HookPostRollback, HookPreDelete, HookPostDelete}
	hookResults = []string{HookSucceeded, HookFailed}
	postPhases  = []string{HookPostInstall, HookPostUpgrade, HookPostRollback}
	digestRE    = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	reasonRE    = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	applyAction = []string{ActionCreated, ActionConfigured, ActionUnchanged}
	diffAction  = []string{ActionCreate, ActionUpdate, ActionUnchanged, ActionPrune}
	statuses    = []string{StatusInProgress, StatusCurrent, StatusFailed, StatusTerminating, StatusNotFound, StatusUnknown}
)

// Object statuses: kstatus's words (github.com/fluxcd/cli-utils/pkg/kstatus/status), as
// ObjectStatus.Status carries them.
const (
	StatusInProgress  = "InProgress"
	StatusCurrent     = "Current"
	StatusFailed      = "Failed"
	StatusTerminating = "Terminating"
	StatusNotFound    = "NotFound"
	StatusUnknown     = "Unknown"
)

// Actions on objects: what the applier did to an object (AppliedObject: created, configured,
// unchanged) or would do (ObjectDiff: create, update, unchanged, prune).
const (
	ActionCreated    = "created"
	ActionConfigured = "configured"
	ActionUnchanged  = "unchanged"
	ActionCreate     = "create"
	ActionUpdate     = "update"
	ActionPrune      = "prune"
)

// Requested asks for a new revision of a release: render Source with the values, apply it to the
// release's namespace (the namespace of the event's subject), wait for it as Options say.
//
// Values merge as Helm merges them: the chart's values.yaml, then ValuesFrom in order (read
// from the cluster at render time), then ValuesFiles in order, then Values, then Set in order.
type Requested struct {
	Source      Source       `json:"source"`
	ValuesFrom  []ValuesFrom `json:"valuesFrom,omitempty" jsonschema:"maxItems=16"`
	ValuesFiles []ValuesFile `json:"valuesFiles,omitempty" jsonschema:"maxItems=64"`
	Values      Values       `json:"values,omitempty"`
	Set         []string     `json:"set,omitempty" jsonschema:"maxItems=1000"`
	Options     Options      `json:"options,omitzero"`
	RequestedBy string       `json:"requestedBy,omitempty" jsonschema:"maxLength=256"`
	// ReuseValues builds on an earlier revision's values, as helm upgrade --reuse-values or
	// --reset-then-reuse-values does.
	ReuseValues *ReuseValues `json:"reuseValues,omitempty"`
	// PostRenderers change the rendered objects, in order, before they are bundled: as Flux's
	// HelmRelease spec.postRenderers.
	PostRenderers []PostRenderer `json:"postRenderers,omitempty" jsonschema:"maxItems=16"`
}

// PostRenderer changes rendered objects (a chart's hooks excepted) with kustomize, as a Flux
// HelmRelease's post-renderer does: patches, then image overrides.
type PostRenderer struct {
	Kustomize *KustomizePostRenderer `json:"kustomize,omitempty"`
}

// KustomizePostRenderer is a kustomization's patches and images, inline.
type KustomizePostRenderer struct {
	Patches []KustomizePatch `json:"patches,omitempty" jsonschema:"maxItems=256"`
	Images  []KustomizeImage `json:"images,omitempty" jsonschema:"maxItems=256"`
}

// KustomizePatch is a strategic-merge patch, or a JSON 6902 patch (a list of operations) with a
// Target, as in a kustomization's patches.
type KustomizePatch struct {
	Patch  string       `json:"patch" jsonschema:"minLength=1,maxLength=1048576"`
	Target *PatchTarget `json:"target,omitempty"`
}

// PatchTarget selects the objects a patch applies to (every field optional).
type PatchTarget struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// KustomizeImage overrides an image's name, tag or digest, as kustomize's images field.
type KustomizeImage struct {
	Name    string `json:"name" jsonschema:"minLength=1"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// Reuse modes of ReuseValues, named after Helm's flags.
const (
	// ReuseValuesReuse: the earlier revision's values under the request's, over the earlier
	// revision's computed values in place of the chart's defaults (--reuse-values: a new chart
	// version's new defaults are not taken).
	ReuseValuesReuse = "reuse"
	// ReuseValuesResetThenReuse: the earlier revision's values under the request's, over the
	// chart's own defaults (--reset-then-reuse-values).
	ReuseValuesResetThenReuse = "resetThenReuse"
)

// ReuseValues names the revision whose values a request builds on, and its ValuesRecord.
type ReuseValues struct {
	Mode     string `json:"mode" jsonschema:"enum=reuse,enum=resetThenReuse"`
	Revision int    `json:"revision" jsonschema:"minimum=1"`
	// Values is the digest of that revision's ValuesRecord in the bundles object store
	// (Rendered.Values).
	Values string `json:"values" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
}

// Values is a tree of chart values, as in a values.yaml.
type Values map[string]any

// ValuesFrom names values kept in the target cluster, in the release's namespace: a key of a
// Secret or ConfigMap holding a values YAML, which the renderer reads when it renders (with its
// own RBAC), so that secret values never ride in an event.
type ValuesFrom struct {
	Kind string `json:"kind" jsonschema:"enum=Secret,enum=ConfigMap"`
	Name string `json:"name" jsonschema:"minLength=1,maxLength=253"`
	// Key is the key holding the values YAML. Default values.yaml.
	Key string `json:"key,omitempty" jsonschema:"maxLength=253"`
	// Optional: a missing object or key is skipped rather than failing the render.
	Optional bool `json:"optional,omitempty"`
}

// ValuesKey is ValuesFrom.Key, or its default.
func (v ValuesFrom) ValuesKey() string {
	if v.Key == "" {
		return "values.yaml"
	}
	return v.Key
}

// ValuesFile is a values file's content, sent inline and named for error messages.
type ValuesFile struct {
	Name    string `json:"name" jsonschema:"minLength=1,maxLength=256"`
	Content string `json:"content"`
}

// Source says what to render. Exactly one of its fields is set.
type Source struct {
	Helm      *HelmSource      `json:"helm,omitempty"`
	Kustomize *KustomizeSource `json:"kustomize,omitempty"`
	Manifests *ManifestsSource `json:"manifests,omitempty"`
	// HelmRelease takes over a release Helm installed (`troupe adopt`).
	HelmRelease *HelmReleaseSource `json:"helmRelease,omitempty"`
}

// HelmReleaseSource is a release Helm installed in the release's namespace, as Helm stored it
// (its Secrets sh.helm.release.v1.NAME.vN): its latest revision's manifest is the bundle, and
// the revision takes the objects over without changing them.
type HelmReleaseSource struct {
	// Name is Helm's name of the release. Default: the troupe release's.
	Name string `json:"name,omitempty" jsonschema:"maxLength=53"`
	// RemoveHelmSecrets deletes Helm's release Secrets once the objects are taken over; they
	// are kept otherwise (`helm` then still lists the release, and could change it again).
	RemoveHelmSecrets bool `json:"removeHelmSecrets,omitempty"`
	// FieldManagers are the server-side apply field managers whose fields troupe takes over at
	// its first apply after the adoption, so that a field a later revision drops is removed.
	// Default ["helm"]: the Helm CLI's (a tool embedding Helm may use another).
	FieldManagers []string `json:"fieldManagers,omitempty" jsonschema:"maxItems=16"`
}

// HelmFieldManagers is HelmReleaseSource.FieldManagers, or its default.
func (h *HelmReleaseSource) HelmFieldManagers() []string {
	if len(h.FieldManagers) == 0 {
		return []string{"helm"}
	}
	return h.FieldManagers
}

// HelmSource is a Helm chart. Exactly one of Path, Object, OCI, RepoURL is set.
type HelmSource struct {
	// Path is a chart directory or .tgz on the renderer's file system.
	Path string `json:"path,omitempty" jsonschema:"maxLength=4096"`
	// Object is the sha256 digest of a chart archive uploaded to the sources object store.
	Object string `json:"object,omitempty" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// OCI is a chart reference oci://host/repo/chart.
	OCI string `json:"oci,omitempty" jsonschema:"pattern=^oci://.+"`
	// RepoURL is an HTTP(S) chart repository; Chart names the chart in its index.yaml.
	RepoURL string `json:"repoURL,omitempty" jsonschema:"pattern=^https?://.+"`
	Chart   string `json:"chart,omitempty" jsonschema:"maxLength=253"`
	// Version is an exact version or, for a repository, a semver range. Empty: the latest.
	Version string `json:"version,omitempty" jsonschema:"maxLength=256"`
	// Credentials names where the renderer finds registry or repository credentials.
	Credentials string `json:"credentials,omitempty" jsonschema:"maxLength=253"`
	// SkipCRDs leaves the chart's crds/ out of the bundle, as helm install --skip-crds does
	// (CRDs in its templates stay: they are the chart's own objects).
	SkipCRDs bool `json:"skipCRDs,omitempty"`
}

// KustomizeSource is a kustomization directory, on the renderer's file system or inside an
// uploaded archive. Exactly one of Path, Object is set.
type KustomizeSource struct {
	Path   string `json:"path,omitempty" jsonschema:"maxLength=4096"`
	Object string `json:"object,omitempty" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// Dir is the overlay's directory inside the archive.
	Dir string `json:"dir,omitempty" jsonschema:"maxLength=4096"`
}

// ManifestsSource is plain YAML. Exactly one of Path, Object, YAML is set.
type ManifestsSource struct {
	Path   string `json:"path,omitempty" jsonschema:"maxLength=4096"`
	Object string `json:"object,omitempty" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// YAML is inline multi-document YAML.
	YAML string `json:"yaml,omitempty"`
}

// Options steer a revision through every stage.
type Options struct {
	// Timeout bounds the whole revision; every path ends in a terminal event within it.
	// Zero: the default (5m).
	Timeout Duration `json:"timeout,omitzero"`
	// Wait asks the requester's tools to wait for ready; the services behave the same either way.
	Wait bool `json:"wait,omitempty"`
	// Prune deletes what the previous revision applied and this one does not. Nil: true.
	Prune *bool `json:"prune,omitempty"`
	// RollbackOnFailure rolls back to the previous ready revision if this one fails.
	RollbackOnFailure bool `json:"rollbackOnFailure,omitempty"`
	// DryRun renders and diffs against the cluster without changing it.
	DryRun bool `json:"dryRun,omitempty"`
	// CreateNamespace creates the release's namespace if it is missing.
	CreateNamespace bool `json:"createNamespace,omitempty"`
	// Adopt takes over objects that exist but belong to no release, or to another one.
	Adopt bool `json:"adopt,omitempty"`
	// WaitLoadBalancer makes a LoadBalancer Service ready only once it has an ingress address;
	// by default a cluster IP is enough, as under Helm 4 and Flux (kstatus).
	WaitLoadBalancer bool `json:"waitLoadBalancer,omitempty"`
	// Gates are gates this revision must pass, besides those its namespace's policy requires
	// (GatePolicy): the applier applies it only once each approved it (release.approved).
	Gates []string `json:"gates,omitempty" jsonschema:"maxItems=16"`
}

// DefaultTimeout is a revision's timeout when the request does not set one.
const DefaultTimeout = 5 * time.Minute

// PruneEnabled reports whether to prune (true unless Prune is set to false).
func (o Options) PruneEnabled() bool { return o.Prune == nil || *o.Prune }

// TimeoutOrDefault returns Timeout, or DefaultTimeout when it is zero.
func (o Options) TimeoutOrDefault() time.Duration {
	if o.Timeout == 0 {
		return DefaultTimeout
	}
	return time.Duration(o.Timeout)
}

// ObjectRef names a Kubernetes object. Namespace is empty for cluster-scoped kinds.
type ObjectRef struct {
	APIVersion string `json:"apiVersion" jsonschema:"minLength=1,maxLength=317"`
	Kind       string `json:"kind" jsonschema:"minLength=1,maxLength=63"`
	Namespace  string `json:"namespace,omitempty" jsonschema:"maxLength=63"`
	Name       string `json:"name" jsonschema:"minLength=1,maxLength=253"`
}

// String returns kind/namespace/name, or kind/name for cluster-scoped objects.
func (r ObjectRef) String() string {
	if r.Namespace == "" {
		return r.Kind + "/" + r.Name
	}
	return r.Kind + "/" + r.Namespace + "/" + r.Name
}

// ChartInfo names the chart a bundle came from.
type ChartInfo struct {
	Name       string `json:"name" jsonschema:"minLength=1,maxLength=253"`
	Version    string `json:"version" jsonschema:"maxLength=256"`
	AppVersion string `json:"appVersion,omitempty" jsonschema:"maxLength=256"`
}

// Rendered says a revision's manifests are in the bundles object store.
type Rendered struct {
	// Bundle is the sha256 digest of the canonical bundle in the bundles object store.
	Bundle string `json:"bundle" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// Size is the bundle's size in bytes.
	Size    int64       `json:"size" jsonschema:"minimum=0"`
	Objects []ObjectRef `json:"objects,omitempty" jsonschema:"maxItems=10000"`
	// RenderTime is how long rendering took.
	RenderTime Duration   `json:"renderTime"`
	Chart      *ChartInfo `json:"chart,omitempty"`
	Notes      string     `json:"notes,omitempty" jsonschema:"maxLength=65536"`
	// Values is the sha256 digest of the revision's ValuesRecord in the bundles object store
	// (charts only).
	Values string `json:"values,omitempty" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// Adopted says the bundle is a Helm release's, to take over rather than apply (the request's
	// source was a helmRelease).
	Adopted *Adoption `json:"adopted,omitempty"`
	// Rollback is true when history republished an earlier revision's bundle.
	Rollback bool    `json:"rollback,omitempty"`
	Options  Options `json:"options,omitzero"`
	// Gates are the gates asked to judge the bundle: the request's (Options.Gates) and those
	// the namespace's policy required when it was rendered (RequiredGates), sorted. The applier
	// applies the revision once each of them (and of Options.Gates) approved it.
	Gates []string `json:"gates,omitempty" jsonschema:"maxItems=64"`
}

// Adoption is the Helm release a revision takes over, and Helm's history of it.
type Adoption struct {
	// Name is Helm's name of the release; Revision its latest revision, the one taken over.
	Name     string `json:"name"`
	Revision int    `json:"revision"`
	// Secrets are Helm's release Secrets, deleted once the objects are taken over when
	// RemoveHelmSecrets.
	Secrets           []string `json:"secrets,omitempty" jsonschema:"maxItems=1000"`
	RemoveHelmSecrets bool     `json:"removeHelmSecrets,omitempty"`
	// FieldManagers are handed over at troupe's first apply (HelmReleaseSource).
	FieldManagers []string `json:"fieldManagers,omitempty"`
	// Revisions are Helm's revisions of the release, oldest first, imported into the history.
	Revisions []HelmRevision `json:"revisions,omitempty" jsonschema:"maxItems=1000"`
}

// HelmRevision is one revision of a Helm release, as Helm recorded it.
type HelmRevision struct {
	Revision    int        `json:"revision"`
	Status      string     `json:"status"` // Helm's: deployed, superseded, failed, …
	Description string     `json:"description,omitempty"`
	Updated     time.Time  `json:"updated,omitzero"`
	Chart       *ChartInfo `json:"chart,omitempty"`
	// Bundle and Values are the digests of its manifest (as a bundle) and its values (a
	// ValuesRecord) in the bundles object store.
	Bundle  string `json:"bundle,omitempty"`
	Values  string `json:"values,omitempty"`
	Objects int    `json:"objects"`
}

// AppliedObject is an object the applier applied, and what that changed.
type AppliedObject struct {
	ObjectRef
	// Action is created, configured or unchanged.
	Action string `json:"action" jsonschema:"enum=created,enum=configured,enum=unchanged"`
}

// Applied says the cluster now holds a revision's objects.
type Applied struct {
	Bundle    string          `json:"bundle" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	Inventory []AppliedObject `json:"inventory,omitempty" jsonschema:"maxItems=10000"`
	Pruned    []ObjectRef     `json:"pruned,omitempty" jsonschema:"maxItems=10000"`
	ApplyTime Duration        `json:"applyTime"`
	Options   Options         `json:"options,omitzero"`
	// PostHooks is the phase of the chart's hooks that runs once every object is ready
	// (post-install, post-upgrade, post-rollback); empty when the bundle has none for it.
	PostHooks string `json:"postHooks,omitempty" jsonschema:"enum=post-install,enum=post-upgrade,enum=post-rollback"`
	// Adopted says the objects were taken over from a Helm release and not written: they do
	// not carry troupe's labels yet (the next revision adds them).
	Adopted bool `json:"adopted,omitempty"`
}

// Settled says every object of a revision is Current and its post-phase hooks are due: the
// revision is ready once they ran (release.hooked), failed if one fails.
type Settled struct {
	Bundle string `json:"bundle" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	// Phase is the hooks' (Applied.PostHooks).
	Phase   string `json:"phase" jsonschema:"enum=post-install,enum=post-upgrade,enum=post-rollback"`
	Objects int    `json:"objects" jsonschema:"minimum=0"`
}

// ObjectDiff is what applying would do to one object.
type ObjectDiff struct {
	ObjectRef
	// Action is create, update, unchanged or prune.
	Action string `json:"action" jsonschema:"enum=create,enum=update,enum=unchanged,enum=prune"`
	// Diff is a unified diff of the object's YAML, for update.
	Diff string `json:"diff,omitempty" jsonschema:"maxLength=32768"`
}

// Diffed is a dry run's result.
type Diffed struct {
	Bundle  string       `json:"bundle" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	Objects []ObjectDiff `json:"objects,omitempty" jsonschema:"maxItems=10000"`
	// Gates are the verdicts of the gates the release requires on the bundle: what they would
	// say of it, had it been a real request (a rejection does not fail a dry run).
	Gates []GateVerdict `json:"gates,omitempty" jsonschema:"maxItems=64"`
}

// ObjectStatus is one object's health.
type ObjectStatus struct {
	ObjectRef
	// Status is a kstatus status: InProgress, Current, Failed, Terminating, NotFound, Unknown.
	Status  string `json:"status" jsonschema:"enum=InProgress,enum=Current,enum=Failed,enum=Terminating,enum=NotFound,enum=Unknown"`
	Message string `json:"message,omitempty" jsonschema:"maxLength=32768"`
}

// Progressing reports objects converging.
type Progressing struct {
	Objects []ObjectStatus `json:"objects,omitempty" jsonschema:"maxItems=10000"`
	Ready   int            `json:"ready" jsonschema:"minimum=0"`
	Total   int            `json:"total" jsonschema:"minimum=0"`
}

// Ready says every object of a revision is Current.
type Ready struct {
	// TimeToReady runs from the release.requested to the last object becoming Current.
	TimeToReady Duration `json:"timeToReady"`
	Objects     int      `json:"objects" jsonschema:"minimum=0"`
}

// Failed ends a revision that could not go on.
type Failed struct {
	// Stage is request, render, apply, health, rollback, uninstall, hook or gate.
	Stage string `json:"stage" jsonschema:"enum=request,enum=render,enum=apply,enum=health,enum=rollback,enum=uninstall,enum=hook,enum=gate"`
	// Reason is a stable snake_case code (template_error, timeout, …) for tools to match on.
	Reason string `json:"reason" jsonschema:"pattern=^[a-z][a-z0-9_]*$,maxLength=64"`
	// Message says what went wrong and where, for a person.
	Message string         `json:"message" jsonschema:"minLength=1,maxLength=32768"`
	Objects []ObjectStatus `json:"objects,omitempty" jsonschema:"maxItems=10000"`
}

// Hooked says a phase of a chart's hooks ran (pre-install, pre-upgrade, …): each hook, in the
// order it ran, with its result and timing. A phase whose hook failed ends the flow with
// release.failed at stage hook instead.
type Hooked struct {
	Phase string `json:"phase" jsonschema:"enum=pre-install,enum=post-install,enum=pre-upgrade,enum=post-upgrade,enum=pre-rollback,enum=post-rollback,enum=pre-delete,enum=post-delete"`
	// Bundle is the bundle whose hooks ran.
	Bundle string    `json:"bundle" jsonschema:"pattern=^sha256:[a-f0-9]{64}$"`
	Hooks  []HookRun `json:"hooks" jsonschema:"minItems=1,maxItems=10000"`
}

// HookRun is one hook's run.
type HookRun struct {
	ObjectRef
	Weight int `json:"weight"`
	// Result is succeeded or failed.
	Result   string    `json:"result" jsonschema:"enum=succeeded,enum=failed"`
	Started  time.Time `json:"started"`
	Duration Duration  `json:"duration"`
	// Message says why a hook failed.
	Message string `json:"message,omitempty" jsonschema:"maxLength=32768"`
	// Deleted: its delete policy removed it after it ran.
	Deleted bool `json:"deleted,omitempty"`
}

// Degraded reports objects of a ready revision that are no longer Current.
type Degraded struct {
	Objects []ObjectStatus `json:"objects" jsonschema:"minItems=1,maxItems=10000"`
}

// Recovered reports that a degraded revision is Current again.
type Recovered struct {
	Objects []ObjectStatus `json:"objects" jsonschema:"minItems=1,maxItems=10000"`
}

// RollbackRequested asks to restore an earlier revision's manifests.
type RollbackRequested struct {
	// TargetRevision is the revision to restore; 0 means the previous ready one.
	TargetRevision int    `json:"targetRevision,omitempty" jsonschema:"minimum=0"`
	Reason         string `json:"reason,omitempty" jsonschema:"maxLength=32768"`
	// Automatic is true when history asked for it after a failure.
	Automatic bool    `json:"automatic,omitempty"`
	Options   Options `json:"options,omitzero"`
}

// UninstallRequested asks to delete every object of a release.
type UninstallRequested struct {
	// DeleteCRDs also deletes the CustomResourceDefinitions the release installed.
	DeleteCRDs bool     `json:"deleteCRDs,omitempty"`
	Timeout    Duration `json:"timeout,omitzero"`
	// Automatic is true when history asked for it: a first install whose request said
	// rollbackOnFailure failed, with nothing ready before to roll back to (helm install --atomic).
	Automatic bool   `json:"automatic,omitempty"`
	Reason    string `json:"reason,omitempty" jsonschema:"maxLength=32768"`
	// Revision is the failed revision an automatic uninstall undoes: a request made after it
	// supersedes the uninstall, as it would an automatic rollback.
	Revision int `json:"revision,omitempty" jsonschema:"minimum=0"`
}

// Uninstalled says a release's objects are gone.
type Uninstalled struct {
	Deleted []ObjectRef `json:"deleted,omitempty" jsonschema:"maxItems=10000"`
	// Kept lists objects annotated to be kept, and CRDs when not asked to delete them.
	Kept []ObjectRef `json:"kept,omitempty" jsonschema:"maxItems=10000"`
}

// Superseded says a stage dropped work on a revision because a newer one was requested.
type Superseded struct {
	// ByRevision is the newer revision; 0 when an uninstall or a rollback replaced it
	// (ByUninstall, ByRollback).
	ByRevision int `json:"byRevision" jsonschema:"minimum=0"`
	// ByUninstall is the id of the release.uninstall.requested that replaced it: the release
	// was uninstalled after it was requested.
	ByUninstall string `json:"byUninstall,omitempty" jsonschema:"maxLength=256"`
	// ByRollback is the id of the release.rollback.requested that replaced it: the release was
	// rolled back after it was requested (or, for a rollback, rolled back again).
	ByRollback string `json:"byRollback,omitempty" jsonschema:"maxLength=256"`
	// Stage is where the older work was dropped.
	Stage string `json:"stage" jsonschema:"enum=request,enum=render,enum=apply,enum=health,enum=rollback,enum=uninstall,enum=gate"`
}

// By names what replaced the work: "revision N", "uninstall <id>" or "rollback <id>".
func (p *Superseded) By() string {
	if p.ByUninstall != "" {
		return "uninstall " + p.ByUninstall
	}
	if p.ByRollback != "" {
		return "rollback " + p.ByRollback
	}
	return "revision " + strconv.Itoa(p.ByRevision)
}

// Validate implements Payload.
func (p *Requested) Validate() error {
	var c checker
	c.source("source", p.Source)
	c.max("valuesFrom", len(p.ValuesFrom), 16)
	for i, v := range p.ValuesFrom {
		c.oneOf(fmt.Sprintf("valuesFrom[%d].kind", i), v.Kind, []string{"Secret", "ConfigMap"})
		c.nonEmpty(fmt.Sprintf("valuesFrom[%d].name", i), v.Name)
		c.maxLen(fmt.Sprintf("valuesFrom[%d].name", i), v.Name, 253)
		c.maxLen(fmt.Sprintf("valuesFrom[%d].key", i), v.Key, 253)
	}
	c.max("valuesFiles", len(p.ValuesFiles), 64)
	for i, f := range p.ValuesFiles {
		c.nonEmpty(fmt.Sprintf("valuesFiles[%d].name", i), f.Name)
		c.maxLen(fmt.Sprintf("valuesFiles[%d].name", i), f.Name, 256)
	}
	c.max("set", len(p.Set), 1000)
	for i, s := range p.Set {
		if !strings.Contains(s, "=") {
			c.addf("set[%d]: %q is not key=value", i, s)
		}
	}
	c.options("options", p.Options)
	c.maxLen("requestedBy", p.RequestedBy, 256)
	if p.ReuseValues != nil {
		c.oneOf("reuseValues.mode", p.ReuseValues.Mode, []string{ReuseValuesReuse, ReuseValuesResetThenReuse})
		c.digest("reuseValues.values", p.ReuseValues.Values, true)
		if p.Source.Helm == nil {
			c.addf("reuseValues: only with a helm source")
		}
	}
	if p.Source.HelmRelease != nil {
		// An adoption takes over what Helm left, as it is: it has nothing to render with, and
		// nothing to diff or roll back to.
		if len(p.ValuesFrom)+len(p.ValuesFiles)+len(p.Values)+len(p.Set)+len(p.PostRenderers) > 0 || p.ReuseValues != nil {
			c.addf("source.helmRelease: takes no values, reuseValues or postRenderers (the Helm release's are taken over as they are)")
		}
		if p.Options.DryRun || p.Options.RollbackOnFailure || p.Options.Adopt {
			c.addf("source.helmRelease: options dryRun, rollbackOnFailure and adopt do not apply to an adoption")
		}
	}
	return c.err()
}

// Validate implements Payload.
func (p *Rendered) Validate() error {
	var c checker
	c.digest("bundle", p.Bundle, true)
	c.min("size", p.Size, 0)
	c.objects("objects", p.Objects)
	c.duration("renderTime", p.RenderTime)
	if p.Chart != nil {
		c.nonEmpty("chart.name", p.Chart.Name)
	}
	c.maxLen("notes", p.Notes, MaxNotesLength)
	c.options("options", p.Options)
	c.gates("gates", p.Gates, 64)
	return c.err()
}

// Validate implements Payload.
func (p *Applied) Validate() error {
	var c checker
	c.digest("bundle", p.Bundle, true)
	c.max("inventory", len(p.Inventory), MaxObjects)
	for i, o := range p.Inventory {
		c.object(fmt.Sprintf("inventory[%d]", i), o.ObjectRef)
		c.oneOf(fmt.Sprintf("inventory[%d].action", i), o.Action, applyAction)
	}
	c.objects("pruned", p.Pruned)
	c.duration("applyTime", p.ApplyTime)
	c.options("options", p.Options)
	if p.PostHooks != "" {
		c.oneOf("postHooks", p.PostHooks, postPhases)
	}
	return c.err()
}

// Validate implements Payload.
func (p *Settled) Validate() error {
	var c checker
	c.digest("bundle", p.Bundle, true)
	c.oneOf("phase", p.Phase, postPhases)
	c.min("objects", int64(p.Objects), 0)
	return c.err()
}

// Validate implements Payload.
func (p *Diffed) Validate() error {
	var c checker
	c.digest("bundle", p.Bundle, true)
	c.max("objects", len(p.Objects), MaxObjects)
	for i, o := range p.Objects {
		c.object(fmt.Sprintf("objects[%d]", i), o.ObjectRef)
		c.oneOf(fmt.Sprintf("objects[%d].action", i), o.Action, diffAction)
		c.maxLen(fmt.Sprintf("objects[%d].diff", i), o.Diff, MaxMessageLength)
	}
	c.max("gates", len(p.Gates), 64)
	for i, g := range p.Gates {
		g.check(&c, fmt.Sprintf("gates[%d]", i))
	}
	return c.err()
}

// Validate implements Payload.
func (p *Progressing) Validate() error {
	var c checker
	c.statuses("objects", p.Objects)
	c.min("ready", int64(p.Ready), 0)
	c.min("total", int64(p.Total), 0)
	if p.Ready > p.Total {
		c.addf("ready: %d is more than total %d", p.Ready, p.Total)
	}
	return c.err()
}

// Validate implements Payload.
func (p *Hooked) Validate() error {
	var c checker
	c.oneOf("phase", p.Phase, hookPhases)
	c.digest("bundle", p.Bundle, true)
	if len(p.Hooks) == 0 {
		c.addf("hooks: at least one")
	}
	c.max("hooks", len(p.Hooks), MaxObjects)
	for i, h := range p.Hooks {
		c.object(fmt.Sprintf("hooks[%d]", i), h.ObjectRef)
		c.oneOf(fmt.Sprintf("hooks[%d].result", i), h.Result, hookResults)
		c.duration(fmt.Sprintf("hooks[%d].duration", i), h.Duration)
		c.maxLen(fmt.Sprintf("hooks[%d].message", i), h.Message, MaxMessageLength)
	}
	return c.err()
}

// Validate implements Payload.
func (p *Ready) Validate() error {
	var c checker
	c.duration("timeToReady", p.TimeToReady)
	c.min("objects", int64(p.Objects), 0)
	return c.err()
}

// Validate implements Payload.
func (p *Failed) Validate() error {
	var c checker
	c.oneOf("stage", p.Stage, stages)
	if !reasonRE.MatchString(p.Reason) || len(p.Reason) > 64 {
		c.addf("reason: %q must be a snake_case code of at most 64 characters", p.Reason)
	}
	c.nonEmpty("message", p.Message)
	c.maxLen("message", p.Message, MaxMessageLength)
	c.statuses("objects", p.Objects)
	return c.err()
}

// Validate implements Payload.
func (p *Degraded) Validate() error {
	var c checker
	c.min("objects", int64(len(p.Objects)), 1)
	c.statuses("objects", p.Objects)
	return c.err()
}

// Validate implements Payload.
func (p *Recovered) Validate() error {
	var c checker
	c.min("objects", int64(len(p.Objects)), 1)
	c.statuses("objects", p.Objects)
	return c.err()
}

// Validate implements Payload.
func (p *RollbackRequested) Validate() error {
	var c checker
	c.min("targetRevision", int64(p.TargetRevision), 0)
	c.maxLen("reason", p.Reason, MaxMessageLength)
	c.options("options", p.Options)
	return c.err()
}

// Validate implements Payload.
func (p *UninstallRequested) Validate() error {
	var c checker
	c.timeout("timeout", p.Timeout)
	return c.err()
}

// Validate implements Payload.
func (p *Uninstalled) Validate() error {
	var c checker
	c.objects("deleted", p.Deleted)
	c.objects("kept", p.Kept)
	return c.err()
}

// Validate implements Payload.
func (p *Superseded) Validate() error {
	var c checker
	if p.ByUninstall == "" && p.ByRollback == "" {
		c.min("byRevision", int64(p.ByRevision), 1)
	}
	c.oneOf("stage", p.Stage, stages)
	return c.err()
}

// checker collects every violation of a payload, so one error lists them all.
type checker struct{ errs []error }

func (c *checker) addf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) err() error { return errors.Join(c.errs...) }

func (c *checker) nonEmpty(field, s string) {
	if s == "" {
		c.addf("%s: required", field)
	}
}

func (c *checker) maxLen(field, s string, n int) {
	if len(s) > n {
		c.addf("%s: %d characters long, at most %d are allowed", field, len(s), n)
	}
}

func (c *checker) min(field string, v, n int64) {
	if v < n {
		c.addf("%s: %d is less than %d", field, v, n)
	}
}

func (c *checker) max(field string, v, n int) {
	if v > n {
		c.addf("%s: %d items, at most %d are allowed", field, v, n)
	}
}

func (c *checker) oneOf(field, v string, allowed []string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.addf("%s: %q is not one of %s", field, v, strings.Join(allowed, ", "))
}

func (c *checker) digest(field, d string, required bool) {
	switch {
	case d == "" && required:
		c.addf("%s: required", field)
	case d != "" && !digestRE.MatchString(d):
		c.addf("%s: %q is not a digest sha256:<64 hex digits>", field, d)
	}
}

func (c *checker) duration(field string, d Duration) {
	if d < 0 {
		c.addf("%s: %s is negative", field, time.Duration(d))
	}
}

func (c *checker) timeout(field string, d Duration) {
	c.duration(field, d)
	if time.Duration(d) > MaxTimeout {
		c.addf("%s: %s is longer than %s", field, time.Duration(d), MaxTimeout)
	}
}

func (c *checker) object(field string, o ObjectRef) {
	c.nonEmpty(field+".apiVersion", o.APIVersion)
	c.nonEmpty(field+".kind", o.Kind)
	c.nonEmpty(field+".name", o.Name)
	c.maxLen(field+".name", o.Name, 253)
	if o.Namespace != "" {
		if err := ValidateName("namespace", o.Namespace); err != nil {
			c.addf("%s.namespace: %w", field, err)
		}
	}
}

func (c *checker) objects(field string, objs []ObjectRef) {
	c.max(field, len(objs), MaxObjects)
	for i, o := range objs {
		c.object(fmt.Sprintf("%s[%d]", field, i), o)
	}
}

func (c *checker) statuses(field string, objs []ObjectStatus) {
	c.max(field, len(objs), MaxObjects)
	for i, o := range objs {
		f := fmt.Sprintf("%s[%d]", field, i)
		c.object(f, o.ObjectRef)
		c.oneOf(f+".status", o.Status, statuses)
		c.maxLen(f+".message", o.Message, MaxMessageLength)
	}
}

func (c *checker) options(field string, o Options) {
	c.timeout(field+".timeout", o.Timeout)
	c.gates(field+".gates", o.Gates, 16)
}

// gates checks a list of gate names: DNS-1123 labels, no more than n, none twice.
func (c *checker) gates(field string, gates []string, n int) {
	c.max(field, len(gates), n)
	seen := map[string]bool{}
	for i, g := range gates {
		if err := ValidateName("gate", g); err != nil {
			c.addf("%s[%d]: %v", field, i, err)
		}
		if seen[g] {
			c.addf("%s[%d]: %q is listed twice", field, i, g)
		}
		seen[g] = true
	}
}

func (c *checker) source(field string, s Source) {
	set := 0
	if s.Helm != nil {
		set++
		h := s.Helm
		refs := count(h.Path != "", h.Object != "", h.OCI != "", h.RepoURL != "")
		if refs != 1 {
			c.addf("%s.helm: exactly one of path, object, oci, repoURL must be set (%d are)", field, refs)
		}
		c.digest(field+".helm.object", h.Object, false)
		if h.OCI != "" && !strings.HasPrefix(h.OCI, "oci://") {
			c.addf("%s.helm.oci: %q must start with oci://", field, h.OCI)
		}
		if h.RepoURL != "" {
			if !strings.HasPrefix(h.RepoURL, "http://") && !strings.HasPrefix(h.RepoURL, "https://") {
				c.addf("%s.helm.repoURL: %q must be an http:// or https:// URL", field, h.RepoURL)
			}
			if h.Chart == "" {
				c.addf("%s.helm.chart: required with repoURL", field)
			}
		} else if h.Chart != "" {
			c.addf("%s.helm.chart: only used with repoURL", field)
		}
	}
	if s.Kustomize != nil {
		set++
		if n := count(s.Kustomize.Path != "", s.Kustomize.Object != ""); n != 1 {
			c.addf("%s.kustomize: exactly one of path, object must be set (%d are)", field, n)
		}
		c.digest(field+".kustomize.object", s.Kustomize.Object, false)
	}
	if s.Manifests != nil {
		set++
		m := s.Manifests
		if n := count(m.Path != "", m.Object != "", m.YAML != ""); n != 1 {
			c.addf("%s.manifests: exactly one of path, object, yaml must be set (%d are)", field, n)
		}
		c.digest(field+".manifests.object", m.Object, false)
	}
	if s.HelmRelease != nil {
		set++
		if s.HelmRelease.Name != "" {
			if err := ValidateName("helmRelease.name", s.HelmRelease.Name); err != nil {
				c.addf("%s.%v", field, err)
			}
		}
		for _, m := range s.HelmRelease.FieldManagers {
			if m == "" || len(m) > 128 {
				c.addf("%s.helmRelease.fieldManagers: %q is not a field manager's name", field, m)
			}
		}
	}
	if set != 1 {
		c.addf("%s: exactly one of helm, kustomize, manifests, helmRelease must be set (%d are)", field, set)
	}
}

func count(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// Duration is a time.Duration written in JSON as a Go duration string ("5m", "1m30s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"5m\" or \"1m30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// String returns the duration as time.Duration prints it.
func (d Duration) String() string { return time.Duration(d).String() }
