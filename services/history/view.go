package history

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

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
// folding the release's events in stream order (Fold) — the same events always give the same
// view, so it can be rebuilt from the stream.
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
	Bundle      string             `json:"bundle,omitempty"`
	Size        int64              `json:"size,omitempty"`
	Objects     []events.ObjectRef `json:"objects,omitempty"`
	Chart       *events.ChartInfo  `json:"chart,omitempty"`
	Changes     *Changes           `json:"changes,omitempty"`
	TimeToReady events.Duration    `json:"timeToReady,omitempty"`
	Times       Times              `json:"times"`
}

// RequestInfo is what a revision's release.requested asked for.
type RequestInfo struct {
	ID          string         `json:"id"`
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

// Entry returns the timeline entry of the event with id, or nil.
func (v *View) Entry(id string) *Entry {
	for i := range v.Timeline {
		if v.Timeline[i].ID == id {
			return &v.Timeline[i]
		}
	}
	return nil
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

// Fold folds one event of the release, at stream sequence seq, into v. revision is the event's
// revision (for a release.requested, the number it was given). Events at or before v.Sequence
// were folded already and change nothing. Fold has no effects beyond v: what history does about
// an event (start a rollback) is decided from the view afterwards.
func (v *View) Fold(e event.Event, seq uint64, revision int) error {
	if seq <= v.Sequence {
		return nil
	}
	v.Sequence, v.Updated = seq, e.Time()
	entry := Entry{Sequence: seq, Time: e.Time(), Type: e.Type(), Source: e.Source(), ID: e.ID(), Revision: revision}
	r := v.revision(revision)
	switch e.Type() {
	case events.TypeRequested:
		req, err := events.Data[events.Requested](e)
		if err != nil {
			return err
		}
		r = v.add(revision)
		r.State = StateRequested
		r.Times.Requested = e.Time()
		r.Request = &RequestInfo{ID: e.ID(), Source: DescribeSource(req.Source), Sent: req.Source,
			ValuesHash: valuesDigest(req), Options: req.Options, RequestedBy: req.RequestedBy, By: e.Source()}
		v.Uninstalled = false
	case events.TypeRendered:
		rd, err := events.Data[events.Rendered](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = v.add(revision)
		}
		if rd.Rollback {
			entry.Note = "rollback: manifests of revision " + fmt.Sprint(revision) + " sent again"
			r.State = StateRendered
			break
		}
		r.State, r.Bundle, r.Size, r.Objects, r.Chart = StateRendered, rd.Bundle, rd.Size, rd.Objects, rd.Chart
		r.Times.Rendered = e.Time()
	case events.TypeApplied:
		a, err := events.Data[events.Applied](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = v.add(revision)
		}
		c := &Changes{Pruned: len(a.Pruned)}
		for _, o := range a.Inventory {
			switch o.Action {
			case "created":
				c.Created++
			case "configured":
				c.Configured++
			default:
				c.Unchanged++
			}
		}
		r.State, r.Changes, r.Times.Applied = StateProgressing, c, e.Time()
	case events.TypeDiffed:
		if r != nil {
			r.State, r.Times.Finished = StateDiffed, e.Time()
		}
	case events.TypeProgressing:
		if r != nil && slices.ContainsFunc(v.Timeline, func(x Entry) bool { return x.Type == events.TypeProgressing && x.Revision == revision }) {
			return nil // one progress report per revision on the timeline
		}
	case events.TypeReady:
		rd, err := events.Data[events.Ready](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = v.add(revision)
		}
		r.State, r.TimeToReady, r.Times.Finished = StateReady, rd.TimeToReady, e.Time()
		r.Stage, r.Reason, r.Message = "", "", ""
		if v.Rollback != nil && v.Rollback.Target == revision {
			if from := v.revision(v.Rollback.From); from != nil && from.Revision != revision {
				from.State, from.RolledBackTo = StateRolledBack, revision
			}
			entry.Note = fmt.Sprintf("rolled back from revision %d", v.Rollback.From)
			entry.Action = ActionRolledBack
			v.Rollback = nil
		}
		v.Current = revision
	case events.TypeDegraded:
		if r != nil && r.State == StateReady {
			r.State = StateDegraded
		}
	case events.TypeRecovered:
		if r != nil && r.State == StateDegraded {
			r.State = StateReady
		}
	case events.TypeFailed:
		f, err := events.Data[events.Failed](e)
		if err != nil {
			return err
		}
		if f.Stage == events.StageRollback {
			// The rollback could not start (no such revision, bundle expired): the revisions
			// keep their states, the reason is on the timeline.
			entry.Note, entry.Action = f.Message, ActionRollbackRefused
			if v.Rollback != nil && v.Rollback.Request == events.CausationID(e) {
				v.Rollback = nil
			}
			break
		}
		if r == nil {
			r = v.add(revision)
		}
		if v.Rollback != nil && v.Rollback.Target == revision {
			// The rollback itself failed: the revision it came from is marked with both reasons,
			// and nothing rolls back again.
			if from := v.revision(v.Rollback.From); from != nil {
				from.State = StateFailed
				from.Message = fmt.Sprintf("%s; then the rollback to revision %d failed at %s: %s (%s)",
					from.Message, revision, f.Stage, f.Message, f.Reason)
			}
			entry.Note = fmt.Sprintf("rollback to revision %d failed", revision)
			entry.Action = ActionRollbackFailed
			v.Rollback = nil
			if v.Current == revision {
				v.Current = 0
			}
			break
		}
		r.State, r.Stage, r.Reason, r.Message, r.Times.Finished = StateFailed, f.Stage, f.Reason, f.Message, e.Time()
	case events.TypeSuperseded:
		if r != nil && r.State != StateReady && r.State != StateDegraded {
			r.State, r.Times.Finished = StateSuperseded, e.Time()
		}
	case events.TypeRollbackRequested:
		rb, err := events.Data[events.RollbackRequested](e)
		if err != nil {
			return err
		}
		entry.Revision = rb.TargetRevision
		target, from, why := v.RollbackTarget(rb.TargetRevision)
		if why != "" {
			entry.Note, entry.Action = why, ActionRollbackRefused
			break
		}
		v.Rollback = &Rollback{Target: target, From: from, Request: e.ID(), Automatic: rb.Automatic, Reason: rb.Reason}
		entry.Revision, entry.Action = target, ActionRollback
		entry.Note = fmt.Sprintf("rollback from revision %d to %d", from, target)
	case events.TypeUninstallRequested:
	case events.TypeUninstalled:
		if cur := v.revision(v.Current); cur != nil {
			cur.State = StateUninstalled
		}
		v.Current, v.Uninstalled, v.Rollback = 0, true, nil
	}
	v.Timeline = append(v.Timeline, entry)
	return nil
}

// RollbackTarget resolves a rollback's target: the revision asked for, or (0) the previous
// ready one — the current revision when a newer one has not made it (failed, or still on its
// way: what the rollback undoes), else the last revision ready before the current one. from is
// the revision it replaces; why, when not empty, says why there is nothing to roll back to.
func (v *View) RollbackTarget(asked int) (target, from int, why string) {
	from = v.Current
	newest := v.newest()
	inFlight := newest != nil && newest.Revision > v.Current && newest.State != StateRolledBack && newest.State != StateDiffed
	if inFlight {
		from = newest.Revision
	}
	if asked > 0 {
		r := v.revision(asked)
		if r == nil {
			return 0, 0, fmt.Sprintf("%s has no revision %d", v.Release, asked)
		}
		if r.Bundle == "" {
			return 0, 0, fmt.Sprintf("revision %d of %s was never rendered: nothing to roll back to", asked, v.Release)
		}
		return asked, from, ""
	}
	if inFlight && v.Current > 0 {
		if cur := v.revision(v.Current); cur != nil && cur.Bundle != "" {
			return v.Current, from, ""
		}
	}
	for i := len(v.Revisions) - 1; i >= 0; i-- {
		r := v.Revisions[i]
		if r.Revision < v.Current && r.Bundle != "" && wasReady(v, r.Revision) {
			return r.Revision, from, ""
		}
	}
	return 0, 0, fmt.Sprintf("%s has no ready revision before revision %d to roll back to", v.Release, max(from, v.Current))
}

// wasReady says whether revision was ever ready, from the timeline.
func wasReady(v *View, revision int) bool {
	return slices.ContainsFunc(v.Timeline, func(e Entry) bool { return e.Type == events.TypeReady && e.Revision == revision })
}

// Prune keeps the last keep revisions (and the current one) and their timeline.
func (v *View) Prune(keep int) (dropped []*Revision) {
	if keep <= 0 || len(v.Revisions) <= keep {
		return nil
	}
	cut := v.Revisions[len(v.Revisions)-keep].Revision
	var kept []*Revision
	for _, r := range v.Revisions {
		if r.Revision >= cut || r.Revision == v.Current {
			kept = append(kept, r)
		} else {
			dropped = append(dropped, r)
		}
	}
	v.Revisions = kept
	v.Timeline = slices.DeleteFunc(v.Timeline, func(e Entry) bool {
		return e.Revision != 0 && e.Revision < cut && e.Revision != v.Current
	})
	return dropped
}

// Get returns revision n, or nil.
func (v *View) Get(n int) *Revision { return v.revision(n) }

func (v *View) revision(n int) *Revision {
	for _, r := range v.Revisions {
		if r.Revision == n {
			return r
		}
	}
	return nil
}

func (v *View) newest() *Revision {
	if len(v.Revisions) == 0 {
		return nil
	}
	return v.Revisions[len(v.Revisions)-1]
}

// add returns revision n, added in order if new.
func (v *View) add(n int) *Revision {
	if r := v.revision(n); r != nil {
		return r
	}
	r := &Revision{Revision: n}
	i, _ := slices.BinarySearchFunc(v.Revisions, n, func(r *Revision, n int) int { return r.Revision - n })
	v.Revisions = slices.Insert(v.Revisions, i, r)
	return r
}

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

// valuesDigest is a digest of everything a request sets values with.
func valuesDigest(r *events.Requested) string {
	if len(r.ValuesFiles) == 0 && len(r.Values) == 0 && len(r.Set) == 0 {
		return ""
	}
	b, _ := json.Marshal([]any{r.ValuesFiles, r.Values, r.Set})
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
