package chaos

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/troupe-dev/troupe/events"
)

// Event is one message of the events stream, as the checker needs it. Two messages with the same
// ID are two Events: nothing is deduplicated here.
type Event struct {
	Seq         uint64 // stream sequence
	Type        string
	ID          string
	Release     string // namespace/name
	Correlation string
	Revision    int // the revision extension; 0 when the event does not carry it
	Time        time.Time

	// Of the events that start a flow (release.requested, rollback and uninstall requests).
	Timeout time.Duration // the request's timeout; 0: events.DefaultTimeout
	DryRun  bool
	Want    State // release.requested: the objects its values ask for
	Target  int   // release.rollback.requested: the target revision (0: the previous ready one)

	// Of the events that end a flow.
	ByRevision int    // release.superseded: the revision that replaced it
	Stage      string // release.failed, release.superseded
	Reason     string // release.failed
}

// State is what one release holds in the cluster: "Kind/name" → the gen marker of the request
// that rendered the object.
type State map[string]string

func (s State) String() string {
	if len(s) == 0 {
		return "nothing"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		parts = append(parts, k+"="+s[k])
	}
	return strings.Join(parts, " ")
}

// Object is one object in the cluster labelled troupe.dev/release.
type Object struct {
	Release string // namespace/name, from its troupe.dev/release-namespace and troupe.dev/release labels
	Key     string // Kind/name
	Gen     string // its gen marker ("" when it has none)
}

// DeadLetter is one message of the dead-letter stream.
type DeadLetter struct {
	Service     string
	Reason      string
	Subject     string // the original subject
	Type        string // the original event's type, when it decoded
	Correlation string // the original event's flow, when it decoded
}

// CallError is a troupe CLI call that failed.
type CallError struct {
	Release string
	Args    string
	Output  string
}

// Input is everything a run collected.
type Input struct {
	Events      []Event
	Objects     []Object
	DeadLetters []DeadLetter
	CallErrors  []CallError
	// Malformed are messages of the events stream that did not decode, each described.
	Malformed []string
	// Now is when the run was checked: a flow with no terminal event by then is lost.
	Now time.Time
	// Grace is added to every deadline (request time + timeout) before a flow counts as stuck.
	Grace time.Duration
	// Kills counts the processes the run killed (reported, not checked).
	Kills int
}

// Finding is one broken promise.
type Finding struct {
	Release  string
	Flow     string // correlation id ("" when about no one flow)
	Revision int
	What     string
}

func (f Finding) String() string {
	s := f.Release
	if f.Revision > 0 {
		s += fmt.Sprintf(" revision %d", f.Revision)
	}
	if f.Flow != "" {
		s += " (flow " + f.Flow + ")"
	}
	return s + ": " + f.What
}

// Report is what Check found.
type Report struct {
	Releases  int
	Revisions int // release.requested messages
	Flows     int // requests, rollbacks and uninstalls
	Kills     int
	Objects   int            // objects labelled troupe.dev/release in the cluster, checked
	Ends      map[string]int // flows by how they ended (their first terminal event; "none")

	Lost        []Finding // flows with no terminal event
	Stuck       []Finding // flows whose terminal event came after deadline + grace
	Duplicated  []Finding // flows with more than one terminal message
	Wrong       []Finding // a release whose objects are not those of its last ready revision, a dry run superseding a real request, an event of no flow, a malformed message
	Leaked      []Finding // objects no release holds
	DeadLetters []Finding // dead letters no failed flow explains
	CallErrors  []Finding // troupe CLI calls that failed

	P50, P99 time.Duration // request to first terminal event
	// Slowest are the flows that took longest to their terminal event, slowest first (at most
	// three), with the longest wait between two of their events: where the time went.
	Slowest []Finding
}

// Failed reports whether any promise was broken.
func (r Report) Failed() bool {
	return len(r.Lost)+len(r.Stuck)+len(r.Duplicated)+len(r.Wrong)+len(r.Leaked)+len(r.DeadLetters)+len(r.CallErrors) > 0
}

// Print writes the table and then every finding.
func (r Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "releases\trevisions\tflows\tkills\tlost\tstuck\tduplicated\twrong\tleaked\tdead letters\tcli errors\tp50\tp99\t")
	fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", r.Releases, r.Revisions, r.Flows, r.Kills,
		len(r.Lost), len(r.Stuck), len(r.Duplicated), len(r.Wrong), len(r.Leaked), len(r.DeadLetters), len(r.CallErrors),
		r.P50.Round(10*time.Millisecond), r.P99.Round(10*time.Millisecond))
	_ = tw.Flush()
	var ends []string
	for _, t := range slices.Sorted(maps.Keys(r.Ends)) {
		ends = append(ends, fmt.Sprintf("%s %d", strings.TrimPrefix(t, "release."), r.Ends[t]))
	}
	fmt.Fprintf(w, "flows ended: %s; %d objects checked\n", strings.Join(ends, ", "), r.Objects)
	for _, f := range r.Slowest {
		fmt.Fprintf(w, "slow: %s\n", f)
	}
	for _, g := range []struct {
		name string
		fs   []Finding
	}{{"lost", r.Lost}, {"stuck", r.Stuck}, {"duplicated", r.Duplicated}, {"wrong", r.Wrong}, {"leaked", r.Leaked},
		{"dead letter", r.DeadLetters}, {"cli error", r.CallErrors}} {
		for _, f := range g.fs {
			fmt.Fprintf(w, "%s: %s\n", g.name, f)
		}
	}
}

// flow is one request and what the stream holds of it.
type flow struct {
	start     Event
	revision  int // release.requested: its number; rollback: the target once known
	events    []Event
	terminals []Event
}

func (f *flow) deadline() time.Time {
	return f.start.Time.Add(cmp.Or(f.start.Timeout, events.DefaultTimeout))
}

func (f *flow) ended() string {
	if len(f.terminals) == 0 {
		return ""
	}
	return f.terminals[0].Type
}

// startsFlow reports whether an event of type typ starts a flow of its own.
func startsFlow(typ string) bool {
	return typ == events.TypeRequested || typ == events.TypeRollbackRequested || typ == events.TypeUninstallRequested
}

// Check checks a run: every flow ends in exactly one terminal event (events.EndsFlow), by its
// deadline plus in.Grace; the cluster holds, for every release, the objects of its last ready
// revision (nothing after an uninstall), or those of a revision after it that failed; no object
// belongs to no release; every dead letter belongs to a flow that failed; no CLI call failed.
// Revisions are numbered as troupe numbers them: the n-th release.requested message of a release
// in stream order is revision n.
func Check(in Input) Report {
	evs := slices.Clone(in.Events)
	slices.SortStableFunc(evs, func(a, b Event) int { return cmp.Compare(a.Seq, b.Seq) })
	r := Report{Kills: in.Kills, Objects: len(in.Objects), Ends: map[string]int{}}

	flows := map[string]*flow{}
	byRelease := map[string][]*flow{} // in start order
	numbered := map[string]int{}
	for _, e := range evs {
		if !startsFlow(e.Type) {
			continue
		}
		if e.Type == events.TypeRequested {
			numbered[e.Release]++
			r.Revisions++
		}
		if _, dup := flows[e.ID]; dup {
			r.Duplicated = append(r.Duplicated, Finding{Release: e.Release, Flow: e.ID, What: fmt.Sprintf("%s stored twice (seq %d)", e.Type, e.Seq)})
			continue
		}
		f := &flow{start: e}
		switch e.Type {
		case events.TypeRequested:
			f.revision = numbered[e.Release]
		case events.TypeRollbackRequested:
			f.revision = e.Target
		}
		flows[e.ID] = f
		byRelease[e.Release] = append(byRelease[e.Release], f)
	}
	r.Flows = len(flows)
	for _, e := range evs {
		if startsFlow(e.Type) {
			continue
		}
		f := flows[e.Correlation]
		if f == nil {
			r.Wrong = append(r.Wrong, Finding{Release: e.Release, Flow: e.Correlation, Revision: e.Revision,
				What: fmt.Sprintf("%s (seq %d) belongs to no request on the stream", e.Type, e.Seq)})
			continue
		}
		f.events = append(f.events, e)
		if events.EndsFlow(e.Type) {
			f.terminals = append(f.terminals, e)
		}
		if f.start.Type == events.TypeRollbackRequested && f.revision == 0 && e.Revision > 0 {
			f.revision = e.Revision
		}
	}

	// Revision number → its request, per release, for rollbacks and superseded checks.
	requests := map[string]map[int]*flow{}
	for rel, fs := range byRelease {
		requests[rel] = map[int]*flow{}
		for _, f := range fs {
			if f.start.Type == events.TypeRequested {
				requests[rel][f.revision] = f
			}
		}
	}

	var times []time.Duration
	for _, rel := range slices.Sorted(maps.Keys(byRelease)) {
		for _, f := range byRelease[rel] {
			fd := Finding{Release: rel, Flow: f.start.ID, Revision: f.revision}
			r.Ends[cmp.Or(f.ended(), "none")]++
			switch len(f.terminals) {
			case 0:
				fd.What = fmt.Sprintf("%s: no terminal event; %s; deadline %s", f.start.Type, lastReached(f), deadlineNote(f, in.Now, in.Grace))
				r.Lost = append(r.Lost, fd)
			case 1:
			default:
				var seen []string
				for _, t := range f.terminals {
					seen = append(seen, fmt.Sprintf("%s (seq %d, id %s)", t.Type, t.Seq, t.ID))
				}
				fd.What = fmt.Sprintf("%d terminal messages: %s", len(f.terminals), strings.Join(seen, ", "))
				r.Duplicated = append(r.Duplicated, fd)
			}
			if len(f.terminals) > 0 {
				first := f.terminals[0]
				times = append(times, first.Time.Sub(f.start.Time))
				if late := first.Time.Sub(f.deadline().Add(in.Grace)); late > 0 {
					fd.What = fmt.Sprintf("%s came %s after deadline + grace (requested %s, timeout %s)", first.Type, late.Round(time.Second),
						f.start.Time.Format(time.TimeOnly), cmp.Or(f.start.Timeout, events.DefaultTimeout))
					r.Stuck = append(r.Stuck, fd)
				}
			}
			for _, t := range f.terminals {
				if t.Type != events.TypeSuperseded || f.start.DryRun {
					continue
				}
				if by := requests[rel][t.ByRevision]; by != nil && by.start.DryRun {
					fd.What = fmt.Sprintf("superseded at %s by revision %d, a dry run (seq %d)", t.Stage, t.ByRevision, t.Seq)
					r.Wrong = append(r.Wrong, fd)
				}
			}
		}
	}
	r.P50, r.P99 = percentile(times, 50), percentile(times, 99)
	r.Slowest = slowest(byRelease, 3)

	// The cluster.
	held := map[string]State{}
	for _, o := range in.Objects {
		if held[o.Release] == nil {
			held[o.Release] = State{}
		}
		held[o.Release][o.Key] = o.Gen
	}
	r.Releases = len(byRelease)
	for _, rel := range slices.Sorted(maps.Keys(held)) {
		if byRelease[rel] == nil {
			for _, k := range slices.Sorted(maps.Keys(held[rel])) {
				r.Leaked = append(r.Leaked, Finding{Release: rel, What: fmt.Sprintf("%s (gen %s): no request of this release on the stream", k, held[rel][k])})
			}
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(byRelease)) {
		want, also, from := expected(byRelease[rel], requests[rel])
		have := held[rel]
		if want.equal(have) || slices.ContainsFunc(also, have.equal) {
			continue
		}
		for _, k := range slices.Sorted(maps.Keys(have)) {
			if _, ok := want[k]; !ok {
				r.Leaked = append(r.Leaked, Finding{Release: rel, What: fmt.Sprintf("%s (gen %s) is held by no revision: %s", k, have[k], from)})
			}
		}
		var wrong []string
		for _, k := range slices.Sorted(maps.Keys(want)) {
			switch g, ok := have[k]; {
			case !ok:
				wrong = append(wrong, k+" missing")
			case g != want[k]:
				wrong = append(wrong, fmt.Sprintf("%s is gen %s, not %s", k, g, want[k]))
			}
		}
		if len(wrong) > 0 {
			r.Wrong = append(r.Wrong, Finding{Release: rel, What: strings.Join(wrong, "; ") + ": " + from})
		}
	}

	// Dead letters: each must be the cause of a failure the user saw.
	for _, d := range in.DeadLetters {
		f := flows[d.Correlation]
		if f != nil && slices.ContainsFunc(f.terminals, func(e Event) bool { return e.Type == events.TypeFailed }) {
			continue
		}
		fd := Finding{Flow: d.Correlation, What: fmt.Sprintf("%s dead-lettered %s (%s): %s", d.Service, d.Subject, d.Type, d.Reason)}
		if f != nil {
			fd.Release, fd.Revision = f.start.Release, f.revision
			fd.What += "; its flow ended " + cmp.Or(f.ended(), "never")
		}
		r.DeadLetters = append(r.DeadLetters, fd)
	}
	for _, m := range in.Malformed {
		r.Wrong = append(r.Wrong, Finding{What: "malformed message in the events stream: " + m})
	}
	for _, c := range in.CallErrors {
		r.CallErrors = append(r.CallErrors, Finding{Release: c.Release, What: fmt.Sprintf("troupe %s: %s", c.Args, strings.TrimSpace(c.Output))})
	}
	return r
}

// expected returns what a release should hold: the state of its last flow (in request order)
// that ended ready or uninstalled, the states the flows after it may have left (they failed,
// were superseded or never ended: a failure can leave what it applied), and words saying which.
// Dry runs change nothing and are skipped.
func expected(fs []*flow, requests map[int]*flow) (want State, also []State, from string) {
	want, from = State{}, "no revision became ready"
	last := -1
	for i, f := range fs {
		if f.start.DryRun {
			continue
		}
		switch f.ended() {
		case events.TypeReady:
			last, want = i, wants(f, requests)
			from = fmt.Sprintf("the last ready is revision %d (%s)", f.revision, f.start.Type)
		case events.TypeUninstalled:
			last, want = i, State{}
			from = "the release was uninstalled last"
		}
	}
	for _, f := range fs[last+1:] {
		if f.start.DryRun {
			continue
		}
		also = append(also, wants(f, requests))
		from += fmt.Sprintf("; then revision %d (%s) ended %s", f.revision, f.start.Type, cmp.Or(f.ended(), "never"))
	}
	return want, also, from
}

// wants is what a flow asks the cluster to hold.
func wants(f *flow, requests map[int]*flow) State {
	switch f.start.Type {
	case events.TypeRequested:
		return f.start.Want
	case events.TypeRollbackRequested:
		if to := requests[f.revision]; to != nil {
			return to.start.Want
		}
	}
	return State{}
}

func (s State) equal(o State) bool { return maps.Equal(s, o) }

// slowest returns the n flows that took longest from request to first terminal event, each with
// the longest gap between two consecutive events of it.
func slowest(byRelease map[string][]*flow, n int) []Finding {
	type timed struct {
		f    *flow
		took time.Duration
	}
	var all []timed
	for _, fs := range byRelease {
		for _, f := range fs {
			if len(f.terminals) > 0 {
				all = append(all, timed{f, f.terminals[0].Time.Sub(f.start.Time)})
			}
		}
	}
	slices.SortFunc(all, func(a, b timed) int {
		return cmp.Or(cmp.Compare(b.took, a.took), cmp.Compare(a.f.start.ID, b.f.start.ID))
	})
	var out []Finding
	for _, t := range all[:min(n, len(all))] {
		prev, gap, from, to := t.f.start, time.Duration(-1), "", ""
		for _, e := range t.f.events {
			if d := e.Time.Sub(prev.Time); d > gap {
				gap, from, to = d, prev.Type, e.Type
			}
			if e.ID == t.f.terminals[0].ID {
				break
			}
			prev = e
		}
		out = append(out, Finding{Release: t.f.start.Release, Flow: t.f.start.ID, Revision: t.f.revision,
			What: fmt.Sprintf("%s after %s; longest wait %s, from %s to %s", t.f.terminals[0].Type, t.took.Round(10*time.Millisecond),
				gap.Round(10*time.Millisecond), from, to)})
	}
	return out
}

func lastReached(f *flow) string {
	if len(f.events) == 0 {
		return "no service answered"
	}
	last := f.events[len(f.events)-1]
	return fmt.Sprintf("last %s (seq %d) %s after the request", last.Type, last.Seq, last.Time.Sub(f.start.Time).Round(time.Millisecond))
}

func deadlineNote(f *flow, now time.Time, grace time.Duration) string {
	d := f.deadline()
	if now.After(d.Add(grace)) {
		return fmt.Sprintf("passed %s ago", now.Sub(d).Round(time.Second))
	}
	return fmt.Sprintf("in %s (checked early)", d.Sub(now).Round(time.Second))
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}
