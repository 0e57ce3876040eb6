package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/test/cluster"
)

// syncBuffer is a bytes.Buffer safe for a command writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

var (
	natsURL = regexp.MustCompile(`NATS JetStream at (nats://[0-9.:]+)`)
	httpURL = regexp.MustCompile(`web UI at (http://[0-9.:]+)/ui/`)

	// testKube is the cluster every `troupe dev` of these tests deploys to (--kubeconfig), started
	// once for the package.
	testKube *cluster.Cluster
)

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &testKube)) }

// startDev runs `troupe dev` in process on free ports and returns its NATS URL.
func startDev(t *testing.T) string {
	t.Helper()
	nats, _ := startDevHTTP(t)
	return nats
}

// startDevHTTP is startDev, also returning the base URL of dev's health and metrics server.
func startDevHTTP(t *testing.T) (string, string) {
	t.Helper()
	url, web, _ := launchDev(t)
	return url, web
}

// launchDev runs `troupe dev` in process on the test cluster, with args added, until the test
// ends or stop (idempotent), which waits until it returned (its services drained, their spans
// exported). It returns dev's NATS URL and the base URL of its HTTP server.
func launchDev(t *testing.T, args ...string) (server, web string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{}
	done := make(chan int, 1)
	// The store's removal is registered before dev's stop, so that it runs after dev stopped.
	store := t.TempDir()
	go func() {
		done <- run(ctx, append([]string{"dev", "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0",
			"--store-dir", store, "--log-level", "warn", "--kubeconfig", testKube.Kubeconfig}, args...), nil, out, out)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case code := <-done:
				assert.Equal(t, 0, code, "dev exits 0 on shutdown: %s", out)
				assert.Contains(t, out.String(), "troupe dev: stopped")
			case <-time.After(60 * time.Second):
				t.Error("troupe dev did not stop")
			}
		})
	}
	t.Cleanup(stop)
	require.Eventually(t, func() bool {
		m, h := natsURL.FindStringSubmatch(out.String()), httpURL.FindStringSubmatch(out.String())
		if m != nil && h != nil && strings.Contains(out.String(), "troupe dev: ready") {
			server, web = m[1], h[1]
			return true
		}
		return false
	}, 60*time.Second, 20*time.Millisecond, "dev did not start: %s", out)
	devStores.Store(server, store)
	return server, web, stop
}

// devStores maps the NATS URL of each dev these tests started to its store dir, where the
// identities' credentials are.
var devStores sync.Map

// credsOf is the credentials file of identity for the dev at server, or "" for another server.
func credsOf(server, identity string) string {
	store, ok := devStores.Load(server)
	if !ok {
		return ""
	}
	return filepath.Join(store.(string), "creds", identity+".creds")
}

// troupe runs one CLI command against server and returns its exit code, stdout and stderr.
func troupe(t *testing.T, server string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	args = append(args, "--server", server)
	if creds := credsOf(server, access.CLI); creds != "" && !slices.Contains(args, "--creds") {
		args = append(args, "--creds", creds) // as troupe dev's cli.creds are used by default
	}
	code := run(ctx, args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestPublishAndTailRoundTrip(t *testing.T) {
	server := startDev(t)
	req := filepath.Join(t.TempDir(), "request.json")
	require.NoError(t, os.WriteFile(req, []byte(`{"source":{"helm":{"path":"charts/podinfo"}},"options":{"timeout":"2m"}}`), 0o644))

	code, out, errOut := troupe(t, server, "", "publish", "release.requested", "--release", "dev/podinfo", "--data", "@"+req)
	require.Equal(t, 0, code, errOut)
	id := regexp.MustCompile(`id=([0-9a-f-]+)`).FindStringSubmatch(out)
	require.NotNil(t, id, out)

	code, _, errOut = troupe(t, server, `{"targetRevision":1}`, "publish", "release.rollback.requested", "--release", "dev/podinfo", "--data", "@-")
	require.Equal(t, 0, code, errOut)

	code, out, errOut = troupe(t, server, "", "tail", "--release", "dev/podinfo", "--follow=false",
		"--type", "release.requested", "--type", "release.rollback.requested")
	require.Equal(t, 0, code, errOut)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, out)
	assert.Regexp(t, `^\d{4}-\d\d-\d\dT[\d:.]+Z\s+release\.requested\s+dev/podinfo\s+rev=-\s+troupe/cli\s+`+id[1][:8]+`$`, lines[0])
	assert.Contains(t, lines[1], "release.rollback.requested")

	// The renderer in troupe dev answered the request: charts/podinfo is a path on its disk, and
	// it reads none (no --source-root).
	require.Eventually(t, func() bool {
		_, out, _ = troupe(t, server, "", "tail", "--release", "dev/podinfo", "--follow=false", "--type", "release.failed", "-o", "json")
		return strings.Contains(out, `"reason":"source_not_allowed"`)
	}, 10*time.Second, 100*time.Millisecond, out)
	assert.Contains(t, out, `"stage":"render"`)
	assert.Contains(t, out, "charts/podinfo")

	code, out, errOut = troupe(t, server, "", "tail", "--type", "release.requested", "--follow=false", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(strings.TrimSpace(out)), &e), out)
	assert.Equal(t, id[1], e["id"])
	assert.Equal(t, "release.requested", e["type"])
	assert.Equal(t, id[1], e["correlationid"])
	assert.Equal(t, "charts/podinfo", e["data"].(map[string]any)["source"].(map[string]any)["helm"].(map[string]any)["path"])

	// tail follows: an event published after it started shows up.
	var follow, followErr syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"tail", "--server", server, "--creds", credsOf(server, access.CLI), "--release", "dev/web"}, nil, &follow, &followErr)
	}()
	time.Sleep(300 * time.Millisecond)
	code, _, errOut = troupe(t, server, "", "publish", "release.uninstall.requested", "--release", "dev/web", "--data", `{}`)
	require.Equal(t, 0, code, errOut)
	require.Eventually(t, func() bool { return strings.Contains(follow.String(), "release.uninstall.requested") }, 10*time.Second, 20*time.Millisecond)
	cancel()
	assert.Equal(t, 0, <-done, followErr.String())
}

// TestDevRunsWithAuth: troupe dev lets in only the identities it wrote credentials for; with the
// CLI's, a command may publish a request but not what a service decides, and says so at once
// (not after a timeout) naming the subject and the credentials; the admin's may.
func TestDevRunsWithAuth(t *testing.T) {
	server := startDev(t)
	code, _, errOut := troupe(t, server, "", "list", "--creds", "")
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "Authorization Violation: no credentials (--creds or TROUPE_CREDS", "no credentials, no entry")

	rendered := `{"bundle":"sha256:` + strings.Repeat("0", 64) + `","size":1,"renderTime":"1s"}`
	start := time.Now()
	code, _, errOut = troupe(t, server, "", "publish", "release.rendered", "--release", "dev/web", "--data", rendered)
	assert.Equal(t, 1, code, errOut)
	assert.Contains(t, errOut, `Permissions Violation for Publish to "troupe.release.dev.web.rendered"`)
	assert.Contains(t, errOut, "cli.creds may not do this")
	assert.Less(t, time.Since(start), 5*time.Second, "refused at once, not after JetStream's timeout")

	// Given no credentials, a command uses troupe dev's cli.creds from $TROUPE_STORE_DIR.
	store, _ := devStores.Load(server)
	t.Setenv("TROUPE_STORE_DIR", store.(string))
	var stdout, stderr bytes.Buffer
	code = run(t.Context(), []string{"publish", "release.requested", "--release", "dev/web", "--data", `{"source":{"helm":{"oci":"oci://x/y"}}}`, "--server", server}, nil, &stdout, &stderr)
	assert.Equal(t, 0, code, "cli.creds by default: %s", stderr.String())
	code = run(t.Context(), []string{"publish", "release.rendered", "--release", "dev/web", "--data", rendered, "--server", server}, nil, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), filepath.Join(store.(string), "creds", "cli.creds")+" may not do this")

	code, _, errOut = troupe(t, server, "", "tail", "--all", "--follow=false", "--creds", credsOf(server, access.Viewer))
	assert.Equal(t, 0, code, "the viewer reads: %s", errOut)
	code, _, errOut = troupe(t, server, "", "publish", "release.requested", "--release", "dev/web", "--data", `{"source":{"helm":{"oci":"oci://x/y"}}}`, "--creds", credsOf(server, access.Viewer))
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "Permissions Violation for Publish", "the viewer publishes nothing")
}

// TestIdentities: `troupe identities -o json` prints each identity's NATS permissions, as signed
// into its credentials: the CLI's allow its requests and not a service's events.
func TestIdentities(t *testing.T) {
	code, out, errOut := troupe(t, "nats://127.0.0.1:1", "", "identities", "-o", "json")
	require.Equal(t, 0, code, errOut)
	var ids []identityOut
	require.NoError(t, json.Unmarshal([]byte(out), &ids))
	byName := map[string]identityOut{}
	for _, id := range ids {
		byName[id.Name] = id
	}
	require.Len(t, byName, len(access.Table()))
	cli := byName[access.CLI].Permissions
	assert.Contains(t, cli.PubAllow, "troupe.release.*.*.requested")
	assert.NotContains(t, cli.PubAllow, "troupe.release.*.*.rendered")
	assert.Equal(t, []string{"_INBOX.cli.>"}, cli.SubAllow)
}

func TestPublishRejectsBadInput(t *testing.T) {
	server := startDev(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown type", []string{"publish", "release.deployed", "--release", "dev/app", "--data", "{}"}, 2, `unknown event type "release.deployed"`},
		{"bad release name", []string{"publish", "release.requested", "--release", "dev/My_App", "--data", "{}"}, 2, `release "My_App" must consist of lower-case`},
		{"release without namespace", []string{"publish", "release.requested", "--release", "app", "--data", "{}"}, 2, "namespace/name"},
		{"missing data", []string{"publish", "release.requested", "--release", "dev/app"}, 2, "--data is required"},
		{"unreadable file", []string{"publish", "release.requested", "--release", "dev/app", "--data", "@/nonexistent.json"}, 2, "no such file"},
		{"invalid payload", []string{"publish", "release.requested", "--release", "dev/app", "--data", `{"source":{"helm":{"path":"a","oci":"oci://b"}}}`}, 1, "exactly one of path, object, oci, repoURL"},
		{"not json", []string{"publish", "release.requested", "--release", "dev/app", "--data", `source: x`}, 1, "invalid payload"},
		{"unknown flag", []string{"publish", "release.requested", "--releas", "dev/app"}, 2, "unknown flag"},
		{"bad --values-from", []string{"release", "app", "oci://example.com/app", "--values-from", "pod/x"}, 2, "--values-from pod/x: want secret/NAME[:KEY] or configmap/NAME[:KEY]"},
		{"invalid valuesFrom", []string{"publish", "release.requested", "--release", "dev/app", "--data", `{"source":{"helm":{"oci":"oci://b"}},"valuesFrom":[{"kind":"Pod","name":"x"}]}`}, 1, "valuesFrom[0].kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := troupe(t, server, "", tc.args...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Contains(t, errOut, tc.want)
		})
	}
	code, out, errOut := troupe(t, server, "", "tail", "--all", "--follow=false")
	require.Equal(t, 0, code, errOut)
	assert.Empty(t, out, "nothing was published")
}

func TestMalformedEventIsDeadLettered(t *testing.T) {
	server := startDev(t)
	nc, err := nats.Connect(server, nats.UserCredentials(credsOf(server, access.Admin)))
	require.NoError(t, err)
	defer nc.Close()
	// Any NATS client allowed to write to a troupe subject (here the admin) may write what is not
	// an event.
	_, err = jsPublish(nc, "troupe.release.dev.podinfo.ready", []byte(`{"specversion":"1.0","id":"x","source":"me","type":"release.ready","subject":"dev/podinfo","data":{"objects":"three"}}`))
	require.NoError(t, err)

	// Every service that consumes release.ready dead-letters it (history, health, catalog-check).
	var out string
	require.Eventually(t, func() bool {
		_, out, _ = troupe(t, server, "", "tail", "--dead-letters", "--follow=false")
		return strings.Contains(out, "catalog-check") && strings.Contains(out, "history")
	}, 10*time.Second, 100*time.Millisecond, "dead letters: %s", out)
	assert.Contains(t, out, "troupe.release.dev.podinfo.ready")
	assert.Contains(t, out, "malformed event")
	assert.Contains(t, out, "objects", "the reason names the field")

	code, _, errOut := troupe(t, server, "", "tail", "--all", "--follow=false")
	require.Equal(t, 0, code)
	assert.Contains(t, errOut, "malformed event on troupe.release.dev.podinfo.ready", "tail reports it too")
}

func jsPublish(nc *nats.Conn, subject string, data []byte) (*nats.Msg, error) {
	return nc.Request(subject, data, 5*time.Second)
}

func TestDevRefusesBusyPort(t *testing.T) {
	server := startDev(t)
	hostPort := strings.TrimPrefix(server, "nats://")
	var out bytes.Buffer
	code := run(t.Context(), []string{"dev", "--nats-listen", hostPort, "--http-listen", "127.0.0.1:0", "--store-dir", t.TempDir(), "--kubeconfig", testKube.Kubeconfig}, nil, &out, &out)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), hostPort)
}

func TestDevHealthAndMetrics(t *testing.T) {
	server, web := startDevHTTP(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(web + path)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}
	code, _, errOut := troupe(t, server, "", "publish", "release.ready", "--release", "dev/app", "--data", `{"timeToReady":"1s","objects":1}`,
		"--creds", credsOf(server, access.Admin)) // what health publishes: the CLI's identity may not

	require.Equal(t, 0, code, errOut)
	require.Eventually(t, func() bool {
		resp, err := http.Get(web + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `troupe_events_handled_total{outcome="ok",service="catalog-check",type="release.ready"} 1`)
	}, 10*time.Second, 50*time.Millisecond, "catalog-check counted the event")
}

// TestConnectsWithCredentials: the CLI reaches a NATS deployment that requires a user and password.
func TestConnectsWithCredentials(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		Username: "troupe", Password: "s3cret", NoSigs: true, NoLog: true})
	require.NoError(t, err)
	go s.Start()
	require.True(t, s.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("troupe", "s3cret"))
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = events.Provision(t.Context(), js, events.ProvisionConfig{})
	require.NoError(t, err)

	args := []string{"publish", "release.uninstall.requested", "--release", "dev/app", "--data", "{}"}
	code, _, errOut := troupe(t, s.ClientURL(), "", append(args, "--user", "troupe", "--password", "wrong")...)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut, "Authorization Violation")
	code, out, errOut := troupe(t, s.ClientURL(), "", append(args, "--user", "troupe", "--password", "s3cret")...)
	require.Equal(t, 0, code, errOut)
	assert.Contains(t, out, "published release.uninstall.requested dev/app")
}

// TestVersion: `troupe version` prints the CLI's version and every running service's, with its
// instances; --client does not connect; without services it says so and exits 1, the CLI's
// version printed still.
func TestVersion(t *testing.T) {
	server := startDev(t)
	code, stdout, stderr := troupe(t, server, "", "version", "-o", "json")
	require.Equal(t, 0, code, stderr)
	var v versionOut
	require.NoError(t, json.Unmarshal([]byte(stdout), &v))
	assert.Equal(t, events.Version(), v.Client.Version)
	assert.Equal(t, runtime.GOOS+"/"+runtime.GOARCH, v.Client.Platform)
	names := map[string]serviceVersion{}
	for _, s := range v.Services {
		names[s.Name] = s
	}
	for _, n := range []string{"renderer", "applier", "health", "history"} {
		require.Contains(t, names, n)
		assert.Equal(t, events.Version(), names[n].Version, n)
		assert.Equal(t, 1, names[n].Instances, n)
	}

	code, stdout, _ = troupe(t, server, "", "version")
	require.Equal(t, 0, code)
	assert.Regexp(t, `(?m)^applier\s+\S+\s+1 instance$`, stdout)

	code, stdout, _ = troupe(t, "nats://127.0.0.1:1", "", "version", "--client")
	assert.Equal(t, 0, code, "--client does not connect")
	assert.Contains(t, stdout, events.Version())

	code, stdout, stderr = troupe(t, "nats://127.0.0.1:1", "", "version", "--connect-timeout", "200ms")
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, events.Version())
	assert.NotEmpty(t, stderr)
}

// TestWaitSaysWhoDoesNotAnswer: --wait with no renderer running says, once the flow is quiet,
// which service should answer, instead of staying silent until the timeout.
func TestWaitSaysWhoDoesNotAnswer(t *testing.T) {
	s, _, _ := natstest.Start(t) // troupe's streams, no service
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stdout := &syncBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"release", "hello", filepath.Join("..", "..", "examples", "charts", "hello"), "--wait", "--quiet-after", "300ms", "--server", s.ClientURL()}, nil, stdout, io.Discard)
	}()
	require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "is the renderer running (or busy)?") }, 20*time.Second, 50*time.Millisecond, stdout.String())
	assert.Contains(t, stdout.String(), "no release.rendered after release.requested for 300ms")
	cancel()
	assert.NotEqual(t, 0, <-done)
}
