package history

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// Fold folds one event of v's release, at stream sequence seq, into v. revision is the event's
// revision (for a release.requested, the number it was given). Events at or before v.Sequence
// were folded already and change nothing. Fold has no effects beyond v: what history does about
// an event (start a rollback) is decided from the view afterwards.
func Fold(v *historyapi.View, e event.Event, seq uint64, revision int) error {
	if seq <= v.Sequence {
		return nil
	}
	v.Sequence, v.Updated = seq, e.Time()
	entry := historyapi.Entry{Sequence: seq, Time: e.Time(), Type: e.Type(), Source: e.Source(), ID: e.ID(), Revision: revision}
	r := v.Get(revision)
	switch e.Type() {
	case events.TypeRequested:
		req, err := events.Data[events.Requested](e)
		if err != nil {
			return err
		}
		r = add(v, revision)
		r.State = historyapi.StateRequested
		r.Times.Requested = e.Time()
		r.Request = &historyapi.RequestInfo{ID: e.ID(), Source: historyapi.DescribeSource(req.Source), Sent: req.Source,
			ValuesHash: valuesDigest(req), Options: req.Options, RequestedBy: req.RequestedBy, By: e.Source()}
		v.Uninstalled = false
	case events.TypeRendered:
		rd, err := events.Data[events.Rendered](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = add(v, revision)
		}
		r.Gates = nil
		for _, g := range events.RequiredGates(append(slices.Clone(rd.Gates), rd.Options.Gates...), nil) {
			r.Gates = append(r.Gates, events.GateVerdict{Gate: g, Verdict: events.VerdictPending})
		}
		if rd.Rollback {
			entry.Note = "rollback: manifests of revision " + fmt.Sprint(revision) + " sent again"
			r.State = historyapi.StateRendered
			break
		}
		r.State, r.Bundle, r.Size, r.Objects, r.Chart = historyapi.StateRendered, rd.Bundle, rd.Size, rd.Objects, rd.Chart
		r.Values = rd.Values
		if a := rd.Adopted; a != nil {
			r.AdoptedHelm = a.Revision
			v.Helm, v.HelmName = a.Revisions, a.Name
			entry.Note = fmt.Sprintf("adopting Helm release %s revision %d (%d Helm revisions imported)", a.Name, a.Revision, len(a.Revisions))
		}
		r.Times.Rendered = e.Time()
	case events.TypeHooked:
		h, err := events.Data[events.Hooked](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = add(v, revision)
		}
		if !slices.ContainsFunc(r.Hooks, func(x events.Hooked) bool { return x.Phase == h.Phase && x.Bundle == h.Bundle }) {
			r.Hooks = append(r.Hooks, *h)
		}
	case events.TypeApplied:
		a, err := events.Data[events.Applied](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = add(v, revision)
		}
		c := &historyapi.Changes{Pruned: len(a.Pruned)}
		for _, o := range a.Inventory {
			switch o.Action {
			case events.ActionCreated:
				c.Created++
			case events.ActionConfigured:
				c.Configured++
			default:
				c.Unchanged++
			}
		}
		r.State, r.Changes, r.Times.Applied = historyapi.StateProgressing, c, e.Time()
	case events.TypeDiffed:
		if r != nil {
			r.State, r.Times.Finished = historyapi.StateDiffed, e.Time()
		}
	case events.TypeProgressing:
		if p, err := events.Data[events.Progressing](e); err == nil && r != nil {
			r.Waiting = waitingOn(p.Objects)
		}
		if r != nil && slices.ContainsFunc(v.Timeline, func(x historyapi.Entry) bool { return x.Type == events.TypeProgressing && x.Revision == revision }) {
			return nil // one progress report per revision on the timeline
		}
	case events.TypeReady:
		rd, err := events.Data[events.Ready](e)
		if err != nil {
			return err
		}
		if r == nil {
			r = add(v, revision)
		}
		r.State, r.TimeToReady, r.Times.Finished = historyapi.StateReady, rd.TimeToReady, e.Time()
		r.Waiting = nil
		r.Stage, r.Reason, r.Message = "", "", ""
		if v.Rollback != nil && v.Rollback.Target == revision {
			if from := v.Get(v.Rollback.From); from != nil && from.Revision != revision {
				from.State, from.RolledBackTo = historyapi.StateRolledBack, revision
			}
			entry.Note = fmt.Sprintf("rolled back from revision %d", v.Rollback.From)
			entry.Action = historyapi.ActionRolledBack
			v.Rollback = nil
		}
		v.Current = revision
	case events.TypeDegraded:
		if r != nil && r.State == historyapi.StateReady {
			r.State = historyapi.StateDegraded
		}
	case events.TypeRecovered:
		if r != nil && r.State == historyapi.StateDegraded {
			r.State = historyapi.StateReady
		}
	case events.TypeFailed:
		f, err := events.Data[events.Failed](e)
		if err != nil {
			return err
		}
		if f.Stage == events.StageRollback {
			// The rollback could not start (no such revision, bundle expired): the revisions
			// keep their states, the reason is on the timeline.
			entry.Note, entry.Action = f.Message, historyapi.ActionRollbackRefused
			if v.Rollback != nil && v.Rollback.Request == events.CausationID(e) {
				v.Rollback = nil
			}
			break
		}
		if r == nil {
			r = add(v, revision)
		}
		if v.Rollback != nil && v.Rollback.Target == revision {
			// The rollback itself failed: the revision it came from is marked with both reasons,
			// and nothing rolls back again.
			if from := v.Get(v.Rollback.From); from != nil {
				from.State = historyapi.StateFailed
				from.Message = fmt.Sprintf("%s; then the rollback to revision %d failed at %s: %s (%s)",
					from.Message, revision, f.Stage, f.Message, f.Reason)
			}
			entry.Note = fmt.Sprintf("rollback to revision %d failed", revision)
			entry.Action = historyapi.ActionRollbackFailed
			v.Rollback = nil
			if v.Current == revision {
				v.Current = 0
			}
			break
		}
		r.State, r.Stage, r.Reason, r.Message, r.Times.Finished = historyapi.StateFailed, f.Stage, f.Reason, f.Message, e.Time()
	case events.TypeSuperseded:
		if v.Rollback != nil && events.CorrelationID(e) == v.Rollback.Request {
			// The rollback was overtaken (a newer request came before it applied): it ends here,
			// and the revision it targeted keeps its state.
			entry.Note = fmt.Sprintf("rollback to revision %d superseded", v.Rollback.Target)
			v.Rollback = nil
			break
		}
		// Only work in flight is superseded: a rollback's release.superseded carries its target's
		// number, a revision that ended long ago.
		if r != nil && (r.State == historyapi.StateRequested || r.State == historyapi.StateRendered || r.State == historyapi.StateProgressing) {
			r.State, r.Times.Finished = historyapi.StateSuperseded, e.Time()
		}
	case events.TypeApproved, events.TypeRejected:
		// A gate's verdict on the revision's bundle (one on another bundle counts for nothing).
		p, err := events.DecodePayload(e.Type(), e.Data())
		if err != nil {
			return err
		}
		var vd events.Verdict
		switch x := p.(type) {
		case *events.Approved:
			vd = events.Verdict(*x)
		case *events.Rejected:
			vd = events.Verdict(*x)
		}
		entry.Note = "gate " + vd.Gate + " " + strings.TrimPrefix(e.Type(), "release.")
		if vd.By != "" {
			entry.Note += " by " + vd.By
		}
		if vd.Message != "" {
			entry.Note += ": " + vd.Message
		}
		if r == nil || (r.Bundle != "" && vd.Bundle != r.Bundle && v.Rollback == nil) {
			break
		}
		for i := range r.Gates {
			if r.Gates[i].Gate == vd.Gate {
				verdict := events.VerdictApproved
				if e.Type() == events.TypeRejected {
					verdict = events.VerdictRejected
				}
				r.Gates[i] = events.GateVerdict{Gate: vd.Gate, Verdict: verdict, Reason: vd.Reason, Message: vd.Message,
					Findings: vd.Findings, By: vd.By}
			}
		}
	case events.TypeRollbackRequested:
		rb, err := events.Data[events.RollbackRequested](e)
		if err != nil {
			return err
		}
		entry.Revision = rb.TargetRevision
		target, from, why := RollbackTarget(v, rb.TargetRevision)
		if why != "" {
			entry.Note, entry.Action = why, historyapi.ActionRollbackRefused
			break
		}
		v.Rollback = &historyapi.Rollback{Target: target, From: from, Request: e.ID(), Automatic: rb.Automatic, Reason: rb.Reason}
		entry.Revision, entry.Action = target, historyapi.ActionRollback
		entry.Note = fmt.Sprintf("rollback from revision %d to %d", from, target)
	case events.TypeUninstallRequested:
		if u, err := events.Data[events.UninstallRequested](e); err == nil && u.Automatic {
			entry.Note = "automatic uninstall: " + u.Reason
		}
	case events.TypeUninstalled:
		if cur := v.Get(v.Current); cur != nil {
			cur.State = historyapi.StateUninstalled
		}
		v.Current, v.Uninstalled, v.Rollback = 0, true, nil
	}
	v.Timeline = append(v.Timeline, entry)
	return nil
}

// maxWaiting bounds the objects a revision records as waited on.
const maxWaiting = 20

// waitingOn is what of a progress report's objects is not ready yet, and why.
func waitingOn(objs []events.ObjectStatus) []events.ObjectStatus {
	var out []events.ObjectStatus
	for _, o := range objs {
		if o.Status != events.StatusCurrent && len(out) < maxWaiting {
			out = append(out, o)
		}
	}
	return out
}

// RollbackTarget resolves a rollback's target: the revision asked for, or (0) the previous
// ready one — the current revision when a newer one has not made it (failed, or still on its
// way: what the rollback undoes), else the last revision ready before the current one. from is
// the revision it replaces; why, when not empty, says why there is nothing to roll back to.
func RollbackTarget(v *historyapi.View, asked int) (target, from int, why string) {
	from = v.Current
	newest := v.Latest()
	inFlight := newest != nil && newest.Revision > v.Current && newest.State != historyapi.StateRolledBack && newest.State != historyapi.StateDiffed
	if inFlight {
		from = newest.Revision
	}
	if asked > 0 {
		r := v.Get(asked)
		if r == nil {
			return 0, 0, fmt.Sprintf("%s has no revision %d", v.Release, asked)
		}
		if r.Bundle == "" {
			return 0, 0, fmt.Sprintf("revision %d of %s was never rendered: nothing to roll back to", asked, v.Release)
		}
		return asked, from, ""
	}
	if inFlight && v.Current > 0 {
		if cur := v.Get(v.Current); cur != nil && cur.Bundle != "" {
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
func wasReady(v *historyapi.View, revision int) bool {
	return slices.ContainsFunc(v.Timeline, func(e historyapi.Entry) bool { return e.Type == events.TypeReady && e.Revision == revision })
}

// Prune keeps the last keep revisions (and the current one) and their timeline.
func Prune(v *historyapi.View, keep int) (dropped []*historyapi.Revision) {
	if keep <= 0 || len(v.Revisions) <= keep {
		return nil
	}
	cut := v.Revisions[len(v.Revisions)-keep].Revision
	var kept []*historyapi.Revision
	for _, r := range v.Revisions {
		if r.Revision >= cut || r.Revision == v.Current {
			kept = append(kept, r)
		} else {
			dropped = append(dropped, r)
		}
	}
	v.Revisions = kept
	v.Timeline = slices.DeleteFunc(v.Timeline, func(e historyapi.Entry) bool {
		return e.Revision != 0 && e.Revision < cut && e.Revision != v.Current
	})
	return dropped
}

// add returns revision n, added in order if new.
func add(v *historyapi.View, n int) *historyapi.Revision {
	if r := v.Get(n); r != nil {
		return r
	}
	r := &historyapi.Revision{Revision: n}
	i, _ := slices.BinarySearchFunc(v.Revisions, n, func(r *historyapi.Revision, n int) int { return r.Revision - n })
	v.Revisions = slices.Insert(v.Revisions, i, r)
	return r
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
