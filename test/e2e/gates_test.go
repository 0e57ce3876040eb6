package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
)

// lockedBuffer is a bytes.Buffer a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// troupeBackground starts the CLI binary with the CLI's credentials, as troupe does, and returns
// its stdout as it writes it, and wait, which returns how it ended.
func troupeBackground(t *testing.T, args ...string) (stdout *lockedBuffer, wait func() result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	args = append(args, "--server", env.natsURL, "--creds", env.creds[access.CLI])
	cmd := exec.CommandContext(ctx, filepath.Join(env.bin, "troupe"), args...)
	cmd.Dir = env.root
	stdout = &lockedBuffer{}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	require.NoError(t, cmd.Start())
	done := make(chan result, 1)
	go func() {
		defer cancel()
		err := cmd.Wait()
		r := result{stdout: stdout.String(), stderr: stderr.String()}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			r.code = exit.ExitCode()
		} else if err != nil {
			r.code, r.stderr = -1, r.stderr+err.Error()
		}
		done <- r
	}()
	var once sync.Once
	var r result
	wait = func() result {
		once.Do(func() { r = <-done })
		return r
	}
	t.Cleanup(func() { cancel(); wait() })
	return stdout, wait
}

// TestApprovalFromTheCLI: the example approval gate, a process of its own with the credentials
// `troupe gate creds` signs, joins without any other service changing (it shows in the graph);
// once `troupe gate require` makes the namespace require it, a release whose request names no
// gate waits for it: `--wait` says "waiting for approval by approval" and nothing is applied
// until `troupe approve`, after which the release is ready with its objects. The next revision,
// rejected with `troupe reject --reason`, fails at stage gate with the reason, and the first
// revision's objects stay as they were.
func TestApprovalFromTheCLI(t *testing.T) {
	build := exec.Command("go", "build", "-o", filepath.Join(env.bin, "approvalgate"), "./examples/approvalgate")
	build.Dir = env.root
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	creds := filepath.Join(t.TempDir(), "gate-approval.creds")
	r := troupe(t, "gate", "creds", "approval", "--keys", filepath.Dir(env.creds[access.Admin]), "--out", creds)
	require.Equal(t, 0, r.code, r)
	gate, err := startProcess("approvalgate", `"gate-approval ready"`, "--server", env.natsURL, "--creds", creds,
		"--provision=false", "--http-listen", "127.0.0.1:0")
	require.NoError(t, err)
	defer gate.stop()

	r = troupe(t, "graph", "-o", "json")
	require.Equal(t, 0, r.code, r)
	var g struct {
		Edges []struct{ From, Type, To string } `json:"edges"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &g), r.stdout)
	assert.Contains(t, g.Edges, struct{ From, Type, To string }{"renderer", "release.rendered", "gate-approval"}, "the gate joined: %s", r.stdout)

	ns := env.kube.Namespace(t)
	r = troupe(t, "gate", "require", "approval", "-n", ns)
	assert.Equal(t, 1, r.code, "the CLI's identity writes no policy: %s", r)
	assert.Contains(t, r.stderr, "may not do this")
	r = troupe(t, "gate", "require", "approval", "-n", ns, "--creds", env.creds[access.Admin])
	require.Equal(t, 0, r.code, r)
	t.Cleanup(func() { // the namespace goes with the test; its policy too
		if p, err := events.OpenGatePolicy(context.Background(), env.js, events.Names{}); err == nil {
			_, _ = p.Remove(context.Background(), ns, "approval")
		}
	})
	r = troupe(t, "gate", "list", "-n", ns)
	require.Equal(t, 0, r.code, r)
	assert.Regexp(t, `(?m)^`+ns+`\s+approval\s`, r.stdout)

	// Revision 1: held at the gate the namespace requires, though its request names none.
	stdout, wait := troupeBackground(t, "release", "hello", chart(), "-n", ns, "--wait", "--timeout", "3m")
	require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "waiting for approval by approval") },
		time.Minute, 100*time.Millisecond, "--wait says it waits for the gate: %s", stdout)
	time.Sleep(2 * time.Second) // long enough for an applier that did not wait to apply
	_, err = env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "hello", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "nothing applied before the approval: %v", err)
	require.Eventually(t, func() bool { // once the history service read the release.rendered
		r = troupe(t, "status", "hello", "-n", ns)
		return strings.Contains(r.stdout, "GATES:")
	}, 30*time.Second, 100*time.Millisecond, "status: %s", r)
	assert.Contains(t, r.stdout, "waiting for approval by approval")

	r = troupe(t, "approve", "hello", "-n", ns, "--by", "alice", "--creds", env.creds[access.Approver])
	require.Equal(t, 0, r.code, r)
	assert.Equal(t, ns+"/hello revision 1: approved by gate approval\n", r.stdout)
	res := wait()
	require.Equal(t, 0, res.code, res)
	assert.Contains(t, res.stdout, "approved by approval (alice)")
	assert.Less(t, strings.Index(res.stdout, "approved by approval"), strings.Index(res.stdout, "applied"), "approved, then applied:\n%s", res.stdout)
	assert.Contains(t, res.stdout, "ready")
	assert.EqualValues(t, 1, replicas(t, ns, "hello"), "revision 1's objects exist")

	// Revision 2: rejected; revision 1's objects untouched.
	stdout, wait = troupeBackground(t, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=2", "--wait", "--timeout", "3m")
	require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "waiting for approval by approval") },
		time.Minute, 100*time.Millisecond, "--wait says it waits for the gate: %s", stdout)
	r = troupe(t, "reject", "hello", "-n", ns, "--reason", "not during the freeze", "--by", "bob", "--creds", env.creds[access.Approver])
	require.Equal(t, 0, r.code, r)
	assert.Equal(t, ns+"/hello revision 2: rejected by gate approval\n", r.stdout)
	res = wait()
	assert.Equal(t, 1, res.code, res)
	assert.Contains(t, res.stdout, "rejected by approval (bob): not during the freeze")
	assert.Contains(t, res.stderr, "revision 2 failed at gate (gate_rejected)")
	assert.Contains(t, res.stderr, "not during the freeze")
	assert.EqualValues(t, 1, replicas(t, ns, "hello"), "the rejected revision changed nothing")
	revs := history(t, "hello", ns)
	require.Len(t, revs, 2)
	assert.Equal(t, "failed", revs[1].State)
	assert.Equal(t, "gate", revs[1].Stage)
	assert.Equal(t, "gate_rejected", revs[1].Reason)
	assert.Equal(t, 1, current(revs), "revision 1 stays current")

	// The verdicts are in the stream, published by the gate.
	r = troupe(t, "tail", "--release", ns+"/hello", "--type", "release.approved", "--type", "release.rejected", "--follow=false")
	require.Equal(t, 0, r.code, r)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2, r.stdout)
	assert.Contains(t, lines[0], "release.approved")
	assert.Contains(t, lines[1], "release.rejected")
	assert.Contains(t, r.stdout, "troupe/gate-approval")
	r = troupe(t, "trace", "hello", "-n", ns, "--revision", "2")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "gate-approval", "the gate has its lane in the trace")
	assert.Contains(t, r.stdout, "● rejected")
}
