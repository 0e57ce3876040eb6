package events_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// Bundle digests a gate judges.
var (
	bundleA = "sha256:" + strings.Repeat("a", 64)
	bundleB = "sha256:" + strings.Repeat("b", 64)
	bundleC = "sha256:" + strings.Repeat("c", 64)
	bundleD = "sha256:" + strings.Repeat("d", 64)
)

// TestVerdictSubjects: a verdict goes on its gate's subject, which ParseSubject reads back as the
// verdict's type; a bare verdict subject, or one whose gate is no name, is no subject of troupe's.
func TestVerdictSubjects(t *testing.T) {
	r := events.Release{Namespace: "prod", Name: "podinfo"}
	sandbox, err := events.NewNames("sbx")
	require.NoError(t, err)
	for _, tc := range []struct {
		names events.Names
		typ   string
		want  string
	}{
		{events.Names{}, events.TypeApproved, "troupe.release.prod.podinfo.approved.policy"},
		{events.Names{}, events.TypeRejected, "troupe.release.prod.podinfo.rejected.policy"},
		{sandbox, events.TypeApproved, "sbx.troupe.release.prod.podinfo.approved.policy"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			subj, err := tc.names.VerdictSubject(r, tc.typ, "policy")
			require.NoError(t, err)
			assert.Equal(t, tc.want, subj)
			gotR, gotT, err := tc.names.ParseSubject(subj)
			require.NoError(t, err)
			assert.Equal(t, r, gotR)
			assert.Equal(t, tc.typ, gotT)
			assert.Equal(t, "policy", tc.names.SubjectGate(subj))

			_, err = tc.names.Subject(r, tc.typ)
			assert.ErrorIs(t, err, events.ErrUnknownType, "a verdict has no subject but its gate's")
		})
	}

	for _, bad := range []string{
		"troupe.release.prod.podinfo.approved", // bare: whose?
		"troupe.release.prod.podinfo.rejected",
		"troupe.release.prod.podinfo.approved.Policy",
		"troupe.release.prod.podinfo.approved.policy.extra",
		"troupe.release.prod.podinfo.approved.*",
		"troupe.release.prod.podinfo.approved.",
	} {
		_, _, err := events.Names{}.ParseSubject(bad)
		assert.ErrorIs(t, err, events.ErrInvalidSubject, bad)
	}
	assert.Empty(t, events.Names{}.SubjectGate("troupe.release.prod.podinfo.rendered"))
	assert.Empty(t, events.Names{}.SubjectGate("troupe.release.prod.podinfo.rollback.requested"))
	assert.Empty(t, sandbox.SubjectGate("troupe.release.prod.podinfo.approved.policy"), "another system's")

	_, err = events.Names{}.VerdictSubject(r, events.TypeReady, "policy")
	assert.ErrorIs(t, err, events.ErrUnknownType)
	_, err = events.Names{}.VerdictSubject(r, events.TypeApproved, "*")
	assert.ErrorIs(t, err, events.ErrInvalidName)
	_, err = events.Names{}.VerdictSubject(events.Release{Namespace: "prod", Name: "Bad"}, events.TypeApproved, "policy")
	assert.ErrorIs(t, err, events.ErrInvalidName)
}

// TestVerdictFilters: a subscriber to verdicts reads every gate's; a gate's identity may publish
// on its own gate's only.
func TestVerdictFilters(t *testing.T) {
	f, err := events.Names{}.TypeFilter(events.TypeApproved)
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.*.*.approved.*", f)
	f, err = events.Names{}.TypeFilter(events.TypeRejected)
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.*.*.rejected.*", f)
	f, err = events.Names{}.VerdictFilter(events.TypeRejected, "policy")
	require.NoError(t, err)
	assert.Equal(t, "troupe.release.*.*.rejected.policy", f)
	_, err = events.Names{}.VerdictFilter(events.TypeRendered, "policy")
	assert.ErrorIs(t, err, events.ErrUnknownType)
	_, err = events.Names{}.VerdictFilter(events.TypeApproved, ">")
	assert.ErrorIs(t, err, events.ErrInvalidName)
	assert.Equal(t, "troupe.gate.manual.decide", events.Names{}.GateDecisionSubject("manual"))
}

// verdictEvent is gate's verdict of type typ on the revision rendered rendered, as the gate SDK
// derives it; key tells apart several verdicts of one gate on one flow.
func verdictEvent(t *testing.T, rendered event.Event, typ string, v events.Verdict, key string) event.Event {
	t.Helper()
	var data any = events.Approved(v)
	if typ == events.TypeRejected {
		data = events.Rejected(v)
	}
	e, err := events.Derive(rendered, "troupe/gate-"+v.Gate, typ, data, key)
	require.NoError(t, err)
	return e
}

// flow is a request and its rendered revision.
type flow struct {
	request, rendered event.Event
}

func newFlow(t *testing.T, r events.Release, revision int, bundle string, gates ...string) flow {
	t.Helper()
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, r,
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/" + r.Name}}})
	require.NoError(t, err)
	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered,
		events.Rendered{Bundle: bundle, Size: 1, RenderTime: events.Duration(1), Gates: gates})
	require.NoError(t, err)
	events.WithRevision(&rendered, revision)
	return flow{req, rendered}
}

// TestVerdictMessage: Names.Message puts a verdict on the subject of the gate its data names,
// which Decode takes; the same verdict on another gate's subject is malformed.
func TestVerdictMessage(t *testing.T) {
	r := events.Release{Namespace: "prod", Name: "web"}
	f := newFlow(t, r, 1, bundleA, "policy")
	for _, typ := range []string{events.TypeApproved, events.TypeRejected} {
		t.Run(typ, func(t *testing.T) {
			e := verdictEvent(t, f.rendered, typ, events.Verdict{Gate: "policy", Revision: 1, Bundle: bundleA, Message: "why"}, "")
			m, err := events.Names{}.Message(e)
			require.NoError(t, err)
			want, err := events.Names{}.VerdictSubject(r, typ, "policy")
			require.NoError(t, err)
			assert.Equal(t, want, m.Subject)

			got, err := events.Names{}.Decode(m.Subject, m.Header, m.Data)
			require.NoError(t, err)
			assert.Equal(t, e.ID(), got.ID())

			other, err := events.Names{}.VerdictSubject(r, typ, "manual")
			require.NoError(t, err)
			_, err = events.Names{}.Decode(other, m.Header, m.Data)
			assert.ErrorIs(t, err, events.ErrMalformed, "a verdict of gate policy on gate manual's subject")
			assert.ErrorContains(t, err, `gate "policy" on gate "manual"`)

			bare := strings.TrimSuffix(m.Subject, ".policy")
			_, err = events.Names{}.Decode(bare, m.Header, m.Data)
			assert.ErrorIs(t, err, events.ErrMalformed, "a verdict on a subject naming no gate")

			bad := e.Clone()
			bad.DataEncoded = []byte(`{"gate":"Not A Gate","revision":1,"bundle":"` + bundleA + `","message":"m"}`)
			_, err = events.Names{}.Message(bad)
			assert.ErrorIs(t, err, events.ErrMalformed, "a verdict whose gate is no name has no subject")
		})
	}
}

// TestGatePolicy: the admin requires gates per namespace (a rule per gate, replaced when
// required again), removes them, and lists the namespaces that require some; writers racing each
// other all get their rule in.
func TestGatePolicy(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	p, err := events.OpenGatePolicy(ctx, js, events.Names{})
	require.NoError(t, err)

	ng, err := p.For(ctx, "prod")
	require.NoError(t, err)
	assert.Equal(t, &events.NamespaceGates{Namespace: "prod"}, ng, "no policy: no gate")
	list, err := p.List(ctx)
	require.NoError(t, err)
	assert.Empty(t, list)

	require.NoError(t, p.Require(ctx, "prod", events.GateRule{Gate: "policy", By: "ops"}))
	require.NoError(t, p.Require(ctx, "prod", events.GateRule{Gate: "manual"}))
	require.NoError(t, p.Require(ctx, "prod", events.GateRule{Gate: "policy", TrustApprovals: true, By: "sre"}))
	require.NoError(t, p.Require(ctx, "dev", events.GateRule{Gate: "policy"}))
	ng, err = p.For(ctx, "prod")
	require.NoError(t, err)
	assert.Equal(t, []events.GateRule{{Gate: "manual"}, {Gate: "policy", TrustApprovals: true, By: "sre"}}, ng.Gates,
		"sorted, one rule per gate: the last one set")
	rule, ok := ng.Rule("policy")
	assert.True(t, ok)
	assert.True(t, rule.TrustApprovals)
	_, ok = ng.Rule("other")
	assert.False(t, ok)
	_, ok = (*events.NamespaceGates)(nil).Rule("policy")
	assert.False(t, ok)

	list, err = p.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	assert.Equal(t, "dev", list[0].Namespace)
	assert.Equal(t, "prod", list[1].Namespace)

	removed, err := p.Remove(ctx, "prod", "nope")
	require.NoError(t, err)
	assert.False(t, removed, "it was not required")
	removed, err = p.Remove(ctx, "dev", "policy")
	require.NoError(t, err)
	assert.True(t, removed)
	list, err = p.List(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1, "a namespace requiring nothing is not listed")
	assert.Equal(t, "prod", list[0].Namespace)
	ng, err = p.For(ctx, "dev")
	require.NoError(t, err)
	assert.Empty(t, ng.Gates)
	removed, err = p.Remove(ctx, "dev", "policy")
	require.NoError(t, err)
	assert.False(t, removed)
	require.NoError(t, p.Require(ctx, "dev", events.GateRule{Gate: "scan"}), "required again after its last gate went")
	ng, err = p.For(ctx, "dev")
	require.NoError(t, err)
	assert.Equal(t, []events.GateRule{{Gate: "scan"}}, ng.Gates)
	_, err = p.Remove(ctx, "dev", "scan")
	require.NoError(t, err)

	assert.ErrorIs(t, p.Require(ctx, "prod", events.GateRule{Gate: "Not.A.Gate"}), events.ErrInvalidName)
	assert.ErrorIs(t, p.Require(ctx, "prod", events.GateRule{}), events.ErrInvalidName)
	assert.ErrorIs(t, p.Require(ctx, "prod.x", events.GateRule{Gate: "policy"}), events.ErrInvalidName)
	_, err = p.For(ctx, "*")
	assert.ErrorIs(t, err, events.ErrInvalidName)

	// Writers racing on one namespace: each re-reads and tries again when another came first.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			assert.NoError(t, p.Require(ctx, "race", events.GateRule{Gate: fmt.Sprintf("gate-%d", i)}))
		})
	}
	wg.Wait()
	ng, err = p.For(ctx, "race")
	require.NoError(t, err)
	assert.Len(t, ng.Gates, 8, "every writer's rule is in")
}

func TestRequiredGates(t *testing.T) {
	policy := &events.NamespaceGates{Namespace: "prod", Gates: []events.GateRule{{Gate: "policy"}, {Gate: "manual"}}}
	for _, tc := range []struct {
		name      string
		requested []string
		policy    *events.NamespaceGates
		want      []string
	}{
		{"none", nil, nil, nil},
		{"requested only", []string{"scan", "manual"}, nil, []string{"manual", "scan"}},
		{"policy only", nil, policy, []string{"manual", "policy"}},
		{"an empty policy", []string{"scan"}, &events.NamespaceGates{Namespace: "prod"}, []string{"scan"}},
		{"the union, sorted, each once", []string{"scan", "policy"}, policy, []string{"manual", "policy", "scan"}},
		{"a request naming the policy's gates", []string{"policy", "manual"}, policy, []string{"manual", "policy"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requested := append([]string(nil), tc.requested...)
			got := events.RequiredGates(tc.requested, tc.policy)
			if tc.want == nil {
				assert.Empty(t, got)
			} else {
				assert.Equal(t, tc.want, got)
			}
			assert.Equal(t, requested, tc.requested, "the request's list is left as it was")
		})
	}
}

// TestGateVerdicts: a revision's verdicts are those after its release.rendered, of its flow, for
// its revision and its bundle digest, of the gates it needs, each on its gate's own subject; a
// gate's last verdict counts. ApprovedBefore finds a gate's approval of a bundle in any revision
// of the release.
func TestGateVerdicts(t *testing.T) {
	_, nc, js := natstest.Start(t)
	ctx := t.Context()
	names := events.Names{}
	pub := events.NewPublisher(js, names)
	stream, err := js.Stream(ctx, names.Stream())
	require.NoError(t, err)
	web := events.Release{Namespace: "prod", Name: "web"}
	publish := func(e event.Event) uint64 {
		t.Helper()
		ack, err := pub.Publish(ctx, e)
		require.NoError(t, err)
		return ack.Sequence
	}

	f := newFlow(t, web, 2, bundleA, "manual", "policy")
	other := newFlow(t, web, 3, bundleA, "manual", "policy")
	publish(f.request)
	// An approval before the revision was rendered is not for it.
	publish(verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleA}, "early"))
	from := publish(f.rendered)

	verdicts := func() map[string]events.GateVerdict {
		t.Helper()
		v, err := names.GateVerdicts(ctx, stream, web, from, events.CorrelationID(f.rendered), 2, bundleA, []string{"manual", "policy"})
		require.NoError(t, err)
		return v
	}
	assert.Empty(t, verdicts())

	// Verdicts that are none on this revision.
	publish(verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 1, Bundle: bundleA}, "another revision"))
	publish(verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleB}, "another bundle"))
	publish(verdictEvent(t, other.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleA}, "another flow"))
	publish(verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "scan", Revision: 2, Bundle: bundleA}, "a gate not needed"))
	// manual's approval on policy's subject (a publisher that may publish there: here, without
	// permissions) is no one's.
	forged := verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleA}, "forged")
	m, err := names.Message(forged)
	require.NoError(t, err)
	m.Subject, err = names.VerdictSubject(web, events.TypeApproved, "policy")
	require.NoError(t, err)
	_, err = js.PublishMsg(ctx, m)
	require.NoError(t, err)
	// A verdict of another release.
	api := newFlow(t, events.Release{Namespace: "prod", Name: "api"}, 2, bundleA, "manual")
	api.rendered.SetExtension(events.ExtCorrelationID, events.CorrelationID(f.rendered))
	publish(verdictEvent(t, api.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleA}, "another release"))
	// Not even a CloudEvent.
	require.NoError(t, nc.Publish("troupe.release.prod.web.approved.manual", []byte("not an event")))
	require.NoError(t, nc.Flush())
	assert.Empty(t, verdicts(), "no verdict on revision 2 of bundle A in this flow")
	assert.Equal(t, []string{"manual", "policy"}, events.Pending([]string{"manual", "policy"}, verdicts()))

	publish(verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "policy", Revision: 2, Bundle: bundleA, Reason: "rules_passed"}, "1"))
	assert.Equal(t, map[string]events.GateVerdict{"policy": {Gate: "policy", Verdict: events.VerdictApproved, Reason: "rules_passed"}}, verdicts())
	assert.Equal(t, []string{"manual"}, events.Pending([]string{"manual", "policy"}, verdicts()))

	// The last verdict counts, whichever its type.
	finding := events.Finding{Rule: "image-digest", Object: &events.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "prod", Name: "web"},
		Message: "image nginx:latest has no digest"}
	publish(verdictEvent(t, f.rendered, events.TypeRejected, events.Verdict{Gate: "policy", Revision: 2, Bundle: bundleA, Reason: "policy_violation",
		Message: "1 finding", Findings: []events.Finding{finding}}, "2"))
	publish(verdictEvent(t, f.rendered, events.TypeRejected, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleA, Message: "not today", By: "alice"}, "1"))
	assert.Equal(t, map[string]events.GateVerdict{
		"policy": {Gate: "policy", Verdict: events.VerdictRejected, Reason: "policy_violation", Message: "1 finding", Findings: []events.Finding{finding}},
		"manual": {Gate: "manual", Verdict: events.VerdictRejected, Message: "not today", By: "alice"},
	}, verdicts())
	publish(verdictEvent(t, f.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 2, Bundle: bundleA, By: "bob"}, "2"))
	got := verdicts()
	assert.Equal(t, events.VerdictApproved, got["manual"].Verdict, "approved after it was rejected")
	assert.Equal(t, "bob", got["manual"].By)
	assert.Equal(t, events.VerdictRejected, got["policy"].Verdict)
	assert.Empty(t, events.Pending([]string{"manual", "policy"}, got))

	v, err := names.GateVerdicts(ctx, stream, web, from, events.CorrelationID(f.rendered), 2, bundleA, nil)
	require.NoError(t, err)
	assert.Empty(t, v, "no gate needed, no verdict read")

	// ApprovedBefore: an approval of the bundle by the gate, for this release, in any revision.
	for _, tc := range []struct {
		rel    events.Release
		gate   string
		bundle string
		want   bool
	}{
		{web, "policy", bundleA, false}, // approved, then rejected: taken back
		{web, "manual", bundleA, true},  // rejected, then approved
		{web, "manual", bundleB, true},  // not on revision 2 of this flow, but an approval of B
		{web, "policy", bundleB, false},
		{web, "policy", bundleC, false},
		{web, "scan", bundleB, false},
		{events.Release{Namespace: "prod", Name: "api"}, "policy", bundleA, false},
		{events.Release{Namespace: "dev", Name: "web"}, "manual", bundleA, false},
	} {
		got, err := names.ApprovedBefore(ctx, stream, tc.rel, tc.gate, tc.bundle)
		require.NoError(t, err)
		assert.Equal(t, tc.want, got, "%s approved %s of %s before", tc.gate, tc.bundle, tc.rel)
	}
	// A rejection is no approval, an approval taken back by a rejection neither, nor is an
	// approval on another gate's subject.
	rejectedOnly := newFlow(t, web, 4, bundleC, "policy")
	publish(verdictEvent(t, rejectedOnly.rendered, events.TypeApproved, events.Verdict{Gate: "policy", Revision: 4, Bundle: bundleC}, "first"))
	ok, err := names.ApprovedBefore(ctx, stream, web, "policy", bundleC)
	require.NoError(t, err)
	assert.True(t, ok, "approved")
	publish(verdictEvent(t, rejectedOnly.rendered, events.TypeRejected, events.Verdict{Gate: "policy", Revision: 4, Bundle: bundleC, Message: "no"}, "then"))
	forged = verdictEvent(t, rejectedOnly.rendered, events.TypeApproved, events.Verdict{Gate: "manual", Revision: 4, Bundle: bundleC}, "forged")
	m, err = names.Message(forged)
	require.NoError(t, err)
	m.Subject, err = names.VerdictSubject(web, events.TypeApproved, "policy")
	require.NoError(t, err)
	_, err = js.PublishMsg(ctx, m, jetstream.WithMsgID(forged.ID()))
	require.NoError(t, err)
	for _, gate := range []string{"policy", "manual"} {
		ok, err := names.ApprovedBefore(ctx, stream, web, gate, bundleC)
		require.NoError(t, err)
		assert.False(t, ok, gate)
	}
	// A dry run's approval is what the gate would have said: no approval a rollback trusts.
	dry := newFlow(t, web, 5, bundleD, "policy")
	publish(verdictEvent(t, dry.rendered, events.TypeApproved, events.Verdict{Gate: "policy", Revision: 5, Bundle: bundleD, DryRun: true}, "dry"))
	ok, err = names.ApprovedBefore(ctx, stream, web, "policy", bundleD)
	require.NoError(t, err)
	assert.False(t, ok, "a dry run's approval")
}

// TestGatePolicyIsBounded: a namespace requires at most MaxPolicyGates gates (with a request's
// own they fit a release.rendered); one more is refused and changes nothing, a rule changed in
// place is no more.
func TestGatePolicyIsBounded(t *testing.T) {
	_, _, js := natstest.Start(t)
	ctx := t.Context()
	p, err := events.OpenGatePolicy(ctx, js, events.Names{})
	require.NoError(t, err)
	for i := range events.MaxPolicyGates {
		require.NoError(t, p.Require(ctx, "prod", events.GateRule{Gate: fmt.Sprintf("g%02d", i)}))
	}
	err = p.Require(ctx, "prod", events.GateRule{Gate: "one-more"})
	require.ErrorContains(t, err, fmt.Sprintf("namespace prod requires %d gates already", events.MaxPolicyGates))
	require.NoError(t, p.Require(ctx, "prod", events.GateRule{Gate: "g00", TrustApprovals: true}))
	ng, err := p.For(ctx, "prod")
	require.NoError(t, err)
	require.Len(t, ng.Gates, events.MaxPolicyGates)
	rule, ok := ng.Rule("g00")
	assert.True(t, ok && rule.TrustApprovals)
	_, ok = ng.Rule("one-more")
	assert.False(t, ok)
}
