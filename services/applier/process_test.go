package applier_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/applier"
)

// The applier binary, built once for the tests that run it as a process.
var binary struct {
	once sync.Once
	path string
	err  error
}

func applierBinary(t *testing.T) string {
	t.Helper()
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "troupe-applier-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "applier")
		build := exec.Command("go", "build", "-o", binary.path, "./cmd/applier")
		if out, err := build.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("build: %w\n%s", err, out)
		}
	})
	require.NoError(t, binary.err)
	return binary.path
}

// proc is an applier process.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// newProcEnv is a NATS server for applier processes, and the test's connection to it.
func newProcEnv(t *testing.T) (*env, string) {
	t.Helper()
	s, _, js := natstest.Start(t)
	return &env{t: t, js: js}, s.ClientURL()
}

// startProc runs an applier process against url and the test's cluster until it logs that it is
// ready; env are extra environment variables (the test-only hooks). It is killed when the test
// ends.
func startProc(t *testing.T, url, holder string, env ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "applier.log")
	logf, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(applierBinary(t), "--server", url, "--http-listen", "127.0.0.1:0", "--kubeconfig", kube.Kubeconfig,
		"--lease-ttl", "2s", "--ack-wait", "6s", "--holder", holder)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("applier %s log:\n%s", holder, tail(b, 4000))
		}
	})
	for !p.logged(`"applier ready"`) {
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("applier exited before it was ready: %s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return p
}

func (p *proc) logged(s string) bool {
	b, _ := os.ReadFile(p.log)
	return bytes.Contains(b, []byte(s))
}

// kill SIGKILLs the process and waits until it is gone.
func (p *proc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// died waits until the process has exited by itself, and says whether SIGKILL ended it.
func (p *proc) died() bool {
	<-p.done
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// terminal counts what the stream holds of rel's revision ending, by subject and revision
// extension (never through the duplicate window): each terminal type's messages of revision.
func (e *env) terminal(rel events.Release, revision int) map[string]int {
	e.t.Helper()
	f, err := events.Names{}.ReleaseFilter(rel)
	require.NoError(e.t, err)
	c, err := e.js.OrderedConsumer(e.t.Context(), events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f}})
	require.NoError(e.t, err)
	info, err := c.Info(e.t.Context())
	require.NoError(e.t, err)
	out := map[string]int{}
	for range info.NumPending {
		msg, err := c.Next()
		require.NoError(e.t, err)
		ev, err := events.Names{}.Decode(msg.Subject(), msg.Headers(), msg.Data())
		require.NoError(e.t, err)
		switch ev.Type() {
		case events.TypeApplied, events.TypeDiffed, events.TypeFailed, events.TypeSuperseded, events.TypeUninstalled:
			if events.Revision(ev) == revision {
				out[ev.Type()]++
			}
		}
	}
	return out
}

// waitTerminal waits until rel's revision has a terminal event in the stream (as the applier
// sees it: applied, diffed, failed, superseded), then returns the counts.
func (e *env) waitTerminal(rel events.Release, revision int) map[string]int {
	e.t.Helper()
	for {
		got := e.terminal(rel, revision)
		if got[events.TypeApplied]+got[events.TypeDiffed]+got[events.TypeFailed]+got[events.TypeSuperseded] > 0 {
			return got
		}
		select {
		case <-e.t.Context().Done():
			e.t.Fatal("test ended")
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (e *env) exists(ns, name string) bool {
	e.t.Helper()
	_, err := kube.Client.CoreV1().ConfigMaps(ns).Get(e.t.Context(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	require.NoError(e.t, err)
	return true
}

// gone waits until the ConfigMap is gone (deletion is in the background).
func (e *env) gone(ns, name string) bool {
	e.t.Helper()
	return assert.Eventually(e.t, func() bool { return !e.exists(ns, name) }, 30*time.Second, 100*time.Millisecond, "%s/%s is gone", ns, name)
}

// TestKilledBeforeTheInventoryWriteIsPrunedLater: an applier process SIGKILLed after it changed
// the cluster and before it recorded the inventory (the test-only hook TROUPE_TEST_KILL_AT); the
// next revision, which drops an object, prunes it — the revision's intent was recorded before it
// touched the cluster. The killed revision ends once (superseded), the next once (applied).
func TestKilledBeforeTheInventoryWriteIsPrunedLater(t *testing.T) {
	e, url := newProcEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	killed := startProc(t, url, "applier/killed", "TROUPE_TEST_KILL_AT="+applier.PointApplied)
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", nil), configMap(ns, "b", nil)}, events.Options{})
	require.True(t, killed.died(), "the applier killed itself at %s", applier.PointApplied)
	require.True(t, e.exists(ns, "b"), "revision 1 changed the cluster before the kill")

	req2 := e.request(rel, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", nil)}, events.Options{})
	startProc(t, url, "applier/next")
	assert.Equal(t, map[string]int{events.TypeApplied: 1}, e.waitTerminal(rel, 2))
	assert.True(t, e.gone(ns, "b"), "revision 2 pruned what the killed revision 1 applied")
	assert.True(t, e.exists(ns, "a"))
	assert.Equal(t, map[string]int{events.TypeSuperseded: 1}, e.waitTerminal(rel, 1), "the redelivered revision 1 ends once")
}

// TestKilledBeforeTheInventoryWriteIsUninstalled: the same kill, then an uninstall: it deletes
// what the killed revision applied, and the killed revision's redelivery (after the uninstall)
// is superseded by it instead of putting the objects back.
func TestKilledBeforeTheInventoryWriteIsUninstalled(t *testing.T) {
	e, url := newProcEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	killed := startProc(t, url, "applier/killed", "TROUPE_TEST_KILL_AT="+applier.PointApplied)
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", nil), configMap(ns, "b", nil)}, events.Options{})
	require.True(t, killed.died())

	un := e.uninstallRequest(rel)
	startProc(t, url, "applier/next")
	got := e.answer(rel, un.ID())
	require.Equal(t, events.TypeUninstalled, got.Type(), string(got.Data()))
	assert.True(t, e.gone(ns, "a"))
	assert.True(t, e.gone(ns, "b"))
	assert.Equal(t, map[string]int{events.TypeSuperseded: 1}, e.waitTerminal(rel, 1), "the redelivered revision 1 ends once, superseded by the uninstall")
	assert.False(t, e.exists(ns, "a"), "not put back")
	assert.False(t, e.exists(ns, "b"), "not put back")
}

// TestKilledMidApplyConverges: an applier process SIGKILLed after it changed the cluster,
// restarted: the redelivered revision ends exactly once (counted in the stream by subject and
// revision) and the cluster holds its objects.
func TestKilledMidApplyConverges(t *testing.T) {
	e, url := newProcEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	killed := startProc(t, url, "applier/killed", "TROUPE_TEST_KILL_AT="+applier.PointApplied)
	req := e.request(rel, events.Options{})
	e.rendered(req, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"}), configMap(ns, "b", nil)}, events.Options{})
	require.True(t, killed.died())
	startProc(t, url, "applier/restarted")
	assert.Equal(t, map[string]int{events.TypeApplied: 1}, e.waitTerminal(rel, 1))
	assert.True(t, e.exists(ns, "a"))
	assert.True(t, e.exists(ns, "b"))
}

// TestTwoReplicasNeverApplyOneReleaseAtOnce: two applier processes; one stalls holding the
// release's lease after it changed the cluster (test-only hook); the other, given the next
// revision, waits for the lease and applies nothing meanwhile. Once the stalled one is SIGKILLed,
// its lease expires and both revisions end exactly once, the cluster at revision 2.
func TestTwoReplicasNeverApplyOneReleaseAtOnce(t *testing.T) {
	e, url := newProcEnv(t)
	ns := kube.Namespace(t)
	rel := events.Release{Namespace: ns, Name: "app"}
	stalled := startProc(t, url, "applier/stalled", "TROUPE_TEST_STALL_AT="+applier.PointApplied)
	req1 := e.request(rel, events.Options{})
	e.rendered(req1, 1, []map[string]any{configMap(ns, "a", map[string]any{"v": "1"})}, events.Options{})
	require.Eventually(t, func() bool { return stalled.logged(`stalling at `) }, 60*time.Second, 50*time.Millisecond)

	other := startProc(t, url, "applier/other")
	req2 := e.request(rel, events.Options{})
	e.rendered(req2, 2, []map[string]any{configMap(ns, "a", map[string]any{"v": "2"})}, events.Options{})
	require.Eventually(t, func() bool {
		return other.logged(`waiting for the release's lease`) || stalled.logged(`waiting for the release's lease`)
	}, 60*time.Second, 50*time.Millisecond, "a replica has revision 2 and waits for the lease")
	leases, err := events.NewLeases(t.Context(), e.js, events.Names{}, "observer")
	require.NoError(t, err)
	for range 10 {
		h, err := leases.Holder(t.Context(), "apply."+ns+".app")
		require.NoError(t, err)
		require.NotNil(t, h)
		assert.Equal(t, "applier/stalled", h.Holder)
		cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "1", cm.Data["v"], "revision 2 waits for the lease")
		assert.Empty(t, e.terminal(rel, 2))
		time.Sleep(200 * time.Millisecond)
	}
	stalled.kill()
	assert.Equal(t, map[string]int{events.TypeApplied: 1}, e.waitTerminal(rel, 2))
	assert.Equal(t, map[string]int{events.TypeSuperseded: 1}, e.waitTerminal(rel, 1))
	cm, err := kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "2", cm.Data["v"])
}
