package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// ErrNoTrace is the error of a trace the stream holds nothing of: no request of the release, a
// revision it never had, or one whose events are older than the stream's retention.
var ErrNoTrace = errors.New("not on the stream")

// noTrace is an ErrNoTrace that says which.
type noTrace string

func (e noTrace) Error() string      { return string(e) }
func (noTrace) Is(target error) bool { return target == ErrNoTrace }

// TraceEvent is one event of a trace.
type TraceEvent struct {
	Sequence uint64    `json:"sequence"`
	Time     time.Time `json:"time"`
	Offset   string    `json:"offset"` // since the first event of the trace
	Type     string    `json:"type"`
	Source   string    `json:"source"`
	// Service is who published it: the source without "troupe/" (cli, renderer, …), a lane of
	// the swimlane.
	Service  string `json:"service"`
	ID       string `json:"id"`
	Revision int    `json:"revision,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// TraceStage is how long one stage took.
type TraceStage struct {
	Stage    string `json:"stage"`
	From     string `json:"from"`
	To       string `json:"to"`
	Duration string `json:"duration"`
}

// Trace is one revision's way through the services, rebuilt from the stream.
type Trace struct {
	Release  string       `json:"release"`
	Revision int          `json:"revision"`
	Events   []TraceEvent `json:"events"`
	Stages   []TraceStage `json:"stages"`
	// Ended is the last terminal event's type without "release." (ready, failed, …); empty
	// while the revision is still going.
	Ended string `json:"ended,omitempty"`
	// Stopped says where and why a failed revision stopped.
	Stopped string `json:"stopped,omitempty"`
	// Objects are the revision's objects with the last status the health watcher reported of
	// each (Unknown until it reported one; Current for all once the revision was ready), in the
	// order the applier applied them.
	Objects []events.ObjectStatus `json:"objects,omitempty"`
}

// ReadTrace rebuilds revision (0: the latest) of rel from the stream of the system names: it
// reads every event of rel (Read), numbers its requests as every service does
// (events.Revisions), and folds them (NewTrace).
func ReadTrace(ctx context.Context, js jetstream.JetStream, names events.Names, rel events.Release, revision int) (*Trace, error) {
	all, err := Read(ctx, js, names, rel)
	if err != nil {
		return nil, fmt.Errorf("read %s from the stream: %w", rel, err)
	}
	revs, err := events.NewRevisions(ctx, js, names)
	if err != nil {
		return nil, err
	}
	for i, s := range all {
		if s.Event.Type() == events.TypeRequested {
			n, err := revs.Peek(ctx, rel, s.Seq)
			if err != nil {
				return nil, err
			}
			events.WithRevision(&all[i].Event, n)
		}
	}
	return NewTrace(rel, revision, all)
}

// NewTrace rebuilds revision (0: the latest) of rel from all, its events in stream order, whose
// release.requested carry the revisions they were given (a request has none on the stream:
// ReadTrace numbers them). The revision's events are those of every flow that has an event of
// the revision: its request's, and any rollback's that restored it.
func NewTrace(rel events.Release, revision int, all []Streamed) (*Trace, error) {
	latest := 0
	revOf := map[string]int{} // request id → revision
	for _, s := range all {
		if s.Event.Type() == events.TypeRequested {
			n := events.Revision(s.Event)
			revOf[s.Event.ID()] = n
			latest = max(latest, n)
		}
	}
	if latest == 0 {
		return nil, noTrace(fmt.Sprintf("%s: no release.requested in the stream", rel))
	}
	if revision == 0 {
		revision = latest
	} else if revision > latest || revision < 0 {
		return nil, noTrace(fmt.Sprintf("%s has no revision %d (the latest is %d)", rel, revision, latest))
	}
	flows := map[string]bool{}
	for _, s := range all {
		if events.Revision(s.Event) == revision {
			flows[events.CorrelationID(s.Event)] = true
		}
	}
	tr := &Trace{Release: rel.String(), Revision: revision}
	index := map[events.ObjectRef]int{} // where each object is in tr.Objects
	var first time.Time
	for _, s := range all {
		e := s.Event
		if !flows[events.CorrelationID(e)] && !(e.Type() == events.TypeRequested && revOf[e.ID()] == revision) {
			continue
		}
		t := e.Time()
		if first.IsZero() {
			first = t
		}
		tr.Events = append(tr.Events, TraceEvent{Sequence: s.Seq, Time: t, Offset: t.Sub(first).Round(time.Millisecond).String(),
			Type: e.Type(), Source: e.Source(), Service: strings.TrimPrefix(e.Source(), events.SourcePrefix), ID: e.ID(),
			Revision: events.Revision(e), Detail: detail(e)})
		tr.Objects = objects(tr.Objects, index, e)
	}
	if len(tr.Events) == 0 {
		return nil, noTrace(fmt.Sprintf("%s revision %d: its events are no longer in the stream (older than its retention)", rel, revision))
	}
	tr.Stages, tr.Ended, tr.Stopped = stages(tr.Events)
	return tr, nil
}

// objects folds e into the revision's object statuses objs, index saying where each is.
func objects(objs []events.ObjectStatus, index map[events.ObjectRef]int, e event.Event) []events.ObjectStatus {
	put := func(o events.ObjectStatus, replace bool) {
		if i, ok := index[o.ObjectRef]; !ok {
			index[o.ObjectRef] = len(objs)
			objs = append(objs, o)
		} else if replace {
			objs[i] = o
		}
	}
	set := func(list []events.ObjectStatus) {
		for _, o := range list {
			put(o, true)
		}
	}
	switch e.Type() {
	case events.TypeApplied:
		if d, err := events.Data[events.Applied](e); err == nil {
			for _, o := range d.Inventory {
				put(events.ObjectStatus{ObjectRef: o.ObjectRef, Status: events.StatusUnknown}, false)
			}
		}
	case events.TypeProgressing:
		if d, err := events.Data[events.Progressing](e); err == nil {
			set(d.Objects)
		}
	case events.TypeFailed:
		if d, err := events.Data[events.Failed](e); err == nil {
			set(d.Objects)
		}
	case events.TypeDegraded:
		if d, err := events.Data[events.Degraded](e); err == nil {
			set(d.Objects)
		}
	case events.TypeRecovered:
		if d, err := events.Data[events.Recovered](e); err == nil {
			set(d.Objects)
		}
	case events.TypeReady:
		for i := range objs {
			objs[i].Status, objs[i].Message = events.StatusCurrent, ""
		}
	}
	return objs
}

// stageStopped is the stage that ends in a release.failed or release.superseded.
const stageStopped = "stopped"

// stages measures each stage from the end of the one before, and says how the revision ended.
func stages(evs []TraceEvent) (out []TraceStage, ended, stopped string) {
	var last TraceEvent
	for i, e := range evs {
		var stage string
		switch e.Type {
		case events.TypeRendered:
			stage = events.StageRender
			if strings.HasSuffix(e.Source, "/history") {
				stage = events.StageRollback
			}
		case events.TypeHooked:
			stage = events.StageHook
		case events.TypeSettled:
			stage = events.StageHealth
		case events.TypeApplied, events.TypeDiffed, events.TypeUninstalled:
			stage = events.StageApply
		case events.TypeReady:
			stage = events.StageHealth
		case events.TypeFailed, events.TypeSuperseded:
			stage = stageStopped
		}
		if i == 0 {
			last = e
			continue
		}
		if stage != "" {
			out = append(out, TraceStage{Stage: stage, From: short(last.Type), To: short(e.Type),
				Duration: e.Time.Sub(last.Time).Round(time.Millisecond).String()})
			last = e
		}
		if events.EndsFlow(e.Type) {
			ended = short(e.Type)
			if (e.Type == events.TypeFailed || e.Type == events.TypeSuperseded) && stopped == "" {
				stopped = short(e.Type) + " " + e.Detail // the first stop, even when a rollback followed
			}
		}
	}
	return out, ended, stopped
}

// detail says in a few words what an event carries.
func detail(e event.Event) string {
	switch e.Type() {
	case events.TypeRequested:
		d, _ := events.Data[events.Requested](e)
		return events.ShortDigests(historyapi.DescribeSource(d.Source))
	case events.TypeRendered:
		d, _ := events.Data[events.Rendered](e)
		s := fmt.Sprintf("%d objects", len(d.Objects))
		if d.Rollback {
			s += ", recorded bundle"
		}
		return s
	case events.TypeHooked:
		d, _ := events.Data[events.Hooked](e)
		return hookedDetail(d)
	case events.TypeSettled:
		d, err := events.Data[events.Settled](e)
		if err != nil {
			return ""
		}
		return fmt.Sprintf("%d objects ready, %s hooks due", d.Objects, d.Phase)
	case events.TypeApplied:
		d, _ := events.Data[events.Applied](e)
		return fmt.Sprintf("%d objects, %d pruned", len(d.Inventory), len(d.Pruned))
	case events.TypeProgressing:
		d, _ := events.Data[events.Progressing](e)
		return fmt.Sprintf("ready %d/%d", d.Ready, d.Total)
	case events.TypeReady:
		d, _ := events.Data[events.Ready](e)
		return fmt.Sprintf("%d objects, %s after the request", d.Objects, time.Duration(d.TimeToReady).Round(time.Millisecond))
	case events.TypeFailed:
		d, _ := events.Data[events.Failed](e)
		return fmt.Sprintf("at %s: %s: %s", d.Stage, d.Reason, firstLine(d.Message))
	case events.TypeApproved, events.TypeRejected:
		var v events.Verdict
		if json.Unmarshal(e.Data(), &v) != nil {
			return ""
		}
		s := strings.TrimPrefix(e.Type(), "release.") + " by " + v.Gate
		if v.By != "" {
			s += " (" + v.By + ")"
		}
		if v.Message != "" {
			s += ": " + firstLine(v.Message)
		}
		if len(v.Findings) > 0 {
			s += fmt.Sprintf(" (%d findings)", len(v.Findings))
		}
		return s
	case events.TypeSuperseded:
		d, _ := events.Data[events.Superseded](e)
		return fmt.Sprintf("at %s by %s", d.Stage, d.By())
	case events.TypeRollbackRequested:
		d, _ := events.Data[events.RollbackRequested](e)
		s := "to the previous ready revision"
		if d.TargetRevision > 0 {
			s = fmt.Sprintf("to revision %d", d.TargetRevision)
		}
		if d.Automatic {
			s += " (automatic)"
		}
		return s
	case events.TypeDegraded:
		d, _ := events.Data[events.Degraded](e)
		return fmt.Sprintf("%d objects", len(d.Objects))
	}
	return ""
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}
