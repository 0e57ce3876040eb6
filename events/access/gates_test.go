package access_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/natstest"
)

// withGate adds the credentials of the gate named gate's identity (access.Gate) to s's, under
// its identity's name, and returns that name.
func (s system) withGate(t *testing.T, gate string) string {
	t.Helper()
	id, err := access.Gate(gate)
	require.NoError(t, err)
	s.creds[id.Name] = natstest.Auth{URL: s.url, Creds: s.creds, Dir: s.dir}.GateCreds(t, gate)
	return id.Name
}

func verdictSubject(t *testing.T, typ, gate string) string {
	t.Helper()
	subj, err := events.Names{}.VerdictSubject(events.Release{Namespace: "team-a", Name: "web"}, typ, gate)
	require.NoError(t, err)
	return subj
}

// subscribeRefused subscribes to subject and says whether the server refused it.
func (c *conn) subscribeRefused(t *testing.T, subject string) bool {
	t.Helper()
	sub, err := c.nc.SubscribeSync(subject)
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, c.nc.Flush())
	select {
	case err := <-c.violations:
		return assert.ErrorContains(t, err, `Subscription to "`+subject+`"`)
	case <-time.After(2 * time.Second):
		return false
	}
}

// TestGatePublishesOnlyItsOwnVerdicts: a gate's identity publishes release.approved and
// release.rejected on its own gate's subjects, and NATS refuses it another gate's, a bare verdict
// subject, and every other event; it reads the gate policy and writes none; it takes the
// decisions asked of it and not another gate's.
func TestGatePublishesOnlyItsOwnVerdicts(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	policy := s.withGate(t, "policy")
	assert.Equal(t, "gate-policy", policy)
	c, js := s.connect(t, policy)

	for _, typ := range []string{events.TypeApproved, events.TypeRejected} {
		_, err := js.Publish(ctx, verdictSubject(t, typ, "policy"), []byte("{}"))
		assert.NoError(t, err, "gate policy publishes its own %s", typ)
		assert.True(t, c.refused(t, verdictSubject(t, typ, "manual")), "gate policy may not publish gate manual's %s", typ)
		assert.True(t, c.refused(t, verdictSubject(t, typ, "policy")[:len(verdictSubject(t, typ, "policy"))-len(".policy")]),
			"nor a bare %s", typ)
	}
	for _, typ := range []string{events.TypeRequested, events.TypeRendered, events.TypeApplied, events.TypeFailed, events.TypeReady} {
		assert.True(t, c.refused(t, subject(t, typ)), "gate policy may not publish %s", typ)
	}

	assert.True(t, c.refused(t, "$KV."+events.KVGates+".team-a"), "nor write the gate policy")
	p, err := events.OpenGatePolicy(ctx, js, events.Names{})
	require.NoError(t, err)
	_, err = p.For(ctx, "team-a")
	assert.NoError(t, err, "it reads the gate policy")

	assert.False(t, c.subscribeRefused(t, events.Names{}.GateDecisionSubject("policy")), "it takes the decisions asked of it")
	assert.True(t, c.subscribeRefused(t, events.Names{}.GateDecisionSubject("manual")), "not another gate's")
	assert.True(t, c.refused(t, "$JS.API.CONSUMER.MSG.NEXT."+events.StreamName+".applier"), "nor takes the applier's deliveries")
}

// TestApproverAsksTheGate: the approver asks a gate for a decision and gets its answer, and
// publishes no event of the catalog — no verdict — and cannot take the decisions asked of a gate.
func TestApproverAsksTheGate(t *testing.T) {
	s := start(t)
	gate, _ := s.connect(t, s.withGate(t, "x"))
	sub, err := gate.nc.Subscribe(events.Names{}.GateDecisionSubject("x"), func(m *nats.Msg) {
		_ = m.Respond([]byte(`{"revision":1,"verdict":"approved"}`))
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()
	require.NoError(t, gate.nc.Flush())

	approver, _ := s.connect(t, access.Approver)
	m, err := approver.nc.Request(events.Names{}.GateDecisionSubject("x"), []byte(`{"namespace":"team-a","name":"web","approve":true}`), 5*time.Second)
	require.NoError(t, err, "the approver asks gate x")
	assert.JSONEq(t, `{"revision":1,"verdict":"approved"}`, string(m.Data))

	for _, typ := range events.Types() {
		assert.True(t, approver.refused(t, subject(t, typ)), "the approver may not publish %s", typ)
	}
	assert.True(t, approver.refused(t, verdictSubject(t, events.TypeApproved, "x")), "nor gate x's verdict")
	assert.True(t, approver.refused(t, "$KV."+events.KVGates+".team-a"), "nor write the gate policy")
	assert.True(t, approver.subscribeRefused(t, events.Names{}.GateDecisionSubject("x")), "nor answer for gate x")
}

// TestCLIReadsTheGatePolicy: only the admin writes the gate policy; the CLI reads it, cannot
// write it, publishes no verdict and asks no gate for a decision. No identity of the table but
// the admin may write it, nor publish a verdict.
func TestCLIReadsTheGatePolicy(t *testing.T) {
	s := start(t)
	ctx := t.Context()
	_, ajs := s.connect(t, access.Admin)
	admin, err := events.OpenGatePolicy(ctx, ajs, events.Names{})
	require.NoError(t, err)
	require.NoError(t, admin.Require(ctx, "team-a", events.GateRule{Gate: "policy", By: "ops"}), "the admin writes the policy")

	cli, js := s.connect(t, access.CLI)
	p, err := events.OpenGatePolicy(ctx, js, events.Names{})
	require.NoError(t, err)
	ng, err := p.For(ctx, "team-a")
	require.NoError(t, err, "the CLI reads the policy")
	assert.Equal(t, []events.GateRule{{Gate: "policy", By: "ops"}}, ng.Gates)
	list, err := p.List(ctx)
	require.NoError(t, err)
	assert.Len(t, list, 1)

	assert.True(t, cli.refused(t, "$KV."+events.KVGates+".team-a"), "the CLI may not write the policy")
	assert.True(t, cli.refused(t, "$JS.API.STREAM.PURGE.KV_"+events.KVGates), "nor purge it")
	assert.True(t, cli.refused(t, "$JS.API.STREAM.DELETE.KV_"+events.KVGates), "nor delete it")
	for _, typ := range []string{events.TypeApproved, events.TypeRejected} {
		assert.True(t, cli.refused(t, verdictSubject(t, typ, "policy")), "the CLI may not publish %s", typ)
	}
	assert.True(t, cli.refused(t, events.Names{}.GateDecisionSubject("policy")), "nor ask a gate to decide")
	ng, err = p.For(ctx, "team-a")
	require.NoError(t, err)
	assert.Equal(t, []events.GateRule{{Gate: "policy", By: "ops"}}, ng.Gates, "the policy is as the admin wrote it")

	gate, err := access.Gate("policy")
	require.NoError(t, err)
	for _, id := range append(access.Table(), gate) {
		if id.All {
			continue
		}
		assert.NotEqual(t, access.Write, id.KV[events.KVGates], "%s writes the gate policy", id.Name)
		p, err := id.Permissions(events.Names{})
		require.NoError(t, err, id.Name)
		assert.NotContains(t, p.PubAllow, "$KV."+events.KVGates+".>", id.Name)
		if id.Gate == "" {
			assert.NotContains(t, id.Publishes, events.TypeApproved, id.Name)
			assert.NotContains(t, id.Publishes, events.TypeRejected, id.Name)
		}
	}
	_, err = access.Identity{Name: "rogue", Publishes: []string{events.TypeApproved}}.Permissions(events.Names{})
	assert.ErrorContains(t, err, "only a gate's identity publishes release.approved")
}
