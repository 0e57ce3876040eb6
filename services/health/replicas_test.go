package health_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/health"
)

// healthBinary is services/health/cmd/health, built once for the tests that run it as a process.
var healthBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "troupe-health-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "health")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/health").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return bin, nil
})

// replica is a health watcher running as its own process.
type replica struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startReplica runs the health command against e's NATS and the test cluster, with args, and
// waits until it logs that it is ready (leading or standing by). It is killed when the test ends.
func (e *env) startReplica(name string, args ...string) *replica {
	e.t.Helper()
	bin, err := healthBinary()
	require.NoError(e.t, err)
	r := &replica{log: filepath.Join(e.t.TempDir(), name+".log"), done: make(chan struct{})}
	logf, err := os.Create(r.log)
	require.NoError(e.t, err)
	r.cmd = exec.Command(bin, append([]string{"--server", e.srv.ClientURL(), "--http-listen", "127.0.0.1:0",
		"--kubeconfig", kube.Kubeconfig, "--provision=false", "--progress-interval", "200ms"}, args...)...)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(e.t, r.cmd.Start())
	go func() { _ = r.cmd.Wait(); logf.Close(); close(r.done) }()
	e.t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.done
		if e.t.Failed() {
			b, _ := os.ReadFile(r.log)
			e.t.Logf("--- %s log\n%s", name, b)
		}
	})
	for {
		b, _ := os.ReadFile(r.log)
		if strings.Contains(string(b), "health ready") {
			return r
		}
		select {
		case <-r.done:
			e.t.Fatalf("%s exited: %s", name, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// kill SIGKILLs the replica and waits until it is gone.
func (r *replica) kill() {
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// leader is the replica holding health's lease, or the first when none holds it.
func (e *env) leader(rs ...*replica) *replica {
	e.t.Helper()
	kv, err := e.js.KeyValue(e.t.Context(), events.KVLeases)
	require.NoError(e.t, err)
	if entry, err := kv.Get(e.t.Context(), "health"); err == nil {
		var info events.LeaseInfo
		require.NoError(e.t, json.Unmarshal(entry.Value(), &info))
		for _, r := range rs {
			if strings.HasSuffix(info.Holder, "/"+strconv.Itoa(r.cmd.Process.Pid)) {
				return r
			}
		}
	}
	return rs[0]
}

// TestReplicasSurviveAKill: two health watchers as processes, a burst of releases and upgrades,
// and the replica doing the work SIGKILLed mid-burst. Every revision ends with exactly one
// terminal event (counting every copy in the stream): the other replica resumes what the killed
// one followed, and nothing is published twice.
func TestReplicasSurviveAKill(t *testing.T) {
	e := newEnv(t)
	a := e.startReplica("health-a", "--lease-ttl", "2s")
	b := e.startReplica("health-b", "--lease-ttl", "2s")
	ns := kube.Namespace(t)

	const releases = 10
	var applied []event.Event
	for i := range releases {
		rel := events.Release{Namespace: ns, Name: fmt.Sprintf("r%d", i)}
		applied = append(applied, e.apply(rel, 1, []map[string]any{deployment(ns, rel.Name, "")}, events.Options{}))
	}
	// Mid-burst: some revisions ended, not all.
	require.Eventually(t, func() bool { return len(ends(t, e.js)) > 0 }, 2*time.Minute, 100*time.Millisecond,
		"no revision ends")
	killed := e.leader(a, b)
	killed.kill()
	t.Logf("killed the replica holding the lease (pid %d)", killed.cmd.Process.Pid)
	for i := range releases / 2 {
		rel := events.Release{Namespace: ns, Name: fmt.Sprintf("r%d", i)}
		applied = append(applied, e.apply(rel, 2, []map[string]any{deployment(ns, rel.Name, ""), configMap(ns, rel.Name)}, events.Options{}))
	}

	var got map[string][]event.Event
	ended := func() bool {
		got = ends(t, e.js)
		for _, a := range applied {
			if len(got[a.ID()]) == 0 {
				return false
			}
		}
		return true
	}
	// Not a bound on speed: a revision the surviving replica never resumes ends never.
	for deadline := time.Now().Add(3 * time.Minute); !ended() && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	for _, a := range applied {
		var types []string
		for _, ev := range got[a.ID()] {
			types = append(types, ev.Type())
		}
		assert.Len(t, types, 1, "%s revision %d: one end, got %v", a.Subject(), events.Revision(a), types)
	}
}

// deafWhen makes a watcher miss the release.applied and release.uninstalled it is handed while
// deaf is set (it naks them, for another replica), as a replica partitioned from the stream does.
func deafWhen(deaf *atomic.Bool) events.Middleware {
	return func(next events.Handler) events.Handler {
		return func(ctx context.Context, e event.Event) error {
			if deaf.Load() && (e.Type() == events.TypeApplied || e.Type() == events.TypeUninstalled) {
				return fmt.Errorf("deaf")
			}
			return next(ctx, e)
		}
	}
}

// TestStaleTrackerDoesNotAct: replica A follows revision 1 of a release to ready, then misses
// what comes next (its lease taken over, events going to replica B): B handles revision 2's
// release.applied, or the release.uninstalled. When revision 1's Deployment then goes (pruned),
// A's tracker of revision 1 is stale: A must neither publish release.degraded for it nor
// overwrite B's record.
func TestStaleTrackerDoesNotAct(t *testing.T) {
	for _, next := range []string{"applied", "uninstalled"} {
		t.Run(next, func(t *testing.T) {
			e := newEnv(t)
			var deaf atomic.Bool
			oa := health.Options{ProgressInterval: 200 * time.Millisecond, LeaseTTL: 10 * time.Minute, Holder: "a"}
			oa.Subscriber.AckWait, oa.Subscriber.DeliverAll = 3*time.Second, true
			oa.Subscriber.MaxDeliver, oa.Subscriber.Backoff = 1000, []time.Duration{20 * time.Millisecond}
			oa.Subscriber.Middleware = []events.Middleware{deafWhen(&deaf)}
			svcA, err := health.New(t.Context(), e.js, kube.Config, oa)
			require.NoError(t, err)
			natstest.Run(t, svcA)

			ns := kube.Namespace(t)
			rel := events.Release{Namespace: ns, Name: "app"}
			w := e.watch(rel)
			e.apply(rel, 1, []map[string]any{configMap(ns, "config"), deployment(ns, "web", "")}, events.Options{})
			require.Equal(t, events.TypeReady, w.next(60*time.Second, events.TypeReady, events.TypeFailed).Type())

			// A misses what comes next; B takes over A's lease, as on expiry, while A has not
			// noticed yet (it renews every 200s).
			deaf.Store(true)
			leases, err := e.js.KeyValue(t.Context(), events.KVLeases)
			require.NoError(t, err)
			_ = leases.Delete(t.Context(), "health")
			ob := health.Options{ProgressInterval: 200 * time.Millisecond, LeaseTTL: 2 * time.Second, Holder: "b"}
			ob.Subscriber.AckWait, ob.Subscriber.DeliverAll = 3*time.Second, true
			svcB, err := health.New(t.Context(), e.js, kube.Config, ob)
			require.NoError(t, err)
			natstest.Run(t, svcB)

			kv, err := e.js.KeyValue(t.Context(), events.KVHealth)
			require.NoError(t, err)
			switch next {
			case "applied":
				e.apply(rel, 2, []map[string]any{configMap(ns, "config")}, events.Options{})
				require.Equal(t, events.TypeReady, w.next(60*time.Second, events.TypeReady, events.TypeFailed).Type())
				require.Eventually(t, func() bool {
					entry, err := kv.Get(t.Context(), ns+".app")
					return err == nil && revisionOf(entry.Value()) == 2 && phase(entry.Value()) == "ready"
				}, 60*time.Second, 50*time.Millisecond, "B records revision 2 ready")
			case "uninstalled":
				uninstalled := uninstalledOf(t, rel)
				require.NoError(t, err)
				_, err = events.NewPublisher(e.js, events.Names{}).Publish(t.Context(), uninstalled)
				require.NoError(t, err)
				require.Eventually(t, func() bool {
					_, err := kv.Get(t.Context(), ns+".app")
					return err != nil
				}, 60*time.Second, 50*time.Millisecond, "B forgets the release")
			}
			before, err := kv.Get(t.Context(), ns+".app")
			if next == "uninstalled" {
				require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
			} else {
				require.NoError(t, err)
			}

			// Revision 1's Deployment goes, as revision 2's prune or the uninstall deletes it.
			require.NoError(t, kube.Client.AppsV1().Deployments(ns).Delete(t.Context(), "web", metav1.DeleteOptions{}))
			degraded := func() (n int) {
				for _, c := range e.stored(rel, events.TypeDegraded) {
					n += c
				}
				return n
			}
			require.Eventually(t, func() bool { return degraded() > 0 || svcA.Watches() == 0 }, 60*time.Second, 50*time.Millisecond,
				"A neither lets its stale tracker go nor acts on it")
			assert.Zero(t, degraded(), "A published release.degraded for revision 1")
			after, err := kv.Get(t.Context(), ns+".app")
			if next == "uninstalled" {
				assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "A wrote back the record of an uninstalled release")
			} else {
				require.NoError(t, err)
				assert.Equal(t, before.Revision(), after.Revision(), "A overwrote B's record")
				assert.Equal(t, 2, revisionOf(after.Value()), "the record follows revision 2")
			}
		})
	}
}

func revisionOf(raw []byte) int {
	var rec struct {
		Revision int `json:"revision"`
	}
	_ = json.Unmarshal(raw, &rec)
	return rec.Revision
}
