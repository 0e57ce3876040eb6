package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/examples/policygate/rules"
)

// system is an embedded NATS with authentication on, provisioned by the admin, who also plays
// the CLI and the renderer; the gate connects as its own identity, gate-<name>, so everything
// it reads and publishes is what that identity may.
type system struct {
	admin jetstream.JetStream
	gate  jetstream.JetStream
}

func startSystem(t *testing.T, gate string) *system {
	t.Helper()
	a := natstest.StartAuth(t)
	return &system{admin: connect(t, a.URL, a.Creds[access.Admin]), gate: connect(t, a.URL, gateCreds(t, a, gate))}
}

func connect(t *testing.T, url, creds string) jetstream.JetStream {
	t.Helper()
	nc, err := events.ConnOptions{Server: url, CredsFile: creds}.Connect("test")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// gateCreds writes the credentials of gate's identity (access.Gate), signed by the test
// server's account, as `troupe gate creds` would.
func gateCreds(t *testing.T, a natstest.Auth, gate string) string {
	t.Helper()
	auth, err := access.LoadOrCreate(filepath.Join(a.Dir, "creds"))
	require.NoError(t, err)
	id, err := access.Gate(gate)
	require.NoError(t, err)
	b, err := auth.Creds(id, events.Names{})
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), id.Name+".creds")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// revision is one rendered revision the test published.
type revision struct {
	rel      events.Release
	rendered event.Event
	seq      uint64 // the release.rendered's stream sequence
	bundle   string
}

// render publishes a release.requested of rel asking for gates, stores a bundle of objs, and
// publishes its release.rendered as revision 1 naming the gates, as the renderer does.
func (s *system) render(t *testing.T, rel events.Release, gates []string, objs ...map[string]any) revision {
	t.Helper()
	ctx := t.Context()
	pub := events.NewPublisher(s.admin, events.Names{})
	opts := events.Options{Gates: gates}
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, rel,
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/" + rel.Name}}, Options: opts})
	require.NoError(t, err)
	_, err = pub.Publish(ctx, req)
	require.NoError(t, err)

	data, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String(), Objects: objs})
	require.NoError(t, err)
	store, err := events.OpenObjects(ctx, s.admin, events.BucketBundles)
	require.NoError(t, err)
	digest, size, err := store.Put(ctx, bytes.NewReader(data))
	require.NoError(t, err)

	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: digest, Size: size, Options: opts, Gates: gates})
	require.NoError(t, err)
	events.WithRevision(&rendered, 1)
	ack, err := pub.Publish(ctx, rendered)
	require.NoError(t, err)
	return revision{rel: rel, rendered: rendered, seq: ack.Sequence, bundle: digest}
}

// verdict waits for gate's verdict on r and returns its type and payload.
func (s *system) verdict(t *testing.T, r revision, gate string) (string, events.Verdict) {
	t.Helper()
	stream, err := s.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	var (
		typ string
		v   events.Verdict
	)
	require.Eventually(t, func() bool {
		for _, tp := range []string{events.TypeApproved, events.TypeRejected} {
			subject, err := events.Names{}.VerdictSubject(r.rel, tp, gate)
			require.NoError(t, err)
			m, err := stream.GetLastMsgForSubject(t.Context(), subject)
			if err != nil {
				continue
			}
			e, err := events.Names{}.Decode(m.Subject, m.Header, m.Data)
			require.NoError(t, err, "the verdict is a well-formed event on its gate's subject")
			require.NoError(t, json.Unmarshal(e.Data(), &v))
			assert.Equal(t, r.rendered.ID(), e.Extensions()[events.ExtCausationID], "a verdict is caused by the release.rendered it judges")
			typ = tp
			return true
		}
		return false
	}, 30*time.Second, 20*time.Millisecond, "no verdict of gate %s on %s", gate, r.rel)
	return typ, v
}

// settled waits until the gate's consumer has handled every event in the stream.
func (s *system) settled(t *testing.T, gate string) {
	t.Helper()
	c, err := s.admin.Consumer(t.Context(), events.StreamName, access.GatePrefix+gate)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := c.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0
	}, 30*time.Second, 20*time.Millisecond)
}

func deployment(name, image string, limits bool) map[string]any {
	c := map[string]any{"name": name, "image": image}
	if limits {
		c["resources"] = map[string]any{"limits": map[string]any{"cpu": "100m", "memory": "64Mi"}}
	}
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"template": map[string]any{"spec": map[string]any{"containers": []any{c}}}}}
}

func service(name, typ string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": name},
		"spec": map[string]any{"type": typ, "ports": []any{map[string]any{"port": 80}}}}
}

const pinned = "ghcr.io/example/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestGateJudgesRenderedRevisions: the policy gate, running as its own identity on embedded
// NATS, approves a clean bundle and rejects one that breaks the rules with a finding per object
// — verdicts on its own subjects for that revision and bundle, which the applier reads as the
// gate's (GateVerdicts) — and says nothing of a revision that does not name it.
func TestGateJudgesRenderedRevisions(t *testing.T) {
	sys := startSystem(t, DefaultName)
	g, err := New(t.Context(), sys.gate, Options{
		Rules:      rules.Config{RequireDigest: true, ForbidLoadBalancerIn: []string{"prod"}},
		Subscriber: events.SubscriberConfig{Backoff: []time.Duration{50 * time.Millisecond}},
	})
	require.NoError(t, err)
	natstest.Run(t, g)

	unasked := sys.render(t, events.Release{Namespace: "prod", Name: "unasked"}, nil, deployment("web", "nginx", false))
	other := sys.render(t, events.Release{Namespace: "prod", Name: "other"}, []string{"approval"}, deployment("web", "nginx", false))
	clean := sys.render(t, events.Release{Namespace: "prod", Name: "clean"}, []string{DefaultName},
		deployment("web", pinned, true), service("web", "ClusterIP"))
	dirty := sys.render(t, events.Release{Namespace: "prod", Name: "dirty"}, []string{"approval", DefaultName},
		deployment("web", "nginx:1.27", true), deployment("worker", pinned, false), service("web", "LoadBalancer"))

	typ, v := sys.verdict(t, clean, DefaultName)
	assert.Equal(t, events.TypeApproved, typ)
	assert.Equal(t, events.Verdict{Gate: DefaultName, Revision: 1, Bundle: clean.bundle, Reason: ReasonPassed,
		Message: "2 objects checked against image-digest, resource-limits, no-loadbalancer: nothing found"}, v)

	typ, v = sys.verdict(t, dirty, DefaultName)
	assert.Equal(t, events.TypeRejected, typ)
	assert.Equal(t, DefaultName, v.Gate)
	assert.Equal(t, 1, v.Revision)
	assert.Equal(t, dirty.bundle, v.Bundle, "the verdict names the bundle it judged")
	assert.Equal(t, ReasonViolation, v.Reason)
	ref := func(kind, name string) *events.ObjectRef {
		api := map[string]string{"Deployment": "apps/v1", "Service": "v1"}[kind]
		return &events.ObjectRef{APIVersion: api, Kind: kind, Namespace: "prod", Name: name}
	}
	assert.Equal(t, []events.Finding{
		{Rule: rules.RuleImageDigest, Object: ref("Deployment", "web"), Message: `container "web": image "nginx:1.27" is not pinned by a digest (@sha256:…)`},
		{Rule: rules.RuleResourceLimits, Object: ref("Deployment", "worker"), Message: `container "worker" has no resources.limits.cpu nor resources.limits.memory`},
		{Rule: rules.RuleNoLoadBalancer, Object: ref("Service", "web"), Message: `Service "web" is of type LoadBalancer, which namespace "prod" forbids: expose it through an Ingress or a Gateway, or as a ClusterIP or NodePort Service`},
	}, v.Findings)
	assert.True(t, strings.HasPrefix(v.Message, "3 findings (image-digest 1, no-loadbalancer 1, resource-limits 1): Deployment/prod/web: container \"web\""), v.Message)

	// What the applier reads: the gate's verdict on that revision and bundle.
	stream, err := sys.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	for _, tc := range []struct {
		r    revision
		want string
	}{{clean, events.VerdictApproved}, {dirty, events.VerdictRejected}} {
		got, err := events.Names{}.GateVerdicts(t.Context(), stream, tc.r.rel, tc.r.seq, events.CorrelationID(tc.r.rendered), 1, tc.r.bundle, []string{DefaultName})
		require.NoError(t, err)
		assert.Equal(t, tc.want, got[DefaultName].Verdict, tc.r.rel.String())
	}

	sys.settled(t, DefaultName)
	for _, r := range []revision{unasked, other} {
		for _, tp := range []string{events.TypeApproved, events.TypeRejected} {
			subject, err := events.Names{}.VerdictSubject(r.rel, tp, DefaultName)
			require.NoError(t, err)
			_, err = stream.GetLastMsgForSubject(t.Context(), subject)
			assert.ErrorIs(t, err, jetstream.ErrMsgNotFound, "no verdict on %s, which does not name the gate", r.rel)
		}
	}
}

// TestVerdictMessage: a rejection counts its findings by rule and spells out the first three;
// beyond MaxFindings they are cut, and the message says so.
func TestVerdictMessage(t *testing.T) {
	f := func(i int) events.Finding {
		return events.Finding{Rule: rules.RuleResourceLimits, Object: &events.ObjectRef{APIVersion: "v1", Kind: "Pod", Namespace: "demo", Name: fmt.Sprintf("p%d", i)},
			Message: "m"}
	}
	one := verdict([]events.Finding{f(0)}, 5)
	assert.False(t, one.Approve)
	assert.Equal(t, "1 finding (resource-limits 1): Pod/demo/p0: m", one.Message)

	var many []events.Finding
	for i := range MaxFindings + 5 {
		many = append(many, f(i))
	}
	j := verdict(many, 2000)
	assert.Len(t, j.Findings, MaxFindings)
	assert.Equal(t, fmt.Sprintf("%d findings (resource-limits %d): Pod/demo/p0: m; Pod/demo/p1: m; Pod/demo/p2: m; and %d more (the first %d are listed)",
		MaxFindings+5, MaxFindings+5, MaxFindings+2, MaxFindings), j.Message)
	assert.NoError(t, (&events.Rejected{Gate: DefaultName, Revision: 1, Bundle: "sha256:" + strings.Repeat("a", 64), Message: j.Message, Findings: j.Findings}).Validate())

	ok := verdict(nil, 3)
	assert.True(t, ok.Approve)
	assert.Equal(t, ReasonPassed, ok.Reason)
}
