package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/natstest"
)

// system is an embedded NATS with authentication on, provisioned by the admin, who also plays
// the renderer; the gate connects as its own identity (gate-approval), and a person asks it for
// decisions as the approver identity, as `troupe approve` does.
type system struct {
	admin    jetstream.JetStream
	gate     jetstream.JetStream
	approver *nats.Conn
}

func startSystem(t *testing.T, gate string) *system {
	t.Helper()
	a := natstest.StartAuth(t)
	nc := connect(t, a.URL, a.Creds[access.Approver])
	return &system{admin: js(t, connect(t, a.URL, a.Creds[access.Admin])), gate: js(t, connect(t, a.URL, gateCreds(t, a, gate))), approver: nc}
}

func connect(t *testing.T, url, creds string) *nats.Conn {
	t.Helper()
	nc, err := events.ConnOptions{Server: url, CredsFile: creds}.Connect("test")
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

func js(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
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
	bundle   string
}

// render publishes a release.requested of rel with opts, stores a bundle, and publishes its
// release.rendered as revision 1 naming opts.Gates, as the renderer does.
func (s *system) render(t *testing.T, rel events.Release, opts events.Options) revision {
	t.Helper()
	ctx := t.Context()
	pub := events.NewPublisher(s.admin, events.Names{})
	req, err := events.NewEvent("troupe/cli", events.TypeRequested, rel,
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/" + rel.Name}}, Options: opts})
	require.NoError(t, err)
	_, err = pub.Publish(ctx, req)
	require.NoError(t, err)

	cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": rel.Name}}
	data, err := json.Marshal(events.Bundle{APIVersion: events.BundleAPIVersion, Kind: events.BundleKind, Release: rel.String(), Objects: []map[string]any{cm}})
	require.NoError(t, err)
	store, err := events.OpenObjects(ctx, s.admin, events.BucketBundles)
	require.NoError(t, err)
	digest, size, err := store.Put(ctx, bytes.NewReader(data))
	require.NoError(t, err)

	rendered, err := events.Derive(req, "troupe/renderer", events.TypeRendered, events.Rendered{Bundle: digest, Size: size, Options: opts, Gates: opts.Gates})
	require.NoError(t, err)
	events.WithRevision(&rendered, 1)
	_, err = pub.Publish(ctx, rendered)
	require.NoError(t, err)
	return revision{rel: rel, rendered: rendered, bundle: digest}
}

// decide asks gate for a person's decision, as `troupe approve` and `troupe reject` do.
func (s *system) decide(t *testing.T, gate string, d events.GateDecision) events.GateDecisionReply {
	t.Helper()
	body, err := json.Marshal(d)
	require.NoError(t, err)
	m, err := s.approver.Request(events.Names{}.GateDecisionSubject(gate), body, 30*time.Second)
	require.NoError(t, err)
	var reply events.GateDecisionReply
	require.NoError(t, json.Unmarshal(m.Data, &reply))
	return reply
}

// verdicts returns gate's verdicts on r's release so far, by type.
func (s *system) verdicts(t *testing.T, r revision, gate string) map[string]events.Verdict {
	t.Helper()
	stream, err := s.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	out := map[string]events.Verdict{}
	for _, typ := range []string{events.TypeApproved, events.TypeRejected} {
		subject, err := events.Names{}.VerdictSubject(r.rel, typ, gate)
		require.NoError(t, err)
		m, err := stream.GetLastMsgForSubject(t.Context(), subject)
		if err != nil {
			require.ErrorIs(t, err, jetstream.ErrMsgNotFound)
			continue
		}
		e, err := events.Names{}.Decode(m.Subject, m.Header, m.Data)
		require.NoError(t, err, "the verdict is a well-formed event on its gate's subject")
		assert.Equal(t, r.rendered.ID(), e.Extensions()[events.ExtCausationID], "a verdict is caused by the release.rendered it judges")
		var v events.Verdict
		require.NoError(t, json.Unmarshal(e.Data(), &v))
		out[typ] = v
	}
	return out
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

// logs is a log sink the test reads.
type logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// lines returns the log lines whose message is msg, decoded.
func (l *logs) lines(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestPersonDecides: the approval gate, running as its own identity on embedded NATS, gives no
// verdict by itself on a revision naming it — it logs that the revision waits for approval —
// and publishes the verdict a person asks for as the approver identity: approved, by them, or
// rejected for their reason. It refuses a rejection without a reason, a decision on a revision
// that does not name it, and a decision by someone not among --approvers. A dry run is approved
// at once.
func TestPersonDecides(t *testing.T) {
	sys := startSystem(t, DefaultName)
	var sink logs
	log := zerolog.New(&sink)
	g, err := New(t.Context(), sys.gate, Options{Approvers: []string{"alice", "bob"}, Logger: &log,
		Subscriber: events.SubscriberConfig{Backoff: []time.Duration{50 * time.Millisecond}}})
	require.NoError(t, err)
	natstest.Run(t, g)

	gated := events.Options{Gates: []string{DefaultName}}
	hello := sys.render(t, events.Release{Namespace: "prod", Name: "hello"}, gated)
	shop := sys.render(t, events.Release{Namespace: "prod", Name: "shop"}, gated)
	free := sys.render(t, events.Release{Namespace: "prod", Name: "free"}, events.Options{Gates: []string{"policy"}})
	dry := sys.render(t, events.Release{Namespace: "prod", Name: "dry"}, events.Options{Gates: []string{DefaultName}, DryRun: true})

	sys.settled(t, DefaultName)
	for _, r := range []revision{hello, shop, free} {
		assert.Empty(t, sys.verdicts(t, r, DefaultName), "no verdict on %s before a person decides", r.rel)
	}
	assert.Equal(t, map[string]events.Verdict{events.TypeApproved: {Gate: DefaultName, Revision: 1, Bundle: dry.bundle,
		Reason: ReasonDryRun, Message: DryRunMessage, DryRun: true}}, sys.verdicts(t, dry, DefaultName), "a dry run is approved at once")
	var waiting []string
	for _, l := range sink.lines("waiting for approval") {
		assert.Equal(t, float64(1), l["revision"])
		waiting = append(waiting, l["release"].(string))
	}
	assert.ElementsMatch(t, []string{"prod/hello", "prod/shop"}, waiting, "each revision waiting is logged once, with its release and revision")

	// Refused: the gate answers with an error and publishes nothing.
	for _, tc := range []struct {
		name string
		d    events.GateDecision
		want string
	}{
		{"a rejection without a reason", events.GateDecision{Namespace: "prod", Name: "hello", By: "alice"}, "a rejection needs a reason"},
		{"a revision that does not name the gate", events.GateDecision{Namespace: "prod", Name: "free", Approve: true, By: "alice"}, "does not wait for gate approval"},
		{"a revision that does not exist", events.GateDecision{Namespace: "prod", Name: "hello", Revision: 2, Approve: true, By: "alice"}, "prod/hello has no revision 2 rendered"},
		{"someone not an approver", events.GateDecision{Namespace: "prod", Name: "hello", Approve: true, By: "mallory"}, `"mallory" is not an approver of this gate (alice, bob)`},
		{"no one", events.GateDecision{Namespace: "prod", Name: "hello", Approve: true}, "the decision names no approver"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reply := sys.decide(t, DefaultName, tc.d)
			assert.Contains(t, reply.Error, tc.want)
			assert.Empty(t, reply.Verdict)
		})
	}
	for _, r := range []revision{hello, free} {
		assert.Empty(t, sys.verdicts(t, r, DefaultName), "a refused decision publishes nothing on %s", r.rel)
	}
	assert.Len(t, sink.lines("decision refused"), 2, "the decisions the gate refused itself are logged")

	// Taken: the newest revision waiting, or the one named.
	reply := sys.decide(t, DefaultName, events.GateDecision{Namespace: "prod", Name: "hello", Approve: true, Reason: "change 1234 reviewed", By: "alice"})
	assert.Equal(t, events.GateDecisionReply{Revision: 1, Verdict: events.VerdictApproved}, reply)
	assert.Equal(t, map[string]events.Verdict{events.TypeApproved: {Gate: DefaultName, Revision: 1, Bundle: hello.bundle,
		Reason: "approved", Message: "change 1234 reviewed", By: "alice"}}, sys.verdicts(t, hello, DefaultName))

	reply = sys.decide(t, DefaultName, events.GateDecision{Namespace: "prod", Name: "shop", Revision: 1, Reason: "not during the freeze", By: "bob"})
	assert.Equal(t, events.GateDecisionReply{Revision: 1, Verdict: events.VerdictRejected}, reply)
	assert.Equal(t, map[string]events.Verdict{events.TypeRejected: {Gate: DefaultName, Revision: 1, Bundle: shop.bundle,
		Reason: "rejected", Message: "not during the freeze", By: "bob"}}, sys.verdicts(t, shop, DefaultName))
	assert.Len(t, sink.lines("decided"), 2)

	// What the applier reads: the person's verdict counts for that revision and bundle.
	stream, err := sys.admin.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	subject, err := events.Names{}.Subject(hello.rel, events.TypeRendered)
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	got, err := events.Names{}.GateVerdicts(t.Context(), stream, hello.rel, m.Sequence, events.CorrelationID(hello.rendered), 1, hello.bundle, []string{DefaultName})
	require.NoError(t, err)
	assert.Equal(t, events.VerdictApproved, got[DefaultName].Verdict)
	assert.Equal(t, "alice", got[DefaultName].By)
}

// TestAnyApprover: without --approvers, whoever may ask the gate decides, as they name themselves.
func TestAnyApprover(t *testing.T) {
	assert.NoError(t, allowed(nil, "anyone"))
	assert.NoError(t, allowed(nil, ""))
	assert.NoError(t, allowed([]string{"alice"}, "alice"))
	assert.Error(t, allowed([]string{"alice"}, "Alice"))
}
