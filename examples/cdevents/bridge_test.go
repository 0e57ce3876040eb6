package main

import (
	"slices"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
)

// sent is what a test expects of one CDEvent the sink receives.
type sent struct {
	Type     string
	Subject  string
	Artifact string // service events but removed
	Outcome  string // reconciliation.finished
}

func summary(ws []wire) []sent {
	out := make([]sent, 0, len(ws))
	for _, w := range ws {
		out = append(out, sent{Type: w.Context.Type, Subject: w.Subject.ID, Artifact: w.Subject.Content.ArtifactID, Outcome: w.Subject.Content.Outcome})
	}
	return out
}

// TestFlowsToSink: the flows of a release's life — install, upgrade, a failed upgrade, a
// rollback, a dry run, an upgrade superseded by the next, uninstall, install again — and a
// release whose first install fails and is uninstalled, published as the services publish them,
// reach a CloudEvents sink as CDEvents the SDK validates on the receiving side: one service event
// per flow that changed what runs (deployed, upgraded, rolledback, removed), none for a failed,
// superseded or dry-run flow, and one reconciliation started and finished per flow. The bridge
// runs as the subscriber identity, in binary mode.
func TestFlowsToSink(t *testing.T) {
	sys := startSystem(t)
	sk := startSink(t, Spec05)
	b, err := New(t.Context(), sys.sub, Options{Sink: sk.URL, Backoff: []time.Duration{50 * time.Millisecond}})
	require.NoError(t, err)
	run(t, b)

	hello := events.Release{Namespace: "demo", Name: "hello"}
	v1 := &events.ChartInfo{Name: "hello", Version: "0.1.0"}
	v2 := &events.ChartInfo{Name: "hello", Version: "0.2.0"}
	v3 := &events.ChartInfo{Name: "hello", Version: "0.3.0"}
	var flows []string // correlation ids, in order
	note := func(req event.Event) { flows = append(flows, req.ID()) }

	req, _ := sys.install(t, hello, 1, v1, digest(1))
	note(req)
	req, _ = sys.install(t, hello, 2, v2, digest(2))
	note(req)
	req, _ = sys.request(t, hello, events.TypeRequested, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/hello"}}})
	sys.react(t, req, "renderer", events.TypeFailed, events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "line 3: bad"}, 3)
	note(req)
	req, _ = sys.rollback(t, hello, 1, v1, digest(1))
	note(req)
	req, _ = sys.request(t, hello, events.TypeRequested, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/hello"}},
		Options: events.Options{DryRun: true}})
	rendered, _ := sys.react(t, req, "renderer", events.TypeRendered, events.Rendered{Bundle: digest(4), Size: 1, Chart: v3}, 4)
	sys.react(t, rendered, "applier", events.TypeDiffed, events.Diffed{Bundle: digest(4)}, 4)
	note(req)
	req, _ = sys.request(t, hello, events.TypeRequested, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/hello"}}})
	sys.react(t, req, "renderer", events.TypeSuperseded, events.Superseded{ByRevision: 6, Stage: events.StageRender}, 5)
	note(req)
	req, _ = sys.install(t, hello, 6, nil, digest(6)) // a kustomization
	note(req)
	req, _ = sys.request(t, hello, events.TypeUninstallRequested, events.UninstallRequested{})
	sys.react(t, req, "applier", events.TypeUninstalled, events.Uninstalled{Deleted: []events.ObjectRef{{APIVersion: "v1", Kind: "Service", Namespace: "demo", Name: "hello"}}}, 0)
	note(req)

	broken := events.Release{Namespace: "demo", Name: "broken"}
	req, _ = sys.request(t, broken, events.TypeRequested, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/broken"}}})
	rendered, _ = sys.react(t, req, "renderer", events.TypeRendered, events.Rendered{Bundle: digest(9), Size: 1, Chart: &events.ChartInfo{Name: "broken", Version: "1.0.0"}}, 1)
	sys.react(t, rendered, "health", events.TypeFailed, events.Failed{Stage: events.StageHealth, Reason: "timeout", Message: "not ready"}, 1)
	brokenInstall := req
	req, _ = sys.request(t, broken, events.TypeUninstallRequested, events.UninstallRequested{Automatic: true, Revision: 1})
	sys.react(t, req, "applier", events.TypeUninstalled, events.Uninstalled{}, 0)
	brokenUninstall := req

	req, last := sys.install(t, hello, 7, v3, digest(7))
	note(req)

	started := func(subject string) sent { return sent{Type: typeStarted, Subject: subject} }
	finished := func(subject, outcome string) sent {
		return sent{Type: typeFinished, Subject: subject, Outcome: outcome}
	}
	want := []sent{
		started(flows[0]), {Type: typeDeployed, Subject: "demo/hello", Artifact: "pkg:generic/hello@0.1.0"}, finished(flows[0], outcomeSuccess),
		started(flows[1]), {Type: typeUpgraded, Subject: "demo/hello", Artifact: "pkg:generic/hello@0.2.0"}, finished(flows[1], outcomeSuccess),
		started(flows[2]), finished(flows[2], outcomeFailure),
		started(flows[3]), {Type: typeRolledback, Subject: "demo/hello", Artifact: "pkg:generic/hello@0.1.0"}, finished(flows[3], outcomeSuccess),
		started(flows[4]), finished(flows[4], outcomeSuccess), // the dry run
		started(flows[5]), finished(flows[5], outcomeCancel),
		started(flows[6]), {Type: typeUpgraded, Subject: "demo/hello", Artifact: "pkg:generic/hello@" + digest(6)}, finished(flows[6], outcomeSuccess),
		started(flows[7]), {Type: typeRemoved, Subject: "demo/hello"}, finished(flows[7], outcomeSuccess),
		started(brokenInstall.ID()), finished(brokenInstall.ID(), outcomeFailure),
		started(brokenUninstall.ID()), finished(brokenUninstall.ID(), outcomeSuccess), // nothing of it ran: no removed
		started(flows[8]), {Type: typeDeployed, Subject: "demo/hello", Artifact: "pkg:generic/hello@0.3.0"}, finished(flows[8], outcomeSuccess),
	}
	// One event at a time, in the stream's order: once the last flow's finished is in, every
	// event before it was handled.
	require.Eventually(t, func() bool {
		got, _ := sk.got()
		return slices.ContainsFunc(got, func(w wire) bool { return w.Context.Type == typeFinished && w.CustomData.Event == last.ID() })
	}, 60*time.Second, 50*time.Millisecond, "the sink did not get the last flow's end")
	got, problems := sk.got()
	assert.Empty(t, problems)
	assert.Equal(t, want, summary(got))
	for _, w := range got {
		if w.Subject.Content.Environment != nil {
			assert.Equal(t, "demo", w.Subject.Content.Environment.ID, "the namespace is the environment")
		}
	}
	assert.Equal(t, map[string]bool{"binary": true}, sk.seenModes())
}

// TestSinkDownLosesNothing: while the sink answers 500, the troupe event is not acked: it comes
// again after the backoff (the sink sees it more than once), and neither a restart of the bridge
// nor the sink's outage loses it — once the sink is back, the CDEvent is accepted, the event is
// acked, nothing is dead-lettered. Structured mode, service events only.
func TestSinkDownLosesNothing(t *testing.T) {
	sys := startSystem(t)
	sk := startSink(t, Spec05)
	sk.failing.Store(true)
	o := Options{Sink: sk.URL, Structured: true, NoReconciliation: true, MaxDeliver: 1000, Backoff: []time.Duration{100 * time.Millisecond}}
	b, err := New(t.Context(), sys.sub, o)
	require.NoError(t, err)
	stop := run(t, b)

	hello := events.Release{Namespace: "demo", Name: "hello"}
	_, ready := sys.install(t, hello, 1, &events.ChartInfo{Name: "hello", Version: "0.1.0"}, digest(1))
	m := mapper{spec: specs[Spec05], source: DefaultSource}
	cds, err := m.translate(ready, facts{Chart: &events.ChartInfo{Name: "hello", Version: "0.1.0"}})
	require.NoError(t, err)
	require.Len(t, cds, 1)
	id := cds[0].GetId()

	require.Eventually(t, func() bool { return sk.tries(id) >= 2 }, 60*time.Second, 20*time.Millisecond, "a refused event is tried again")
	cons, err := sys.admin.Consumer(t.Context(), events.StreamName, DefaultName)
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	readySeq := lastSeq(t, sys, hello, events.TypeReady)
	assert.Less(t, info.AckFloor.Stream, readySeq, "not acked while the sink refuses it")

	stop() // a restart while the sink is down
	tries := sk.tries(id)
	sk.failing.Store(false)
	b, err = New(t.Context(), sys.sub, o)
	require.NoError(t, err)
	run(t, b)

	require.Eventually(t, func() bool { got, _ := sk.got(); return len(got) == 1 }, 60*time.Second, 20*time.Millisecond, "the event reached the sink")
	got, problems := sk.got()
	assert.Empty(t, problems)
	assert.Equal(t, []sent{{Type: typeDeployed, Subject: "demo/hello", Artifact: "pkg:generic/hello@0.1.0"}}, summary(got))
	assert.Equal(t, id, got[0].Context.ID)
	assert.Greater(t, sk.tries(id), tries)
	assert.Equal(t, map[string]bool{"structured": true}, sk.seenModes())
	require.Eventually(t, func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.AckFloor.Stream >= readySeq && info.NumAckPending == 0
	}, 30*time.Second, 20*time.Millisecond, "acked once the sink took it")
	dlq, err := sys.admin.Stream(t.Context(), events.Names{}.DeadLetterStream())
	require.NoError(t, err)
	dinfo, err := dlq.Info(t.Context())
	require.NoError(t, err)
	assert.Zero(t, dinfo.State.Msgs, "nothing dead-lettered")
}

// lastSeq is the stream sequence of r's last event of type typ.
func lastSeq(t *testing.T, sys *system, r events.Release, typ string) uint64 {
	t.Helper()
	s, err := sys.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	subject, err := events.Names{}.Subject(r, typ)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	return m.Sequence
}

// TestLookup: the facts of an event come from the stream as it was up to the event's position,
// whatever came after it (the bridge behind): a ready revision is live from then on, an
// uninstall ends that, and a flow's release.rendered is its own, not a later flow's.
func TestLookup(t *testing.T) {
	sys := startSystem(t)
	l, err := newLookup(t.Context(), sys.sub, events.Names{})
	require.NoError(t, err)
	r := events.Release{Namespace: "demo", Name: "hello"}
	v1 := &events.ChartInfo{Name: "hello", Version: "0.1.0"}
	v2 := &events.ChartInfo{Name: "hello", Version: "0.2.0"}

	_, ready1 := sys.install(t, r, 1, v1, digest(1))
	seqReady1 := lastSeq(t, sys, r, events.TypeReady)
	un, _ := sys.request(t, r, events.TypeUninstallRequested, events.UninstallRequested{})
	_, seqUninstalled1 := sys.react(t, un, "applier", events.TypeUninstalled, events.Uninstalled{}, 0)
	_, ready2 := sys.install(t, r, 2, v2, digest(2))
	seqReady2 := lastSeq(t, sys, r, events.TypeReady)
	un, _ = sys.request(t, r, events.TypeUninstallRequested, events.UninstallRequested{})
	_, seqUninstalled2 := sys.react(t, un, "applier", events.TypeUninstalled, events.Uninstalled{}, 0)

	for _, tc := range []struct {
		name string
		seq  uint64
		live bool
	}{
		{"the first ready", seqReady1, false},
		{"an uninstall after it", seqUninstalled1, true},
		{"ready again after the uninstall (a later uninstall in the stream)", seqReady2, false},
		{"the last uninstall", seqUninstalled2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live, err := l.live(t.Context(), r, tc.seq)
			require.NoError(t, err)
			assert.Equal(t, tc.live, live)
		})
	}
	f, err := l.facts(t.Context(), ready1, seqReady1)
	require.NoError(t, err)
	assert.Equal(t, facts{Chart: v1, Bundle: digest(1)}, f, "the first flow's render, though a later flow rendered since")
	f, err = l.facts(t.Context(), ready2, seqReady2)
	require.NoError(t, err)
	assert.Equal(t, facts{Chart: v2, Bundle: digest(2)}, f)

	other := events.Release{Namespace: "demo", Name: "other"}
	live, err := l.live(t.Context(), other, seqUninstalled2)
	require.NoError(t, err)
	assert.False(t, live, "another release's events say nothing of it")

	stream, err := sys.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	assert.Zero(t, info.State.Consumers, "the consumers that read the renders are deleted")
}

// TestLiveWhenHistoryAgedOut: a release whose first request aged out of the stream, with no ready
// revision left in it, is taken to be running: its next ready revision is an upgrade.
func TestLiveWhenHistoryAgedOut(t *testing.T) {
	sys := startSystem(t)
	r := events.Release{Namespace: "demo", Name: "hello"}
	rv, err := events.NewRevisions(t.Context(), sys.admin, events.Names{})
	require.NoError(t, err)
	number := func(seq uint64) {
		_, err := rv.Of(t.Context(), r, seq)
		require.NoError(t, err)
	}
	_, seq := sys.request(t, r, events.TypeRequested, events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/hello"}}})
	number(seq) // as the renderer numbers it
	sys.install(t, r, 1, nil, digest(1))
	number(lastSeq(t, sys, r, events.TypeRequested))

	stream, err := sys.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	l, err := newLookup(t.Context(), sys.sub, events.Names{})
	require.NoError(t, err)
	readySeq := lastSeq(t, sys, r, events.TypeReady)
	live, err := l.live(t.Context(), r, readySeq)
	require.NoError(t, err)
	require.False(t, live, "the whole history is there: no ready before")

	require.NoError(t, stream.Purge(t.Context(), jetstream.WithPurgeSequence(readySeq)))
	live, err = l.live(t.Context(), r, readySeq)
	require.NoError(t, err)
	assert.True(t, live, "its first request aged out")
}

// TestSpec04ForFlux: with --spec 0.4 and --reconciliation=false, as the README runs it for a
// Flux CDEvents Receiver, the sink gets CDEvents v0.4.1 (service.*.0.2.0) in binary mode, with
// the type in the Ce-Type header and the CDEvent as the body, which the SDK's v0.4 reader — the
// one Flux reads them with — parses and validates.
func TestSpec04ForFlux(t *testing.T) {
	sys := startSystem(t)
	sk := startSink(t, Spec04)
	b, err := New(t.Context(), sys.sub, Options{Sink: sk.URL, Spec: Spec04, NoReconciliation: true, Backoff: []time.Duration{50 * time.Millisecond}})
	require.NoError(t, err)
	run(t, b)

	hello := events.Release{Namespace: "demo", Name: "hello"}
	sys.install(t, hello, 1, &events.ChartInfo{Name: "hello", Version: "0.1.0"}, digest(1))
	sys.install(t, hello, 2, &events.ChartInfo{Name: "hello", Version: "0.2.0"}, digest(2))
	req, _ := sys.request(t, hello, events.TypeUninstallRequested, events.UninstallRequested{})
	sys.react(t, req, "applier", events.TypeUninstalled, events.Uninstalled{}, 0)

	want := []sent{
		{Type: "dev.cdevents.service.deployed.0.2.0", Subject: "demo/hello", Artifact: "pkg:generic/hello@0.1.0"},
		{Type: "dev.cdevents.service.upgraded.0.2.0", Subject: "demo/hello", Artifact: "pkg:generic/hello@0.2.0"},
		{Type: "dev.cdevents.service.removed.0.2.0", Subject: "demo/hello"},
	}
	require.Eventually(t, func() bool { got, _ := sk.got(); return len(got) >= len(want) }, 60*time.Second, 20*time.Millisecond)
	got, problems := sk.got()
	assert.Empty(t, problems)
	assert.Equal(t, want, summary(got))
	assert.Equal(t, map[string]bool{"binary": true}, sk.seenModes())
}
