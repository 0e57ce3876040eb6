package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/natstest"
)

// gateSystem is an embedded NATS with auth on, the admin's connection (what the other services
// would publish) and a gate's, connected as the gate's own identity.
type gateSystem struct {
	auth  natstest.Auth
	admin jetstream.JetStream
	pub   *events.Publisher
	gate  jetstream.JetStream
}

func connectAs(t *testing.T, url, creds string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := events.ConnOptions{Server: url, CredsFile: creds}.Connect("test")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func startGateSystem(t *testing.T, gate string) gateSystem {
	t.Helper()
	a := natstest.StartAuth(t)
	_, admin := connectAs(t, a.URL, a.Creds[access.Admin])
	_, gjs := connectAs(t, a.URL, a.GateCreds(t, gate))
	return gateSystem{auth: a, admin: admin, pub: events.NewPublisher(admin, events.Names{}), gate: gjs}
}

// putBundle stores a bundle of objs for r, as the renderer would, and returns its digest.
func (s gateSystem) putBundle(t *testing.T, r events.Release, objs ...map[string]any) string {
	t.Helper()
	b, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: r.String(), Objects: objs})
	require.NoError(t, err)
	o, err := events.OpenObjects(t.Context(), s.admin, events.BucketBundles)
	require.NoError(t, err)
	digest, _, err := o.Put(t.Context(), strings.NewReader(string(b)))
	require.NoError(t, err)
	return digest
}

// render publishes a request for r and its rendered revision of bundle, naming gates; it
// returns the flow and the rendered event's stream sequence. ended makes the flow end (a
// release.failed) before it is rendered.
func (s gateSystem) render(t *testing.T, r events.Release, revision int, bundle string, ended bool, gates ...string) (flow, uint64) {
	t.Helper()
	f := newFlow(t, r, revision, bundle, gates...)
	_, err := s.pub.Publish(t.Context(), f.request)
	require.NoError(t, err)
	if ended {
		s.end(t, f)
	}
	ack, err := s.pub.Publish(t.Context(), f.rendered)
	require.NoError(t, err)
	return f, ack.Sequence
}

// end ends f's flow with a release.failed, as a stage would.
func (s gateSystem) end(t *testing.T, f flow) {
	t.Helper()
	failed, err := events.Derive(f.request, "troupe/renderer", events.TypeFailed,
		events.Failed{Stage: events.StageRender, Reason: "template_error", Message: "it broke"})
	require.NoError(t, err)
	_, err = s.pub.Publish(t.Context(), failed)
	require.NoError(t, err)
}

// verdictsOf returns the verdicts in the stream of f's flow, in order.
func (s gateSystem) verdictsOf(t *testing.T, f flow) []event.Event {
	t.Helper()
	var out []event.Event
	for _, typ := range []string{events.TypeApproved, events.TypeRejected} {
		filter, err := events.Names{}.TypeFilter(typ)
		require.NoError(t, err)
		msgs, err := tryReadAll(t.Context(), s.admin, events.StreamName, filter)
		require.NoError(t, err)
		for _, m := range msgs {
			e, err := events.Names{}.Decode(m.Subject(), m.Headers(), m.Data())
			require.NoError(t, err, "the gate publishes well-formed verdicts")
			if events.CorrelationID(e) == events.CorrelationID(f.rendered) {
				out = append(out, e)
			}
		}
	}
	slices.SortFunc(out, func(a, b event.Event) int { return a.Time().Compare(b.Time()) })
	return out
}

// waitVerdictsOf waits for n verdicts of f's flow.
func (s gateSystem) waitVerdictsOf(t *testing.T, f flow, n int) []event.Event {
	t.Helper()
	var got []event.Event
	require.Eventually(t, func() bool {
		got = s.verdictsOf(t, f)
		return len(got) >= n
	}, 20*time.Second, 20*time.Millisecond, "no verdict on %s revision %d", f.rendered.Subject(), events.Revision(f.rendered))
	return got
}

// waitVerdict waits for the one verdict of f's flow.
func (s gateSystem) waitVerdict(t *testing.T, f flow) event.Event {
	t.Helper()
	got := s.waitVerdictsOf(t, f, 1)
	require.Len(t, got, 1)
	return got[0]
}

// waitHandled waits until the gate's consumer acknowledged every event up to seq.
func (s gateSystem) waitHandled(t *testing.T, gate string, seq uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		c, err := s.admin.Consumer(t.Context(), events.StreamName, access.GatePrefix+gate)
		if err != nil {
			return false
		}
		info, err := c.Info(t.Context())
		return err == nil && info.AckFloor.Stream >= seq
	}, 20*time.Second, 20*time.Millisecond)
}

func deployment(name, image string) map[string]any {
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": "prod"},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
			"containers": []any{map[string]any{"name": "app", "image": image}}}}}}
}

// judgeImages is a policy gate's rule: no image tagged latest.
func judgeImages(_ context.Context, req events.GateRequest) (events.Judgement, error) {
	var findings []events.Finding
	for _, o := range req.Bundle.Objects {
		spec, _ := o["spec"].(map[string]any)
		tmpl, _ := spec["template"].(map[string]any)
		pod, _ := tmpl["spec"].(map[string]any)
		containers, _ := pod["containers"].([]any)
		for _, c := range containers {
			image, _ := c.(map[string]any)["image"].(string)
			if strings.HasSuffix(image, ":latest") {
				meta := o["metadata"].(map[string]any)
				findings = append(findings, events.Finding{Rule: "no-latest",
					Object:  &events.ObjectRef{APIVersion: o["apiVersion"].(string), Kind: o["kind"].(string), Namespace: meta["namespace"].(string), Name: meta["name"].(string)},
					Message: "image " + image + " is tagged latest"})
			}
		}
	}
	if len(findings) > 0 {
		return events.Judgement{Reason: "policy_violation", Message: fmt.Sprintf("%d finding(s)", len(findings)), Findings: findings}, nil
	}
	return events.Judgement{Approve: true, Reason: "rules_passed"}, nil
}

// TestGate: a gate, connected as its own identity, judges each rendered revision that names it
// and publishes its verdict on its own subject, for that revision and bundle; it judges nothing
// it is not asked to, nor a revision whose flow ended or whose deadline passed.
func TestGate(t *testing.T) {
	s := startGateSystem(t, "policy")
	ctx := t.Context()
	var mu sync.Mutex
	var judged []string // correlation ids
	g, err := events.NewGate(ctx, s.gate, events.GateConfig{Name: "policy", Names: events.Names{},
		Judge: func(ctx context.Context, req events.GateRequest) (events.Judgement, error) {
			mu.Lock()
			judged = append(judged, events.CorrelationID(req.Event))
			mu.Unlock()
			return judgeImages(ctx, req)
		}})
	require.NoError(t, err)
	natstest.Run(t, g)

	web := events.Release{Namespace: "prod", Name: "web"}
	good := s.putBundle(t, web, deployment("web", "nginx@sha256:"+strings.Repeat("1", 64)))
	bad := s.putBundle(t, web, deployment("web", "nginx:latest"), deployment("worker", "busybox:1.36"))

	// Not asked, ended, past its deadline: nothing is judged, nothing published.
	notAsked, _ := s.render(t, web, 1, good, false, "manual")
	ended, _ := s.render(t, web, 2, good, true, "policy")
	late := newFlow(t, web, 3, good, "policy")
	late.rendered.SetExtension(events.ExtDeadline, time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano))
	_, err = s.pub.Publish(ctx, late.request)
	require.NoError(t, err)
	ack, err := s.pub.Publish(ctx, late.rendered)
	require.NoError(t, err)

	approved, _ := s.render(t, web, 4, good, false, "manual", "policy")
	v := s.waitVerdict(t, approved)
	assert.Equal(t, events.TypeApproved, v.Type())
	assert.Equal(t, "troupe/gate-policy", v.Source())
	assert.Equal(t, approved.rendered.ID(), events.CausationID(v), "a reaction to the rendered revision")
	assert.Equal(t, 4, events.Revision(v))
	a, err := events.Data[events.Approved](v)
	require.NoError(t, err)
	assert.Equal(t, events.Approved{Gate: "policy", Revision: 4, Bundle: good, Reason: "rules_passed"}, *a)

	rejected, seq := s.render(t, web, 5, bad, false, "policy")
	v = s.waitVerdict(t, rejected)
	assert.Equal(t, events.TypeRejected, v.Type())
	r, err := events.Data[events.Rejected](v)
	require.NoError(t, err)
	assert.Equal(t, "policy", r.Gate)
	assert.Equal(t, 5, r.Revision)
	assert.Equal(t, bad, r.Bundle)
	assert.Equal(t, "policy_violation", r.Reason)
	require.Len(t, r.Findings, 1, "one finding per object breaking the rule")
	assert.Equal(t, events.ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "prod", Name: "web"}, *r.Findings[0].Object)

	// What the applier reads.
	stream, err := s.admin.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	verdicts, err := events.Names{}.GateVerdicts(ctx, stream, web, seq, events.CorrelationID(rejected.rendered), 5, bad, []string{"policy"})
	require.NoError(t, err)
	assert.Equal(t, events.VerdictRejected, verdicts["policy"].Verdict)

	s.waitHandled(t, "policy", max(seq, ack.Sequence))
	for name, f := range map[string]flow{"not asked": notAsked, "ended": ended, "late": late} {
		assert.Empty(t, s.verdictsOf(t, f), name)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.ElementsMatch(t, []string{events.CorrelationID(approved.rendered), events.CorrelationID(rejected.rendered)}, judged)
}

// TestGateTerminalErrorPublishesNoFailure: a Judge's terminal error, even one naming a stage,
// dead-letters the revision for the gate and publishes nothing: a gate's identity publishes its
// verdicts only, and the revision waits for one until its deadline.
func TestGateTerminalErrorPublishesNoFailure(t *testing.T) {
	s := startGateSystem(t, "policy")
	ctx := t.Context()
	g, err := events.NewGate(ctx, s.gate, events.GateConfig{Name: "policy", Names: events.Names{},
		Subscriber: events.SubscriberConfig{FailStage: events.StageGate},
		Judge: func(ctx context.Context, req events.GateRequest) (events.Judgement, error) {
			return events.Judgement{}, &events.Error{Stage: events.StageGate, Reason: "rules_unreadable", Message: "the rules do not parse"}
		}})
	require.NoError(t, err)
	natstest.Run(t, g)

	web := events.Release{Namespace: "prod", Name: "web"}
	f, seq := s.render(t, web, 1, s.putBundle(t, web, deployment("web", "nginx:1")), false, "policy")
	s.waitHandled(t, "policy", seq)
	dls := deadLettersAuth(t, s.admin)
	require.Len(t, dls, 1)
	assert.Equal(t, access.GatePrefix+"policy", dls[0].Service)
	assert.Contains(t, dls[0].Reason, "the rules do not parse")
	assert.Empty(t, s.verdictsOf(t, f))
	failed, err := tryReadAll(ctx, s.admin, events.StreamName, "troupe.release.*.*.failed")
	require.NoError(t, err)
	assert.Empty(t, failed, "a gate publishes no release.failed")
}

func deadLettersAuth(t *testing.T, js jetstream.JetStream) []events.DeadLetter {
	t.Helper()
	msgs, err := tryReadAll(t.Context(), js, events.Names{}.DeadLetterStream(), events.Names{}.DeadLetterSubjects())
	require.NoError(t, err)
	var out []events.DeadLetter
	for _, m := range msgs {
		out = append(out, events.ParseDeadLetter(m.Headers(), m.Data()))
	}
	return out
}

// TestGateDecisions: a gate a person drives waits; the approver identity asks it to approve or
// reject a release's revision still waiting for it, and the gate publishes the verdict on its
// own subject and says so. A rejection needs a reason; a revision that ended, that does not name
// the gate or does not exist is refused; each decision is a verdict of its own, the last of
// which counts.
func TestGateDecisions(t *testing.T) {
	s := startGateSystem(t, "manual")
	ctx := t.Context()
	waiting := make(chan int, 8)
	g, err := events.NewGate(ctx, s.gate, events.GateConfig{Name: "manual", Names: events.Names{},
		Judge: func(ctx context.Context, req events.GateRequest) (events.Judgement, error) {
			waiting <- req.Revision
			return events.Judgement{Wait: true}, nil
		},
		Decisions: func(ctx context.Context, req events.GateRequest, d events.GateDecision) error {
			if d.By == "mallory" {
				return fmt.Errorf("%s may not decide on %s", d.By, req.Release)
			}
			return nil
		}})
	require.NoError(t, err)
	natstest.Run(t, g)
	approver, _ := connectAs(t, s.auth.URL, s.auth.Creds[access.Approver])
	decide := func(d events.GateDecision) events.GateDecisionReply {
		t.Helper()
		b, err := json.Marshal(d)
		require.NoError(t, err)
		m, err := approver.Request(events.Names{}.GateDecisionSubject("manual"), b, 15*time.Second)
		require.NoError(t, err)
		var reply events.GateDecisionReply
		require.NoError(t, json.Unmarshal(m.Data, &reply))
		return reply
	}
	web := events.Release{Namespace: "prod", Name: "web"}
	ask := events.GateDecision{Namespace: "prod", Name: "web", Approve: true}

	assert.Contains(t, decide(ask).Error, "prod/web has no revision rendered")

	bundle := s.putBundle(t, web, deployment("web", "nginx:1"))
	first, _ := s.render(t, web, 1, bundle, false, "manual")
	select {
	case rev := <-waiting:
		assert.Equal(t, 1, rev)
	case <-time.After(20 * time.Second):
		t.Fatal("the gate did not judge revision 1")
	}

	refusals := []struct {
		d    events.GateDecision
		want string
	}{
		{events.GateDecision{Namespace: "prod", Name: "web", Approve: false, By: "alice"}, "a rejection needs a reason"},
		{events.GateDecision{Namespace: "prod", Name: "web", Approve: true, By: "mallory"}, "mallory may not decide on prod/web"},
		{events.GateDecision{Namespace: "prod", Name: "web", Approve: true, Revision: 7}, "prod/web has no revision 7"},
		{events.GateDecision{Namespace: "prod", Name: "Web", Approve: true}, "lower-case"},
	}
	for _, tc := range refusals {
		reply := decide(tc.d)
		assert.Contains(t, reply.Error, tc.want)
		assert.Empty(t, reply.Verdict)
	}

	decision := func(approve bool, reason, by string) events.GateDecision {
		d := ask
		d.Revision, d.Approve, d.Reason, d.By = 1, approve, reason, by
		return d
	}
	assert.Equal(t, events.GateDecisionReply{Revision: 1, Verdict: events.VerdictRejected}, decide(decision(false, "not on a Friday", "alice")))
	v := s.waitVerdict(t, first)
	assert.Equal(t, events.TypeRejected, v.Type())
	rej, err := events.Data[events.Rejected](v)
	require.NoError(t, err)
	assert.Equal(t, events.Rejected{Gate: "manual", Revision: 1, Bundle: bundle, Reason: "rejected", Message: "not on a Friday", By: "alice"}, *rej)
	assert.Equal(t, first.rendered.ID(), events.CausationID(v))

	// Changing one's mind, and back: three verdicts, the last counts.
	assert.Equal(t, events.VerdictApproved, decide(decision(true, "", "bob")).Verdict)
	assert.Equal(t, events.VerdictRejected, decide(decision(false, "on second thought", "alice")).Verdict)
	require.Eventually(t, func() bool { return len(s.verdictsOf(t, first)) == 3 }, 10*time.Second, 20*time.Millisecond)
	stream, err := s.admin.Stream(ctx, events.StreamName)
	require.NoError(t, err)
	verdicts, err := events.Names{}.GateVerdicts(ctx, stream, web, 0, events.CorrelationID(first.rendered), 1, bundle, []string{"manual"})
	require.NoError(t, err)
	assert.Equal(t, events.VerdictRejected, verdicts["manual"].Verdict)
	assert.Equal(t, "on second thought", verdicts["manual"].Message)

	// Once its gates let it through (the applier went on), a decision is too late: what is
	// applied stays applied.
	applied, err := events.Derive(first.rendered, "troupe/applier", events.TypeApplied, events.Applied{Bundle: bundle, ApplyTime: 1})
	require.NoError(t, err)
	_, err = events.NewPublisher(s.admin, events.Names{}).Publish(ctx, applied)
	require.NoError(t, err)
	assert.Contains(t, decide(decision(true, "", "bob")).Error, "revision 1 of prod/web is no longer waiting: it went on to release.applied")

	// Once the revision ended, it waits for nobody.
	s.end(t, first)
	assert.Contains(t, decide(decision(true, "", "bob")).Error, "revision 1 of prod/web is no longer waiting")

	// Revision 0: the newest still waiting for the gate. A newer dry run does not hide it, nor a
	// newer revision that does not need the gate.
	judged := func(revision int) {
		t.Helper()
		select {
		case rev := <-waiting:
			assert.Equal(t, revision, rev)
		case <-time.After(20 * time.Second):
			t.Fatalf("the gate did not judge revision %d", revision)
		}
	}
	second, _ := s.render(t, web, 2, bundle, false, "manual")
	judged(2)
	dryRun := newFlow(t, web, 3, bundle)
	dryRun.rendered, err = events.Derive(dryRun.request, "troupe/renderer", events.TypeRendered,
		events.Rendered{Bundle: bundle, Size: 1, RenderTime: 1, Gates: []string{"manual"}, Options: events.Options{DryRun: true}})
	require.NoError(t, err)
	events.WithRevision(&dryRun.rendered, 3)
	for _, e := range []event.Event{dryRun.request, dryRun.rendered} {
		_, err = s.pub.Publish(ctx, e)
		require.NoError(t, err)
	}
	judged(3)
	notNeeded, _ := s.render(t, web, 4, bundle, false, "policy")
	assert.Equal(t, events.GateDecisionReply{Revision: 2, Verdict: events.VerdictApproved}, decide(events.GateDecision{Namespace: "prod", Name: "web", Approve: true, By: "bob"}))
	v = s.waitVerdict(t, second)
	assert.Equal(t, events.TypeApproved, v.Type())

	// Only the dry run waits: it is the one.
	s.end(t, second)
	assert.Equal(t, events.GateDecisionReply{Revision: 3, Verdict: events.VerdictApproved}, decide(ask))
	assert.Len(t, s.waitVerdictsOf(t, dryRun, 1), 1)

	// None waits: why the newest does not.
	s.end(t, dryRun)
	assert.Contains(t, decide(ask).Error, "revision 4 of prod/web does not wait for gate manual")
	assert.Empty(t, s.verdictsOf(t, notNeeded))
	assert.Len(t, s.verdictsOf(t, first), 3, "no verdict from a refused decision")
}
