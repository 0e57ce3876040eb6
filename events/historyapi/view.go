package historyapi

import (
	"cmp"
	"time"

	"github.com/troupe-dev/troupe/events"
)

// States of a revision.
const (
	StateRequested   = "requested"   // asked for, not rendered yet
	StateRendered    = "rendered"    // manifests in the bundles store, not applied yet
	StateProgressing = "progressing" // applied, objects converging
	StateReady       = "ready"       // every object Current
	StateDegraded    = "degraded"    // was ready, an object no longer is
	StateFailed      = "failed"      // at Stage, for Reason
	StateSuperseded  = "superseded"  // a newer request overtook it
	StateDiffed      = "diffed"      // a dry run: diffed, nothing changed
	StateRolledBack  = "rolled-back" // replaced by a rollback to RolledBackTo
	StateUninstalled = "uninstalled" // the release was uninstalled while this was current
)

// View is one release's history: what history keeps per release in its KV bucket, built by
// folding the release's events in stream order — the same events always give the same view, so
// it can be rebuilt from the stream.
type View struct {
	Release string `json:"release"`
	// Current is the revision live in the cluster: the last one ready, or the target of a
	// rollback once it is ready. 0: none (never ready, or uninstalled).
	Current int `json:"current"`
	// Uninstalled is set once the release is uninstalled (until it is requested again).
	Uninstalled bool        `json:"uninstalled,omitempty"`
	Revisions   []*Revision `json:"revisions"`
	// Rollback is the rollback in flight, if any.
	Rollback *Rollback `json:"rollback,omitempty"`
	// Helm are the revisions Helm made of the release before troupe adopted it (imported from
	// Helm's release Secrets), oldest first; HelmName is Helm's name of the release.
	Helm     []events.HelmRevision `json:"helm,omitempty"`
	HelmName string                `json:"helmName,omitempty"`
	// Timeline is every event of the release (progress reports but the first of each revision
	// left out), oldest first, for the revisions kept.
	Timeline []Entry `json:"timeline"`
	// Sequence is the stream sequence of the last event folded in.
	Sequence uint64    `json:"sequence"`
	Updated  time.Time `json:"updated"`
}

// Revision is one revision of a release.
type Revision struct {
	Revision int    `json:"revision"`
	State    string `json:"state"`
	// Stage, Reason and Message say why a failed revision failed.
	Stage   string `json:"stage,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// RolledBackTo is the revision a rollback replaced this one with.
	RolledBackTo int          `json:"rolledBackTo,omitempty"`
	Request      *RequestInfo `json:"request,omitempty"`
	// Bundle is the rendered manifests' digest in the bundles object store; Size its size.
	Bundle string `json:"bundle,omitempty"`
	// Values is the digest of the revision's events.ValuesRecord in the bundles object store
	// (charts only): what `troupe get values` shows.
	Values string `json:"values,omitempty"`
	// Waiting are the objects the health watcher last reported not ready yet, with why (a pod's
	// scheduler reason, …), while the revision progresses: at most 20; none once it is ready.
	Waiting []events.ObjectStatus `json:"waiting,omitempty"`
	// AdoptedHelm is the Helm revision this revision took over (`troupe adopt`), 0 for others.
	AdoptedHelm int                `json:"adoptedHelm,omitempty"`
	Size        int64              `json:"size,omitempty"`
	Objects     []events.ObjectRef `json:"objects,omitempty"`
	Chart       *events.ChartInfo  `json:"chart,omitempty"`
	Changes     *Changes           `json:"changes,omitempty"`
	TimeToReady events.Duration    `json:"timeToReady,omitempty"`
	// Hooks are the phases of the chart's hooks that ran for this revision, each hook with its
	// result and timing (a hook that failed is in the revision's Message).
	Hooks []events.Hooked `json:"hooks,omitempty"`
	// Gates are the gates its release.rendered asked to judge it, each with its verdict on the
	// revision's bundle (pending until the gate answered): the last rendering's, for a rollback.
	Gates []events.GateVerdict `json:"gates,omitempty"`
	Times Times                `json:"times"`
}

// RequestInfo is what a revision's release.requested asked for.
type RequestInfo struct {
	ID string `json:"id"`
	// Source is Sent as DescribeSource says it.
	Source      string         `json:"source"`
	Sent        events.Source  `json:"sent"`
	ValuesHash  string         `json:"valuesDigest,omitempty"`
	Options     events.Options `json:"options,omitzero"`
	RequestedBy string         `json:"requestedBy,omitempty"`
	By          string         `json:"by"` // the CloudEvents source: troupe/cli, …
}

// Changes is what applying a revision did.
type Changes struct {
	Created    int `json:"created"`
	Configured int `json:"configured"`
	Unchanged  int `json:"unchanged"`
	Pruned     int `json:"pruned"`
}

// Times are when a revision's stages ended.
type Times struct {
	Requested time.Time `json:"requested,omitzero"`
	Rendered  time.Time `json:"rendered,omitzero"`
	Applied   time.Time `json:"applied,omitzero"`
	Finished  time.Time `json:"finished,omitzero"` // ready, failed, superseded, diffed
}

// Rollback is a rollback in flight: from the revision that was current or failing to Target.
type Rollback struct {
	Target    int    `json:"target"`
	From      int    `json:"from"`
	Request   string `json:"request"` // the release.rollback.requested's id
	Automatic bool   `json:"automatic,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// Entry is one event on a release's timeline.
type Entry struct {
	Sequence uint64    `json:"sequence"`
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`
	Source   string    `json:"source"`
	ID       string    `json:"id"`
	Revision int       `json:"revision,omitempty"`
	// Action marks what the event meant to the release's rollbacks: rollback (one started),
	// rollback-refused (nothing to roll back to), rollback-failed (the rollback's revision
	// failed), rolled-back (the rollback's revision is ready).
	Action string `json:"action,omitempty"`
	Note   string `json:"note,omitempty"`
}

// Actions of timeline entries.
const (
	ActionRollback        = "rollback"
	ActionRollbackRefused = "rollback-refused"
	ActionRollbackFailed  = "rollback-failed"
	ActionRolledBack      = "rolled-back"
)

// Get returns revision n, or nil.
func (v *View) Get(n int) *Revision {
	for _, r := range v.Revisions {
		if r.Revision == n {
			return r
		}
	}
	return nil
}

// Latest returns the newest revision, or nil when there is none.
func (v *View) Latest() *Revision {
	if len(v.Revisions) == 0 {
		return nil
	}
	return v.Revisions[len(v.Revisions)-1]
}

// Entry returns the timeline entry of the event with id, or nil.
func (v *View) Entry(id string) *Entry {
	for i := range v.Timeline {
		if v.Timeline[i].ID == id {
			return &v.Timeline[i]
		}
	}
	return nil
}

// DescribeSource says in a few words what a request renders: "helm ./chart", "helm upload
// sha256:…", "kustomize upload sha256:…", "manifests inline", … (RequestInfo.Source).
func DescribeSource(s events.Source) string {
	switch {
	case s.Helm != nil:
		h := s.Helm
		switch {
		case h.Path != "":
			return "helm " + h.Path
		case h.Object != "":
			return "helm upload " + h.Object
		case h.OCI != "":
			return "helm " + h.OCI + " " + h.Version
		default:
			return "helm " + h.RepoURL + " " + h.Chart + " " + h.Version
		}
	case s.Kustomize != nil:
		if s.Kustomize.Path != "" {
			return "kustomize " + s.Kustomize.Path
		}
		return "kustomize upload " + s.Kustomize.Object
	case s.HelmRelease != nil:
		return "adopt Helm release " + cmp.Or(s.HelmRelease.Name, "(same name)")
	case s.Manifests != nil:
		switch {
		case s.Manifests.Path != "":
			return "manifests " + s.Manifests.Path
		case s.Manifests.Object != "":
			return "manifests upload " + s.Manifests.Object
		default:
			return "manifests inline"
		}
	}
	return "unknown"
}
