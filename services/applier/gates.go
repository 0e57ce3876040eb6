package applier

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/troupe-dev/troupe/events"
)

// Gates: a revision is applied only once every gate it needs approved it — the gates its
// release.rendered names: the request's and those the namespace's policy required when it was
// rendered (the renderer, or history for a rollback, reads the policy; a requester cannot leave a
// gate out). A gate required since does not hold a revision rendered before: the gate, which
// judges the revisions that name it, would never answer it.
//
// Waiting takes no worker and no lease: a revision whose gates have not all answered is
// recorded as waiting (the release's waits, in the inventory bucket) and its release.rendered
// acknowledged. Each verdict (release.approved, release.rejected) looks the revision up and
// judges it again. Because the wait is recorded before the verdicts are read again, and a
// verdict is in the stream before it is handled, the last of them to be handled sees all of
// them: no verdict is missed. Each later release.rendered, release.failed or uninstall of the
// release ends a waiting revision it supersedes. The wait is cleared once the revision's outcome
// is published (a transient error leaves it, for the verdict's redelivery to find). A revision no
// gate answers in time is ended by history's deadline watchdog, which names the silent gates.

// waits are the revisions of a release waiting for gates: the value of <namespace>.<name>.gates
// in the inventory bucket.
type waits struct {
	Waiting []wait `json:"waiting"`
}

// wait is one revision waiting for its gates: its release.rendered's flow and stream sequence.
type wait struct {
	Correlation string `json:"correlationId"`
	Sequence    uint64 `json:"sequence"`
	Revision    int    `json:"revision"`
}

func waitsKey(rel events.Release) string { return key(rel) + ".gates" }

// changeWaits changes rel's waits by compare-and-set; change returns false to write nothing.
func (inv *inventory) changeWaits(ctx context.Context, rel events.Release, change func(*waits) bool) error {
	for range casAttempts {
		var w waits
		var rev uint64
		e, err := inv.kv.Get(ctx, waitsKey(rel))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			return fmt.Errorf("gate waits of %s: %w", rel, err)
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &w); err != nil {
				return fmt.Errorf("gate waits of %s: %w", rel, err)
			}
		}
		if !change(&w) {
			return nil
		}
		if len(w.Waiting) == 0 && rev > 0 {
			err = inv.kv.Delete(ctx, waitsKey(rel), jetstream.LastRevision(rev))
		} else if len(w.Waiting) > 0 {
			b, _ := json.Marshal(w)
			if rev == 0 {
				_, err = inv.kv.Create(ctx, waitsKey(rel), b)
			} else {
				_, err = inv.kv.Update(ctx, waitsKey(rel), b, rev)
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			return fmt.Errorf("gate waits of %s: %w", rel, err)
		}
	}
	return fmt.Errorf("gate waits of %s: changed by another writer %d times in a row", rel, casAttempts)
}

// waiting returns rel's waiting revisions.
func (inv *inventory) waiting(ctx context.Context, rel events.Release) ([]wait, error) {
	var out []wait
	err := inv.changeWaits(ctx, rel, func(w *waits) bool { out = w.Waiting; return false })
	return out, err
}

// awaitGates records that the revision whose release.rendered is at seq waits for its gates.
func (inv *inventory) awaitGates(ctx context.Context, rel events.Release, w wait) error {
	return inv.changeWaits(ctx, rel, func(ws *waits) bool {
		if slices.ContainsFunc(ws.Waiting, func(x wait) bool { return x.Correlation == w.Correlation }) {
			return false
		}
		ws.Waiting = append(ws.Waiting, w)
		return true
	})
}

// doneWaiting removes the revision of flow corr from rel's waits.
func (inv *inventory) doneWaiting(ctx context.Context, rel events.Release, corr string) error {
	return inv.changeWaits(ctx, rel, func(ws *waits) bool {
		n := len(ws.Waiting)
		ws.Waiting = slices.DeleteFunc(ws.Waiting, func(x wait) bool { return x.Correlation == corr })
		return len(ws.Waiting) < n
	})
}

// gateCheck is what the gates say of a revision.
type gateCheck struct {
	required []string
	verdicts map[string]events.GateVerdict
	pending  []string
}

// rejected returns the rejections, in the order the gates are required.
func (g gateCheck) rejected() []events.GateVerdict {
	var out []events.GateVerdict
	for _, name := range g.required {
		if v, ok := g.verdicts[name]; ok && v.Verdict == events.VerdictRejected {
			out = append(out, v)
		}
	}
	return out
}

// list returns every required gate's verdict, pending ones too, in order.
func (g gateCheck) list() []events.GateVerdict {
	var out []events.GateVerdict
	for _, name := range g.required {
		v, ok := g.verdicts[name]
		if !ok {
			v = events.GateVerdict{Gate: name, Verdict: events.VerdictPending}
		}
		out = append(out, v)
	}
	return out
}

// checkGates reads the gates the revision e rendered (at stream sequence seq) needs — those its
// release.rendered names, which the renderer (history, for a rollback) made from the request and
// the namespace's policy — and their verdicts on it.
func (s *Service) checkGates(ctx context.Context, e event.Event, rel events.Release, seq uint64, r *events.Rendered) (gateCheck, error) {
	g := gateCheck{required: events.RequiredGates(append(slices.Clone(r.Gates), r.Options.Gates...), nil)}
	if len(g.required) == 0 {
		return g, nil
	}
	var err error
	g.verdicts, err = s.opts.Names.GateVerdicts(ctx, s.stream, rel, seq, events.CorrelationID(e), events.Revision(e), r.Bundle, g.required)
	if err != nil {
		return gateCheck{}, err
	}
	if r.Rollback {
		policy, err := s.gates.For(ctx, rel.Namespace)
		if err != nil {
			return gateCheck{}, err
		}
		// A gate whose policy trusts its earlier approvals lets a rollback to a bundle it
		// approved before through without judging it again.
		for _, name := range g.required {
			rule, ok := policy.Rule(name)
			if !ok || !rule.TrustApprovals {
				continue
			}
			if ok, err := s.opts.Names.ApprovedBefore(ctx, s.stream, rel, name, r.Bundle); err != nil {
				return gateCheck{}, err
			} else if ok {
				g.verdicts[name] = events.GateVerdict{Gate: name, Verdict: events.VerdictApproved, Trusted: true,
					Message: "approved this bundle before; the namespace's policy trusts that for a rollback"}
			}
		}
	}
	g.pending = events.Pending(g.required, g.verdicts)
	return g, nil
}

// gateFailure is the release.failed of a revision a gate rejected: each rejection's reason, and
// its findings (those about an object as failing objects, the others in the message).
func gateFailure(revision int, bundle string, rejections []events.GateVerdict) events.Failed {
	var parts []string
	var objects []events.ObjectStatus
	for _, v := range rejections {
		msg := fmt.Sprintf("gate %s rejected revision %d (bundle %s)", v.Gate, revision, shortDigest(bundle))
		if v.By != "" {
			msg += " by " + v.By
		}
		if v.Message != "" {
			msg += ": " + v.Message
		}
		var loose []string
		for _, f := range v.Findings {
			if f.Object != nil {
				if len(objects) < maxGateObjects {
					objects = append(objects, events.ObjectStatus{ObjectRef: *f.Object, Status: events.StatusFailed,
						Message: events.Truncate(v.Gate+": "+f.Rule+": "+f.Message, 1<<10)})
				}
			} else {
				loose = append(loose, f.Rule+": "+f.Message)
			}
		}
		if len(loose) > 0 {
			msg += " (" + strings.Join(loose, "; ") + ")"
		}
		parts = append(parts, msg)
	}
	return events.Failed{Stage: events.StageGate, Reason: events.ReasonGateRejected,
		Message: events.Truncate(strings.Join(parts, "; "), events.MaxMessageLength), Objects: objects}
}

// maxGateObjects bounds the objects a gate's release.failed names, so that it always fits an
// event: the gate's verdict, in the stream, has them all.
const maxGateObjects = 100

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

// verdict judges again the revision a gate's verdict is about: the one recorded as waiting for
// its flow. A verdict about no waiting revision does nothing: its revision was applied, or
// ended, or is not handled here yet — and then reads the verdict when it is (the wait is
// recorded before the verdicts are read again).
func (s *Service) verdict(ctx context.Context, e event.Event, rel events.Release) error {
	corr := events.CorrelationID(e)
	ws, err := s.inventory.waiting(ctx, rel)
	if err != nil {
		return err
	}
	for _, w := range ws {
		if w.Correlation == corr {
			re, r, ok, err := s.waitingRendered(ctx, rel, w)
			if err != nil || !ok {
				return err
			}
			ctx = zerolog.Ctx(ctx).With().Str("rendered", re.ID()).Int("revision", events.Revision(re)).Logger().WithContext(ctx)
			if err := s.rendered(ctx, re, w.Sequence, rel, r); err != nil {
				return err
			}
			return s.clearEnded(ctx, rel, corr)
		}
	}
	return nil
}

// waitingRendered reads the release.rendered a wait records; ok false (and the wait cleared) when
// it is gone from the stream (aged out: long past its deadline) or is no release.rendered.
func (s *Service) waitingRendered(ctx context.Context, rel events.Release, w wait) (event.Event, *events.Rendered, bool, error) {
	m, err := s.stream.GetMsg(ctx, w.Sequence)
	if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return event.Event{}, nil, false, fmt.Errorf("release.rendered %d of %s: %w", w.Sequence, rel, err)
	}
	if err == nil {
		re, err := s.opts.Names.Decode(m.Subject, m.Header, m.Data)
		if err == nil && re.Type() == events.TypeRendered && events.CorrelationID(re) == w.Correlation {
			if r, err := events.Data[events.Rendered](re); err == nil {
				return re, r, true, nil
			}
		}
	}
	return event.Event{}, nil, false, s.inventory.doneWaiting(ctx, rel, w.Correlation)
}

// clearEnded clears the wait of flow corr once the flow ended (superseded, failed…).
func (s *Service) clearEnded(ctx context.Context, rel events.Release, corr string) error {
	if fl, err := s.flows.Get(ctx, rel, corr); err == nil && fl != nil && !fl.Open() {
		return s.inventory.doneWaiting(ctx, rel, corr)
	}
	return nil
}

// rewaitOthers ends, as superseded, every revision of rel waiting for its gates that a newer
// request, a rollback or an uninstall has overtaken, other than the one of flow corr: run when a
// newer revision, a failure or an uninstall of the release comes, so that the waiting revision
// ends at once rather than at its deadline. It only ever ends what is superseded: anything else
// about a waiting revision (its gates, its apply) is its own verdicts' business, never the
// current event's, whose handling goes on whatever happens here.
func (s *Service) rewaitOthers(ctx context.Context, rel events.Release, corr string) error {
	ws, err := s.inventory.waiting(ctx, rel)
	if err != nil || len(ws) == 0 {
		return err
	}
	for _, w := range ws {
		if w.Correlation == corr {
			continue
		}
		if err := s.supersedeWaiting(ctx, rel, w); err != nil {
			zerolog.Ctx(ctx).Warn().Err(err).Int("revision", w.Revision).Msg("a revision waiting for its gates: not checked for a newer request")
		}
	}
	return nil
}

// supersedeWaiting publishes release.superseded for the waiting revision w if a newer request, a
// rollback or an uninstall overtook it, and clears its wait once its flow ended.
func (s *Service) supersedeWaiting(ctx context.Context, rel events.Release, w wait) error {
	re, r, ok, err := s.waitingRendered(ctx, rel, w)
	if err != nil || !ok {
		return err
	}
	if fl, err := s.flows.Get(ctx, rel, w.Correlation); err != nil {
		return err
	} else if fl != nil && !fl.Open() {
		return s.inventory.doneWaiting(ctx, rel, w.Correlation)
	}
	sup := func(ctx context.Context) error {
		if r.Rollback {
			return s.rollbackSuperseded(ctx, rel, w.Correlation)
		}
		if err := s.superseded(ctx, rel, w.Revision, r.Options.DryRun); err != nil {
			return err
		}
		cur, err := s.inventory.current(ctx, rel)
		if err != nil {
			return err
		}
		return s.uninstalledSince(ctx, rel, cur, re, r)
	}
	err = sup(ctx)
	if _, ok := errors.AsType[errSuperseded](err); !ok {
		return err
	}
	zerolog.Ctx(ctx).Info().Int("revision", w.Revision).Err(err).Msg("a revision waiting for its gates is superseded")
	if err := s.end(ctx, re, rel, w.Revision, events.StageGate, err, flowDeadline(re, r.Options.Timeout)); err != nil {
		return err
	}
	return s.inventory.doneWaiting(ctx, rel, w.Correlation)
}
