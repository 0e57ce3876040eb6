package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
)

// uiAddress is where the history process serves its HTTP API and the web UI, as it logs.
func uiAddress(t *testing.T) string {
	t.Helper()
	re := regexp.MustCompile(`"api":"([0-9.:]+)"`)
	var addr string
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(filepath.Join(env.logs, "history.log"))
		if m := re.FindSubmatch(b); m != nil {
			addr = string(m[1])
		}
		return addr != ""
	}, 30*time.Second, 50*time.Millisecond, "history logs its API address")
	return "http://" + addr
}

// browser starts headless Chromium (Debian's package: `make chromium` installs it) and returns
// a context that drives one tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	require.NotEmpty(t, path, "no Chromium on PATH: `make chromium` installs Debian's package (make test does)")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 860), chromedp.UserDataDir(t.TempDir()))
	alloc, cancel := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancel)
	ctx, cancelTab := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelTab)
	require.NoError(t, chromedp.Do(ctx), "start Chromium")
	return ctx
}

// until evaluates the JavaScript expression js in the page until it is true; what stands in the
// way is in the failure (the page's banner and main text).
func until(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('banner').textContent + '\n' + document.getElementById('main').innerText`))
			t.Fatalf("%s: not so after 90s (last error %v); the page says:\n%s", what, err, page)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot writes the page to $TROUPE_SCREENSHOTS/name.png when set (make screenshots).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("TROUPE_SCREENSHOTS")
	if dir == "" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// TestWebUI drives the web UI the history process serves in a real browser: a release published
// during the test appears live on the open releases page (no reload), its release page lists its
// revisions and their diff and values, the timeline draws one lane per service with the stages
// in order and each object's status, a rollback from the page goes through end to end, the
// choreography is drawn from the running services, and a dead letter appears live with why it
// cannot be re-driven.
func TestWebUI(t *testing.T) {
	base := uiAddress(t)
	ctx := browser(t)
	const ns, name = "e2e-ui", "web"
	rel := ns + "/" + name

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS(`#releases`))))
	until(t, ctx, "the live feed connects", `document.getElementById('live').classList.contains('on')`)
	_, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce = true`))
	require.NoError(t, err)

	// A release published now appears on the open page, without a reload, and becomes ready.
	r := troupe(t, "release", name, chart(), "-n", ns, "--create-namespace", "--wait")
	require.Equal(t, 0, r.code, r.String())
	until(t, ctx, "the new release appears on the open page", fmt.Sprintf(`!!document.querySelector('tr[data-release=%q]')`, rel))
	until(t, ctx, "its row says ready", fmt.Sprintf(`document.querySelector('tr[data-release=%q] .state').textContent === 'ready'`, rel))
	same, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.loadedOnce === true`))
	require.NoError(t, err)
	assert.True(t, same, "the page was not reloaded: the row came through the live feed")
	screenshot(t, ctx, "releases")

	r = troupe(t, "release", name, chart(), "-n", ns, "--set", "replicaCount=2", "--wait")
	require.Equal(t, 0, r.code, r.String())

	// The release page: both revisions, the diff between them, the values.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/ui/#/r/"+rel)))
	until(t, ctx, "both revisions listed", `document.querySelectorAll('#revisions tr[data-revision]').length === 2`)
	until(t, ctx, "revision 2 is current", `document.getElementById('current').textContent === '2'`)
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#diff-show`))))
	until(t, ctx, "the diff shows replicas going from 1 to 2",
		`[...document.querySelectorAll('#diff tr')].some(tr => tr.cells[1] && tr.cells[1].textContent.includes('replicas') && tr.cells[2].textContent === '1' && tr.cells[3].textContent === '2')`)
	until(t, ctx, "the values of revision 2", `document.getElementById('values').textContent.includes('"replicaCount": 2')`)
	screenshot(t, ctx, "release")

	// The timeline of revision 2: one lane per service, the events in the order of the flow.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/ui/#/r/"+rel+"/2")))
	until(t, ctx, "the revision ended ready", `document.querySelector('#ended .state') && document.querySelector('#ended .state').textContent === 'ready'`)
	lanes, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('svg.timeline [data-lane]')].map(g => g.dataset.lane)`))
	require.NoError(t, err)
	assert.Subset(t, lanes, []string{"cli", "renderer", "applier", "health", "history"})
	type mark struct {
		Type, Service string
		X             float64
	}
	marks, err := chromedp.Run(ctx, chromedp.Evaluate[[]mark](`[...document.querySelectorAll('svg.timeline g[data-event]')].map(g => ({type: g.dataset.event, service: g.dataset.service, x: +g.querySelector('circle').getAttribute('cx')}))`))
	require.NoError(t, err)
	at := map[string]float64{}
	for _, m := range marks {
		if _, seen := at[m.Type]; !seen {
			at[m.Type] = m.X
		}
	}
	for _, pair := range [][2]string{{events.TypeRequested, events.TypeRendered}, {events.TypeRendered, events.TypeApplied}, {events.TypeApplied, events.TypeReady}} {
		require.Contains(t, at, pair[0])
		require.Contains(t, at, pair[1])
		assert.LessOrEqual(t, at[pair[0]], at[pair[1]], "%s is drawn before %s", pair[0], pair[1])
	}
	stages, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('svg.timeline [data-stage]')].map(g => g.dataset.stage)`))
	require.NoError(t, err)
	assert.Equal(t, []string{"render", "apply", "health"}, stages)
	until(t, ctx, "each object's status, all Current", `document.querySelectorAll('#objects tbody tr').length > 0 && [...document.querySelectorAll('#objects tbody .state')].every(s => s.textContent === 'Current')`)
	screenshot(t, ctx, "timeline")

	// Roll back to revision 1 from the page (two clicks: the button asks once more).
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/ui/#/r/"+rel)))
	until(t, ctx, "the rollback button of revision 1", `!!document.querySelector('#revisions tr[data-revision="1"] button')`)
	for range 2 {
		require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#revisions tr[data-revision="1"] button`))))
	}
	until(t, ctx, "the page says the rollback was published", `document.getElementById('banner').textContent.includes('release.rollback.requested')`)
	until(t, ctx, "revision 1 is current again, live on the open page", `document.getElementById('current').textContent === '1'`)
	revs := history(t, name, ns)
	assert.Equal(t, 1, current(revs), "history: revision 1 is live again")
	assert.Equal(t, int32(1), replicas(t, ns, name), "the cluster runs revision 1's manifests")

	// The choreography, discovered from the running services.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/ui/#/graph")))
	until(t, ctx, "the graph is drawn", `!!document.querySelector('#graph svg.graph')`)
	nodes, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('svg.graph [data-node]')].map(g => g.dataset.node)`))
	require.NoError(t, err)
	assert.Subset(t, nodes, []string{"cli", "renderer", "applier", "health", "history"})
	edge, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('svg.graph g.edge[data-from="renderer"][data-to="applier"]') || {dataset: {}}).dataset.types || ''`))
	require.NoError(t, err)
	assert.Contains(t, edge, events.TypeRendered)
	screenshot(t, ctx, "graph")

	// A malformed event: the renderer dead-letters it, and the open page shows it live, saying
	// why it cannot be re-driven.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/ui/#/dead-letters")))
	until(t, ctx, "the dead letters page", `!!document.querySelector('#dead-letters')`)
	nc, err := nats.Connect(env.natsURL, nats.UserCredentials(env.creds[access.CLI]))
	require.NoError(t, err)
	defer nc.Close()
	subject, err := events.Names{}.Subject(events.Release{Namespace: ns, Name: "broken"}, events.TypeRequested)
	require.NoError(t, err)
	require.NoError(t, nc.Publish(subject, []byte("not a cloudevent {")))
	require.NoError(t, nc.Flush())
	until(t, ctx, "the dead letter appears with its reason", `[...document.querySelectorAll('#dead-letters tbody tr')].some(tr => tr.textContent.includes('renderer') && tr.textContent.includes('malformed'))`)
	until(t, ctx, "its re-drive is refused, saying why", `[...document.querySelectorAll('#dead-letters tbody tr')].some(tr => tr.textContent.includes('malformed') && tr.querySelector('button').disabled && tr.textContent.includes('cannot be re-driven'))`)
	screenshot(t, ctx, "dead-letters")

	// The CLI refuses the same re-drive, saying why; and a dead letter that is not there.
	seq, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#dead-letters tbody tr')].find(tr => tr.textContent.includes('malformed')).dataset.sequence`))
	require.NoError(t, err)
	r = troupe(t, "redrive", seq)
	assert.Equal(t, 1, r.code, r.String())
	assert.Contains(t, r.stderr, "cannot be re-driven")
	r = troupe(t, "redrive", "999999")
	assert.Equal(t, 1, r.code, r.String())
	assert.Contains(t, r.stderr, "no dead letter 999999")
}
