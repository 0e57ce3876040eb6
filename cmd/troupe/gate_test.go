package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
)

// TestGatePolicyRoundTrip: `troupe gate require`, `list` and `remove` write and read a
// namespace's gate policy; writing needs the admin identity (a troupe dev store's admin.creds by
// default), and the CLI's is refused at once, naming its credentials; the CLI's reads it.
func TestGatePolicyRoundTrip(t *testing.T) {
	server := startDev(t)
	store, _ := devStores.Load(server)

	code, _, errOut := troupe(t, server, "", "gate", "require", "approval", "-n", "shop")
	assert.Equal(t, 1, code, errOut)
	assert.Contains(t, errOut, "Permissions Violation")
	assert.Contains(t, errOut, "cli.creds may not do this", "the CLI's identity writes no policy")

	// Given no credentials, require and remove use troupe dev's admin.creds.
	t.Setenv("TROUPE_STORE_DIR", store.(string))
	var stdout, stderr bytes.Buffer
	code = run(t.Context(), []string{"gate", "require", "approval", "-n", "shop", "--server", server}, nil, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Equal(t, "namespace shop requires gate approval\n", stdout.String())
	code, out, errOut := troupe(t, server, "", "gate", "require", "policy", "-n", "shop", "--trust-approvals", "--creds", credsOf(server, access.Admin))
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "namespace shop requires gate policy (a rollback to a bundle it approved before goes through)")
	code, _, errOut = troupe(t, server, "", "gate", "require", "policy", "-n", "web", "--creds", credsOf(server, access.Admin))
	require.Equal(t, 0, code, errOut)

	code, out, errOut = troupe(t, server, "", "gate", "list", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var list []events.NamespaceGates
	require.NoError(t, json.Unmarshal([]byte(out), &list), out)
	require.Len(t, list, 2, out)
	assert.Equal(t, "shop", list[0].Namespace)
	require.Len(t, list[0].Gates, 2)
	assert.Equal(t, "approval", list[0].Gates[0].Gate)
	assert.False(t, list[0].Gates[0].TrustApprovals)
	assert.NotEmpty(t, list[0].Gates[0].By, "who set it")
	assert.False(t, list[0].Gates[0].At.IsZero(), "when")
	assert.Equal(t, "policy", list[0].Gates[1].Gate)
	assert.True(t, list[0].Gates[1].TrustApprovals)
	assert.Equal(t, "web", list[1].Namespace)

	code, out, errOut = troupe(t, server, "", "gate", "list", "-n", "shop")
	require.Equal(t, 0, code, errOut)
	assert.Regexp(t, `(?m)^shop\s+approval\s+no\s`, out)
	assert.Regexp(t, `(?m)^shop\s+policy\s+yes\s`, out)
	assert.NotContains(t, out, "web")
	code, out, _ = troupe(t, server, "", "gate", "list", "-n", "nothing-here")
	require.Equal(t, 0, code)
	assert.Contains(t, out, "no namespace requires a gate")

	code, _, errOut = troupe(t, server, "", "gate", "remove", "approval", "-n", "shop")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "cli.creds may not do this")
	stdout.Reset()
	code = run(t.Context(), []string{"gate", "remove", "approval", "-n", "shop", "--server", server}, nil, &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	assert.Equal(t, "namespace shop no longer requires gate approval\n", stdout.String())
	code, _, errOut = troupe(t, server, "", "gate", "remove", "approval", "-n", "shop", "--creds", credsOf(server, access.Admin))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "namespace shop does not require gate approval")

	code, out, _ = troupe(t, server, "", "gate", "list", "-n", "shop", "-o", "json")
	require.Equal(t, 0, code)
	require.NoError(t, json.Unmarshal([]byte(out), &list), out)
	require.Len(t, list, 1)
	assert.Equal(t, []string{"policy"}, []string{list[0].Gates[0].Gate})

	code, _, errOut = troupe(t, server, "", "gate", "require", "Not_A_Gate", "-n", "shop", "--creds", credsOf(server, access.Admin))
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "gate")
}

// TestApproveWithNoGateRunning: `troupe approve` with no gate of that name running says so,
// rather than waiting; `troupe reject` needs a reason, and checks it before anything is sent.
func TestApproveWithNoGateRunning(t *testing.T) {
	server := startDev(t)
	start := time.Now()
	code, _, errOut := troupe(t, server, "", "approve", "hello", "-n", "shop", "--creds", credsOf(server, access.Approver))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no gate approval is running")
	assert.Contains(t, errOut, "troupe.gate.approval.decide")
	assert.Less(t, time.Since(start), 10*time.Second, "at once, not after a timeout")

	code, _, errOut = troupe(t, server, "", "approve", "hello", "-n", "shop", "--gate", "policy", "--creds", credsOf(server, access.Approver))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "no gate policy is running")

	code, _, errOut = troupe(t, server, "", "reject", "hello", "-n", "shop")
	assert.Equal(t, 2, code)
	assert.Contains(t, errOut, "reject needs --reason")

	// The CLI's identity may not ask a gate: approver.creds may.
	code, _, errOut = troupe(t, server, "", "approve", "hello", "-n", "shop")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "Permissions Violation")
	assert.Contains(t, errOut, "cli.creds may not do this")
}

// TestApproveThroughAGate: a gate a person drives, started here with the SDK (events.NewGate)
// and the credentials `troupe gate creds` wrote, holds a release that names it: `--wait` says it
// waits for its approval and nothing is applied; `troupe status` shows the gate waiting;
// `troupe approve` has the gate publish release.approved, and the revision is applied and
// ready. The next revision, rejected with `troupe reject`, fails at stage gate and changes
// nothing. The gate's credentials publish its own verdicts only.
func TestApproveThroughAGate(t *testing.T) {
	server := startDev(t)
	store, _ := devStores.Load(server)
	ns := testKube.Namespace(t)
	kube, err := kubernetes.NewForConfig(testKube.Config)
	require.NoError(t, err)

	t.Setenv("TROUPE_STORE_DIR", store.(string))
	creds := filepath.Join(t.TempDir(), "gate.creds")
	code, out, errOut := troupe(t, server, "", "gate", "creds", "approval", "--out", creds)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "wrote "+creds)
	assert.Equal(t, "gate-approval", events.CredsIdentity(creds))
	info, err := os.Stat(creds)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "credentials are private")

	// The gate, as examples/approvalgate is: it waits for a person's decision on every revision.
	nc, err := events.ConnOptions{Server: server, CredsFile: creds}.Connect("test-gate")
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	log := zerolog.Nop()
	decided := make(chan events.GateDecision, 4)
	gate, err := events.NewGate(t.Context(), js, events.GateConfig{Name: "approval", Logger: &log,
		Judge: func(context.Context, events.GateRequest) (events.Judgement, error) {
			return events.Judgement{Wait: true}, nil
		},
		Decisions: func(_ context.Context, _ events.GateRequest, d events.GateDecision) error {
			decided <- d
			return nil
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	gateDone := make(chan error, 1)
	go func() { gateDone <- gate.Start(ctx) }()
	defer func() { cancel(); <-gateDone }()
	select {
	case <-gate.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the gate did not start")
	}

	manifest := func(greeting string) string {
		file := filepath.Join(t.TempDir(), "cm.yaml")
		require.NoError(t, os.WriteFile(file, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gated\ndata:\n  greeting: "+greeting+"\n"), 0o644))
		return file
	}
	waitOut, waitErr := &syncBuffer{}, &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(t.Context(), []string{"release", "gated", manifest("hello"), "-n", ns, "--gate", "approval", "--wait", "--timeout", "2m",
			"--server", server, "--creds", credsOf(server, access.CLI)}, nil, waitOut, waitErr)
	}()
	require.Eventually(t, func() bool { return strings.Contains(waitOut.String(), "waiting for approval by approval") },
		30*time.Second, 50*time.Millisecond, "--wait says what it waits for: %s", waitOut)
	require.Eventually(t, func() bool { // once the history service read the release.rendered
		_, out, _ = troupe(t, server, "", "status", "gated", "-n", ns)
		return strings.Contains(out, "GATES:")
	}, 30*time.Second, 100*time.Millisecond, "status: %s", out)
	assert.Regexp(t, `GATES:\s+0 of 1 approved; waiting for approval by approval`, out)
	assert.Regexp(t, `(?m)^\s+approval\s+waiting$`, out)
	assert.Regexp(t, `DESCRIPTION:\s+waiting for approval by approval`, out)
	time.Sleep(time.Second)
	_, err = kube.CoreV1().ConfigMaps(ns).Get(t.Context(), "gated", metav1.GetOptions{})
	assert.True(t, err != nil, "nothing applied before the approval")

	code, out, errOut = troupe(t, server, "", "approve", "gated", "-n", ns, "--by", "alice", "--reason", "looks right", "--creds", credsOf(server, access.Approver))
	require.Equal(t, 0, code, errOut)
	assert.Equal(t, ns+"/gated revision 1: approved by gate approval\n", out)
	d := <-decided
	assert.True(t, d.Approve)
	assert.Equal(t, "alice", d.By)

	select {
	case code = <-done:
	case <-time.After(60 * time.Second):
		t.Fatalf("--wait did not end: %s", waitOut)
	}
	require.Equal(t, 0, code, "%s\n%s", waitOut, waitErr)
	o := waitOut.String()
	waiting, approved, applied := strings.Index(o, "waiting for approval by approval"), strings.Index(o, "approved by approval (alice): looks right"), strings.Index(o, "applied")
	assert.True(t, waiting >= 0 && approved > waiting && applied > approved, "rendered, waiting, approved, applied in order:\n%s", o)
	assert.Contains(t, o, "ready")
	cm, err := kube.CoreV1().ConfigMaps(ns).Get(t.Context(), "gated", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "hello", cm.Data["greeting"])

	code, out, _ = troupe(t, server, "", "tail", "--release", ns+"/gated", "--type", "release.approved", "--follow=false", "-o", "json")
	require.Equal(t, 0, code)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &e), out)
	assert.Equal(t, "troupe/gate-approval", e["source"], "the gate published the verdict")

	// Revision 2, rejected: it fails at stage gate, and revision 1's ConfigMap stays as it was.
	code, out, errOut = troupe(t, server, "", "release", "gated", manifest("bye"), "-n", ns, "--gate", "approval")
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "revision 2 requested")
	require.Eventually(t, func() bool {
		_, out, _ = troupe(t, server, "", "status", "gated", "-n", ns)
		return strings.Contains(out, "waiting for approval by approval")
	}, 30*time.Second, 100*time.Millisecond, "status: %s", out)
	code, out, errOut = troupe(t, server, "", "reject", "gated", "-n", ns, "--reason", "not during the freeze", "--creds", credsOf(server, access.Approver), "-o", "json")
	require.Equal(t, 0, code, errOut)
	var res decisionOut
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.Equal(t, decisionOut{Release: ns + "/gated", Gate: "approval", Revision: 2, Verdict: events.VerdictRejected, By: currentUser()}, res)
	require.Eventually(t, func() bool {
		_, out, _ = troupe(t, server, "", "history", "gated", "-n", ns, "-o", "json")
		return strings.Contains(out, `"stage": "gate"`)
	}, 30*time.Second, 100*time.Millisecond, "history: %s", out)
	assert.Contains(t, out, events.ReasonGateRejected)
	assert.Contains(t, out, "not during the freeze")
	var revs []revisionRow
	require.NoError(t, json.Unmarshal([]byte(out), &revs), out)
	require.Len(t, revs, 2)
	for i, want := range []string{events.VerdictApproved, events.VerdictRejected} {
		require.Len(t, revs[i].Gates, 1, "revision %d's gates", i+1)
		assert.Equal(t, want, revs[i].Gates[0].Verdict, "revision %d's gates", i+1)
	}
	cm, err = kube.CoreV1().ConfigMaps(ns).Get(t.Context(), "gated", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "hello", cm.Data["greeting"], "the rejected revision changed nothing")

	// Asked again, the gate answers that the revision no longer waits: the command exits 1 with
	// the gate's message.
	code, _, errOut = troupe(t, server, "", "approve", "gated", "-n", ns, "--revision", "2", "--creds", credsOf(server, access.Approver))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "gate approval: revision 2 of "+ns+"/gated is no longer waiting")

	// The gate's credentials publish its own verdicts, not another gate's.
	verdict := `{"gate":"policy","revision":2,"bundle":"sha256:` + strings.Repeat("0", 64) + `"}`
	code, _, errOut = troupe(t, server, "", "publish", "release.approved", "--release", ns+"/gated", "--data", verdict, "--creds", creds)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, `Permissions Violation for Publish to "troupe.release.`+ns+`.gated.approved.policy"`)
}

// TestWaitShowsARejection: a gate that rejects a bundle with findings (a policy gate, started
// here with the SDK) fails the revision at stage gate: --wait prints the rejection with each
// finding's object, then the failure, and exits 1; a dry run says what the gate would say.
func TestWaitShowsARejection(t *testing.T) {
	server := startDev(t)
	store, _ := devStores.Load(server)
	ns := testKube.Namespace(t)
	t.Setenv("TROUPE_STORE_DIR", store.(string))
	code, _, errOut := troupe(t, server, "", "gate", "creds", "strict")
	require.Equal(t, 0, code, errOut)
	creds := filepath.Join(store.(string), "creds", "gate-strict.creds")

	nc, err := events.ConnOptions{Server: server, CredsFile: creds}.Connect("test-gate")
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	log := zerolog.Nop()
	gate, err := events.NewGate(t.Context(), js, events.GateConfig{Name: "strict", Logger: &log,
		Judge: func(_ context.Context, req events.GateRequest) (events.Judgement, error) {
			j := events.Judgement{Reason: "policy_violation", Message: "1 object breaks the rules"}
			for _, ref := range req.Rendered.Objects {
				j.Findings = append(j.Findings, events.Finding{Rule: "no-configmaps", Object: &ref, Message: "ConfigMaps are not allowed here"})
			}
			return j, nil
		}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	gateDone := make(chan error, 1)
	go func() { gateDone <- gate.Start(ctx) }()
	defer func() { cancel(); <-gateDone }()
	<-gate.Ready()

	file := filepath.Join(t.TempDir(), "cm.yaml")
	require.NoError(t, os.WriteFile(file, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: banned\ndata:\n  a: b\n"), 0o644))
	code, out, errOut := troupe(t, server, "", "release", "banned", file, "-n", ns, "--gate", "strict", "--wait")
	assert.Equal(t, 1, code, "%s\n%s", out, errOut)
	assert.Contains(t, out, "waiting for approval by strict")
	assert.Contains(t, out, "rejected by strict: 1 object breaks the rules")
	assert.Regexp(t, `(?m)^\s+[\d.]+s\s+ConfigMap/`+ns+`/banned: ConfigMaps are not allowed here$`, out, "each finding names its object")
	assert.Contains(t, out, "at gate: gate_rejected: gate strict rejected revision 1")
	assert.Contains(t, errOut, "failed at gate (gate_rejected)")
	assert.Less(t, strings.Index(out, "rejected by strict"), strings.Index(out, "at gate: gate_rejected"), "the verdict before the failure:\n%s", out)

	code, out, errOut = troupe(t, server, "", "release", "banned", file, "-n", ns, "--gate", "strict", "--dry-run", "--wait", "-o", "json")
	require.Equal(t, 0, code, "%s\n%s", out, errOut)
	var res followed
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.Equal(t, "diffed", res.State)
	require.Len(t, res.Gates, 1, out)
	assert.Equal(t, "strict", res.Gates[0].Gate)
	assert.Equal(t, events.VerdictRejected, res.Gates[0].Verdict)
	require.Len(t, res.Gates[0].Findings, 1)
}
