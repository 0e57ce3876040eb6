package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
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

	"github.com/troupe-dev/troupe/events/access"
)

// revision is what `troupe history -o json` prints per revision.
type revision struct {
	Revision     int    `json:"revision"`
	State        string `json:"state"`
	Current      bool   `json:"current"`
	Stage        string `json:"stage"`
	Reason       string `json:"reason"`
	RolledBackTo int    `json:"rolledBackTo"`
	Chart        string `json:"chart"`
	Helm         bool   `json:"helm"`
	AdoptedHelm  int    `json:"adoptedHelm"`
}

func history(t *testing.T, name, ns string) []revision {
	t.Helper()
	r := troupe(t, "history", name, "-n", ns, "-o", "json")
	require.Equal(t, 0, r.code, r)
	var out []revision
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	return out
}

func replicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	d, err := env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	require.NoError(t, err)
	return *d.Spec.Replicas
}

func current(revs []revision) int {
	for _, r := range revs {
		if r.Current {
			return r.Revision
		}
	}
	return 0
}

// TestReleaseLifecycle: install, upgrade, history, diff, manifest, manual rollback (no new
// number), the next revision's number, status, uninstall.
func TestReleaseLifecycle(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "hello", chart(), "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, ns+"/hello: revision 1 requested")
	for _, stage := range []string{"rendered", "applied", "ready"} {
		assert.Contains(t, r.stdout, stage, "--wait shows every stage")
	}
	assert.EqualValues(t, 1, replicas(t, ns, "hello"))

	r = troupe(t, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=2", "--wait")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "revision 2 requested")
	assert.Contains(t, r.stdout, "1 configured", "only the Deployment changed")
	assert.EqualValues(t, 2, replicas(t, ns, "hello"))

	revs := history(t, "hello", ns)
	require.Len(t, revs, 2)
	assert.Equal(t, "ready", revs[1].State)
	assert.Equal(t, 2, current(revs))

	r = troupe(t, "diff", "hello", "-n", ns, "--from", "1", "--to", "2")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "Deployment/"+ns+"/hello")
	assert.Contains(t, r.stdout, "spec.replicas")

	r = troupe(t, "get", "manifest", "hello", "-n", ns, "--revision", "1")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "replicas: 1")
	assert.Contains(t, r.stdout, "kind: Service")

	r = troupe(t, "rollback", "hello", "1", "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "ready")
	assert.EqualValues(t, 1, replicas(t, ns, "hello"), "revision 1's manifests are back")
	revs = history(t, "hello", ns)
	require.Len(t, revs, 2, "a rollback mints no revision")
	assert.Equal(t, 1, current(revs))

	r = troupe(t, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=3")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "revision 3 requested", "the next request after a rollback is 3")

	r = troupe(t, "status", "hello", "-n", ns, "-o", "json")
	require.Equal(t, 0, r.code, r)
	var st struct {
		Release string `json:"release"`
		Latest  struct {
			Revision int `json:"revision"`
		} `json:"latest"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &st))
	assert.Equal(t, ns+"/hello", st.Release)
	assert.Equal(t, 3, st.Latest.Revision)

	r = troupe(t, "list", "-o", "json")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, `"release": "`+ns+`/hello"`)
	other := env.kube.Namespace(t)
	r = troupe(t, "release", "other", chart(), "-n", other, "--wait")
	require.Equal(t, 0, r.code, r)
	r = troupe(t, "list", "-o", "json")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, `"release": "`+other+`/other"`, "unfiltered, both namespaces")
	r = troupe(t, "list", "-n", ns, "-o", "json")
	require.Equal(t, 0, r.code, r)
	var listed []struct{ Release string }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed))
	assert.Equal(t, []struct{ Release string }{{ns + "/hello"}}, listed, "-n lists that namespace's releases only")
	r = troupe(t, "list", "-n", "Bad_NS")
	assert.Equal(t, 2, r.code, r)
	assert.Contains(t, r.stderr, `namespace "Bad_NS"`)

	require.Eventually(t, func() bool { return current(history(t, "hello", ns)) == 3 }, time.Minute, 200*time.Millisecond)
	r = troupe(t, "uninstall", "hello", "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "uninstalled")
	_, err := env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "hello", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the Deployment is deleted: %v", err)
}

// TestPrune: a revision that drops an object deletes it.
func TestPrune(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "config", "test/e2e/testdata/prune/v1", "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	_, err := env.kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "config-b", metav1.GetOptions{})
	require.NoError(t, err)
	r = troupe(t, "release", "config", "test/e2e/testdata/prune/v2", "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "1 pruned")
	_, err = env.kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "config-b", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "config-b is pruned: %v", err)
	_, err = env.kube.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "config-a", metav1.GetOptions{})
	assert.NoError(t, err)
}

// TestFailures: a failed render, a failed apply, a failed health check each exit 1 with the
// stage and reason, and leave the ready revision as it was; with --rollback-on-failure the
// history rolls back to it.
func TestFailures(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "hello", chart(), "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)

	r = troupe(t, "release", "hello", chart(), "-n", ns, "--set", "image.repository=null", "--wait")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "failed at render")
	assert.Contains(t, r.stderr, "image.repository is required")

	r = troupe(t, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=many", "--wait")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "failed at apply")
	assert.Contains(t, r.stderr, "Deployment")
	assert.EqualValues(t, 1, replicas(t, ns, "hello"), "the ready revision is untouched")

	r = troupe(t, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=2", "--set", "podAnnotations.troupe\\.dev/kwok-fault=crashloop",
		"--rollback-on-failure", "--wait")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stdout, "failed")
	assert.Contains(t, r.stdout, "crash")
	assert.Contains(t, r.stdout, "automatic, to revision 1")
	assert.Contains(t, r.stderr, "revision 4 failed at health")
	assert.Contains(t, r.stderr, "rolled back to revision 1")
	assert.EqualValues(t, 1, replicas(t, ns, "hello"), "revision 1 restored")

	revs := history(t, "hello", ns)
	require.Len(t, revs, 4)
	assert.Equal(t, []string{"render", "apply", "health"}, []string{revs[1].Stage, revs[2].Stage, revs[3].Stage})
	assert.Equal(t, 1, current(revs))

	// A usage error is exit 2, and nothing is published.
	r = troupe(t, "release", "Bad_Name", chart(), "-n", ns)
	assert.Equal(t, 2, r.code, r)
	r = troupe(t, "release", "hello", filepath.Join(env.root, "no-such-chart"), "-n", ns)
	assert.Equal(t, 2, r.code, r)
	assert.Contains(t, r.stderr, "no-such-chart")
	assert.Len(t, history(t, "hello", ns), 4)
}

// TestFailedFirstInstallIsUninstalled: --rollback-on-failure on a first install that fails
// uninstalls it, as helm install --atomic does: nothing of it is left in the namespace.
func TestFailedFirstInstallIsUninstalled(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "hello", chart(), "-n", ns, "--set", "podAnnotations.troupe\\.dev/kwok-fault=crashloop",
		"--rollback-on-failure", "--wait", "--timeout", "2m")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stdout, "automatic: nothing was ready before this first install")
	assert.Contains(t, r.stderr, "revision 1 failed at health")
	assert.Contains(t, r.stderr, "uninstalled, as nothing was ready before")
	_, err := env.kube.Client.AppsV1().Deployments(ns).Get(t.Context(), "hello", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the Deployment is deleted: %v", err)
	_, err = env.kube.Client.CoreV1().Services(ns).Get(t.Context(), "hello", metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "the Service is deleted: %v", err)
	revs := history(t, "hello", ns)
	require.Len(t, revs, 1)
	assert.Equal(t, "failed", revs[0].State)
}

// TestDryRun: --dry-run --wait prints the diff and changes nothing.
func TestDryRun(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "hello", chart(), "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	r = troupe(t, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=3", "--dry-run", "--wait")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "~ Deployment/"+ns+"/hello (update)")
	assert.Contains(t, r.stdout, "replicas: 3")
	assert.Contains(t, r.stdout, "= Service/"+ns+"/hello (unchanged)")
	assert.EqualValues(t, 1, replicas(t, ns, "hello"), "a dry run changes nothing")
}

// TestTrace: the trace of a revision lists every stage's event in order, with stage times.
func TestTrace(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "hello", chart(), "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	tr := traceOf(t, "hello", ns)
	assert.Equal(t, 1, tr.Revision)
	assert.Equal(t, []string{"release.requested troupe/cli", "release.rendered troupe/renderer",
		"release.applied troupe/applier", "release.ready troupe/health"}, tr.seen)
	assert.Equal(t, []string{"render", "apply", "health"}, tr.stages)
	assert.Equal(t, "ready", tr.Ended)

	r = troupe(t, "trace", "hello", "-n", ns)
	require.Equal(t, 0, r.code, r)
	for _, s := range []string{"renderer", "applier", "health", "● rendered", "ENDED: ready"} {
		assert.Contains(t, r.stdout, s)
	}
}

// traced is what `troupe trace -o json` says of a release's latest revision: its events (type
// and source, progress reports left out), its stages, how it ended.
type traced struct {
	Revision int `json:"revision"`
	Events   []struct {
		Type   string `json:"type"`
		Source string `json:"source"`
	} `json:"events"`
	Stages []struct {
		Stage string `json:"stage"`
	} `json:"stages"`
	Ended  string `json:"ended"`
	seen   []string
	stages []string
}

func traceOf(t *testing.T, name, ns string) traced {
	t.Helper()
	r := troupe(t, "trace", name, "-n", ns, "-o", "json")
	require.Equal(t, 0, r.code, r)
	var tr traced
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &tr), r.stdout)
	for _, e := range tr.Events {
		if e.Type != "release.progressing" {
			tr.seen = append(tr.seen, e.Type+" "+e.Source)
		}
	}
	for _, s := range tr.Stages {
		tr.stages = append(tr.stages, s.Stage)
	}
	return tr
}

// TestReplayIntoSandbox: replaying a failed request into a sandbox prefix, with a sandboxed
// troupe dev running there, fails the same way — and the live release is not touched.
func TestReplayIntoSandbox(t *testing.T) {
	ns := env.kube.Namespace(t)
	r := troupe(t, "release", "broken", chart(), "-n", ns, "--set", "image.repository=null", "--wait")
	require.Equal(t, 1, r.code, r)
	r = troupe(t, "trace", "broken", "-n", ns, "-o", "json")
	require.Equal(t, 0, r.code, r)
	var tr struct {
		Events []struct {
			Sequence uint64 `json:"sequence"`
			Type     string `json:"type"`
			Detail   string `json:"detail"`
		} `json:"events"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &tr))
	var seq uint64
	var failure string
	for _, e := range tr.Events {
		switch e.Type {
		case "release.requested":
			seq = e.Sequence
		case "release.failed":
			failure = e.Detail
		}
	}
	require.NotZero(t, seq)
	require.Contains(t, failure, "image.repository is required")

	// Into a sandbox no troupe dev has made yet: an error that says what to do, nothing lost silently.
	r = troupe(t, "replay", "--release", ns+"/broken", "--from-seq", fmt.Sprint(seq), "--to-seq", fmt.Sprint(seq), "--to", "nosbx")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr, "start 'troupe dev --subjects-prefix nosbx")

	sandbox, err := startProcess("troupe", "troupe dev: ready", "dev", "--subjects-prefix", "sbx", "--server", env.natsURL, "--creds", env.creds[access.Admin],
		"--http-listen", "127.0.0.1:0", "--kubeconfig", env.kube.Kubeconfig, "--store-dir", t.TempDir())
	require.NoError(t, err)
	defer sandbox.stop()

	r = troupe(t, "replay", "--release", ns+"/broken", "--from-seq", fmt.Sprint(seq), "--to-seq", fmt.Sprint(seq), "--to", "sbx")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "replayed 1 events under sbx.troupe.release.>")

	require.Eventually(t, func() bool {
		r := troupe(t, "trace", "broken", "-n", ns, "--subjects-prefix", "sbx", "-o", "json")
		return r.code == 0 && strings.Contains(r.stdout, `"ended": "failed"`) && strings.Contains(r.stdout, "image.repository is required")
	}, time.Minute, 500*time.Millisecond, "the sandbox reproduces the failure")
	assert.Len(t, history(t, "broken", ns), 1, "the live release saw nothing of the replay")

	r = troupe(t, "replay", "--release", ns+"/broken", "--from-seq", fmt.Sprint(seq), "--to-seq", fmt.Sprint(seq), "--to", "sbx")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "(1 already there: not stored again)", "an event keeps its id")
}

// TestGraphAndANewSubscriber: the graph lists the four services and their edges; the example
// notifier joins without changing any other service, shows up in the graph and posts
// release.ready to its webhook.
func TestGraphAndANewSubscriber(t *testing.T) {
	var mu sync.Mutex
	var posted []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		posted = append(posted, string(b))
		mu.Unlock()
	}))
	defer hook.Close()
	notifier, err := startService("notifier", "--webhook", hook.URL)
	require.NoError(t, err)
	defer notifier.stop()

	r := troupe(t, "graph", "-o", "json")
	require.Equal(t, 0, r.code, r)
	var g struct {
		Services []struct {
			Name     string   `json:"name"`
			Consumes []string `json:"consumes"`
		} `json:"services"`
		Edges []struct{ From, Type, To string } `json:"edges"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &g), r.stdout)
	var names []string
	for _, s := range g.Services {
		names = append(names, s.Name)
	}
	assert.Subset(t, names, []string{"renderer", "applier", "health", "history", "notifier"})
	edge := func(from, typ, to string) bool {
		for _, e := range g.Edges {
			if e.From == from && e.Type == typ && e.To == to {
				return true
			}
		}
		return false
	}
	assert.True(t, edge("cli", "release.requested", "renderer"))
	assert.True(t, edge("renderer", "release.rendered", "applier"))
	assert.True(t, edge("history", "release.rendered", "applier"), "rollbacks")
	assert.True(t, edge("applier", "release.applied", "health"))
	assert.True(t, edge("health", "release.ready", "notifier"))
	assert.True(t, edge("renderer", "release.failed", "notifier"))

	r = troupe(t, "graph", "-o", "mermaid")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "health -->|release.ready| notifier")

	ns := env.kube.Namespace(t)
	r = troupe(t, "release", "hello", chart(), "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range posted {
			if strings.Contains(p, `"type":"release.ready"`) && strings.Contains(p, ns+"/hello") {
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "the notifier posted release.ready")
}

// The CLI that `make build` builds is lean: `troupe dev` hands over to troupe-dev beside it (the
// same CLI with the services in), and says what to do when it is missing.
func TestDevHandsOverToTroupeDev(t *testing.T) {
	r := troupe(t, "dev", "--help")
	require.Equal(t, 0, r.code, r)
	assert.Contains(t, r.stdout, "every troupe service (renderer, applier, health, history)")
	assert.Contains(t, r.stdout, "--kubeconfig", "troupe-dev's own flags are listed")

	alone := filepath.Join(t.TempDir(), "troupe")
	b, err := os.ReadFile(filepath.Join(env.bin, "troupe"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(alone, b, 0o755))
	cmd := exec.Command(alone, "dev")
	cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.Error(t, err, "%s", out)
	assert.Contains(t, string(out), "troupe dev runs troupe-dev")
	assert.Contains(t, string(out), "make build")
}

// TestStatusSaysWhyPodsWait: while a revision waits on a workload whose pod the scheduler cannot
// place, `troupe status` says which object and the scheduler's reason, not only "Ready: 0/1".
func TestStatusSaysWhyPodsWait(t *testing.T) {
	ns := env.kube.Namespace(t)
	file := filepath.Join(t.TempDir(), "big.yaml")
	require.NoError(t, os.WriteFile(file, []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: big
spec:
  replicas: 1
  selector: {matchLabels: {app: big}}
  template:
    metadata: {labels: {app: big}}
    spec:
      containers:
        - name: big
          image: ghcr.io/stefanprodan/podinfo:6.14.1
          resources: {requests: {cpu: "100000"}}
`), 0o644))
	r := troupe(t, "release", "big", file, "-n", ns, "--timeout", "2m")
	require.Equal(t, 0, r.code, r)
	var out string
	require.Eventually(t, func() bool {
		r := troupe(t, "status", "big", "-n", ns)
		out = r.stdout
		return strings.Contains(out, "Insufficient cpu")
	}, time.Minute, time.Second, "troupe status never said why: %s", out)
	assert.Contains(t, out, "WAITING FOR:")
	assert.Contains(t, out, "Deployment/"+ns+"/big")
	assert.Contains(t, out, "Unschedulable")
}
