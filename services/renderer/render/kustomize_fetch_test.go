package render_test

import (
	"crypto/rand"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// kustomizeDir writes a kustomization (and a local ConfigMap "local" beside it) and returns its
// directory.
func kustomizeDir(t *testing.T, kustomization string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "cm.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o644))
	return dir
}

func renderKustomization(t *testing.T, r *render.Renderer, dir string) (*events.Bundle, error) {
	t.Helper()
	out, err := r.Render(t.Context(), render.Input{Release: events.Release{Namespace: "prod", Name: "web"}, Revision: 1,
		Request: events.Requested{Source: events.Source{Kustomize: &events.KustomizeSource{Path: dir}}}})
	if err != nil {
		return nil, err
	}
	b, err := events.ReadBundle(out.Bundle)
	require.NoError(t, err)
	return b, nil
}

// object returns the bundle's object of kind whose name starts with prefix.
func object(t *testing.T, b *events.Bundle, kind, prefix string) map[string]any {
	t.Helper()
	for _, o := range b.Objects {
		if o["kind"] == kind && strings.HasPrefix(o["metadata"].(map[string]any)["name"].(string), prefix) {
			return o
		}
	}
	require.Failf(t, "no such object", "%s %s* in %v", kind, prefix, b.Objects)
	return nil
}

// image is the first container's image of the bundle's Deployment name.
func image(t *testing.T, b *events.Bundle, name string) any {
	t.Helper()
	containers := object(t, b, "Deployment", name)["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)
	return containers[0].(map[string]any)["image"]
}

// basicAuth serves next only to requests with user and pass, else asks for them.
func basicAuth(user, pass string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func requireReason(t *testing.T, err error, reason string, contains ...string) *events.Error {
	t.Helper()
	var e *events.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, reason, e.Reason, e.Message)
	for _, c := range contains {
		assert.Contains(t, e.Message, c)
	}
	return e
}

// TestKustomizeRemoteHosts: with --kustomize-remote-hosts, a kustomization's remote resource,
// generator files and patch are fetched from a listed host and built as kustomize would (with
// the credential configured for that host, and only that one), and fetched again on every render (never cached); a host not listed, a redirect to one, plain
// http to a host listed for https, ssh, a URL with a password, a piece past the size budget and
// a server that never answers each fail the render, saying which rule — and the unlisted
// server sees no request.
func TestKustomizeRemoteHosts(t *testing.T) {
	var other atomic.Int32
	unlisted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.Add(1)
		_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unlisted\n"))
	}))
	defer unlisted.Close()
	var sentAuth atomic.Int32 // requests with credentials that reached the second listed server
	second := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			sentAuth.Add(1)
		}
		_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: second\n"))
	}))
	defer second.Close()
	var counted atomic.Int32
	var meta atomic.Value
	meta.Store("one")
	stop := make(chan struct{})
	listed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cm.yaml":
			_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fetched\ndata:\n  from: listed\n"))
		case "/patch.yaml":
			_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\ndata:\n  patched: \"yes\"\n"))
		case "/private.yaml":
			basicAuth("reader", "s3cret", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: private\n"))
			})).ServeHTTP(w, r)
		case "/private-redirect":
			basicAuth("reader", "s3cret", http.RedirectHandler(second.URL+"/cm.yaml", http.StatusFound)).ServeHTTP(w, r)
		case "/counted.yaml":
			counted.Add(1)
			_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: counted\n"))
		case "/meta.txt":
			_, _ = w.Write([]byte(meta.Load().(string)))
		case "/redirect":
			http.Redirect(w, r, unlisted.URL+"/cm.yaml", http.StatusFound)
		case "/big.yaml":
			_, _ = w.Write([]byte("# " + strings.Repeat("x", 8<<10) + "\n"))
		case "/slow.yaml":
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	defer listed.Close()
	defer close(stop)

	r := newRenderer(t, render.Options{KustomizeRemoteHosts: []string{listed.URL}, HTTPTimeout: 3 * time.Second, MaxSourceSize: 4 << 10})
	dir := kustomizeDir(t, "resources:\n- cm.yaml\n- "+listed.URL+"/cm.yaml\n"+
		"configMapGenerator:\n- name: meta\n  files:\n  - "+listed.URL+"/meta.txt\n  - renamed="+listed.URL+"/meta.txt\n"+
		"patches:\n- path: "+listed.URL+"/patch.yaml\n")
	b, err := renderKustomization(t, r, dir)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"from": "listed"}, object(t, b, "ConfigMap", "fetched")["data"])
	assert.Equal(t, map[string]any{"patched": "yes"}, object(t, b, "ConfigMap", "local")["data"])
	assert.Equal(t, map[string]any{"meta.txt": "one", "renamed": "one"}, object(t, b, "ConfigMap", "meta-")["data"])
	_, err = os.Stat(filepath.Join(dir, ".troupe-remote"))
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing written to the source's disk")

	_, err = renderKustomization(t, r, kustomizeDir(t, "resources:\n- "+listed.URL+"/private.yaml\n"))
	requireReason(t, err, render.ReasonAuthDenied, "401")
	u, err := url.Parse(listed.URL)
	require.NoError(t, err)
	withCreds := newRenderer(t, render.Options{KustomizeRemoteHosts: []string{listed.URL, unlisted.URL, second.URL}, Credentials: map[string]render.Credential{
		"a-other": {Host: unlisted.Listener.Addr().String(), Username: "reader", Password: "wrong"},
		"listed":  {Host: u.Host, Username: "reader", Password: "s3cret"}}})
	b, err = renderKustomization(t, withCreds, kustomizeDir(t, "resources:\n- "+listed.URL+"/private.yaml\n"))
	require.NoError(t, err, "the host's own credential")
	object(t, b, "ConfigMap", "private")
	b, err = renderKustomization(t, withCreds, kustomizeDir(t, "resources:\n- "+listed.URL+"/private-redirect\n"))
	require.NoError(t, err)
	object(t, b, "ConfigMap", "second")
	assert.Zero(t, sentAuth.Load(), "the credential stays with its host:port, redirects too")

	// A linked local base is read where the link leads, as kustomize reads it: its remote
	// resource is fetched by the renderer once, not by kustomize again.
	linked := kustomizeDir(t, "resources:\n- base\n")
	require.NoError(t, os.MkdirAll(filepath.Join(linked, "real"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(linked, "real", "kustomization.yaml"), []byte("resources:\n- "+listed.URL+"/counted.yaml\n"), 0o644))
	require.NoError(t, os.Symlink("real", filepath.Join(linked, "base")))
	b, err = renderKustomization(t, r, linked)
	require.NoError(t, err)
	object(t, b, "ConfigMap", "counted")
	assert.Equal(t, int32(1), counted.Load())

	meta.Store("two")
	b, err = renderKustomization(t, r, dir)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"meta.txt": "two", "renamed": "two"}, object(t, b, "ConfigMap", "meta-")["data"], "fetched again, not cached")

	for name, tc := range map[string]struct {
		kustomization, reason string
		want                  []string
	}{
		"host not listed":      {"resources:\n- " + unlisted.URL + "/cm.yaml\n", render.ReasonKustomizeError, []string{unlisted.URL + " is not in the renderer's --kustomize-remote-hosts"}},
		"generator not listed": {"configMapGenerator:\n- name: g\n  files:\n  - " + unlisted.URL + "/meta\n", render.ReasonKustomizeError, []string{"is not in the renderer's --kustomize-remote-hosts"}},
		"in a fetched base":    {"resources:\n- base\n", render.ReasonKustomizeError, []string{"base/kustomization.yaml", "is not in the renderer's --kustomize-remote-hosts"}},
		"redirect elsewhere":   {"resources:\n- " + listed.URL + "/redirect\n", render.ReasonKustomizeError, []string{"redirected to " + unlisted.URL + "/cm.yaml", "is not in the renderer's --kustomize-remote-hosts"}},
		"https only":           {"resources:\n- https://" + u.Host + "/cm.yaml\n", render.ReasonKustomizeError, []string{"https://" + u.Host + " is not in the renderer's --kustomize-remote-hosts"}},
		"ssh":                  {"resources:\n- git@" + u.Hostname() + ":org/repo.git//deploy\n", render.ReasonKustomizeError, []string{"git over ssh is not fetched"}},
		"password in the URL":  {"resources:\n- http://user:hunter2@" + u.Host + "/cm.yaml\n", render.ReasonKustomizeError, []string{"credentials in a URL are refused"}},
		"missing":              {"resources:\n- " + listed.URL + "/nothing.yaml\n", render.ReasonSourceNotFound, []string{"404"}},
		"too large":            {"resources:\n- " + listed.URL + "/big.yaml\n", render.ReasonSourceTooLarge, []string{"more than 4096 bytes fetched"}},
		"never answers":        {"resources:\n- " + listed.URL + "/slow.yaml\n", render.ReasonSourceUnreachable, []string{"timed out after 3s"}},
		"inline configuration": {"transformers:\n- |\n  apiVersion: builtin\n  kind: PatchTransformer\n  metadata:\n    name: p\n  path: " + listed.URL + "/patch.yaml\n", render.ReasonKustomizeError, []string{"an inline configuration names a remote file"}},
	} {
		t.Run(name, func(t *testing.T) {
			dir := kustomizeDir(t, tc.kustomization)
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "base"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "base", "kustomization.yaml"), []byte("resources:\n- "+listed.URL+"/cm.yaml\n- "+unlisted.URL+"/cm.yaml\n"), 0o644))
			_, err := renderKustomization(t, r, dir)
			e := requireReason(t, err, tc.reason, tc.want...)
			assert.NotContains(t, e.Message, "hunter2")
		})
	}
	assert.Zero(t, other.Load(), "the unlisted server saw no request")

	_, err = render.New(render.Options{KustomizeRemoteHosts: []string{"ftp://example.com"}})
	assert.ErrorContains(t, err, `kustomize remote host "ftp://example.com"`)
}

// running reports whether a process of this machine has s in its command line.
func running(s string) bool {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// gitBackend serves the repositories under root over git's smart HTTP protocol (git
// http-backend, as a CGI program).
func gitBackend(t *testing.T, root string) http.Handler {
	t.Helper()
	execPath, err := exec.Command("git", "--exec-path").Output()
	require.NoError(t, err, "git is needed to fetch remote bases")
	return &cgi.Handler{Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}}
}

func git(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=troupe", "-c", "user.email=troupe@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "git %v: %s", args, out)
}

// TestKustomizeRemoteGitBase: a remote base in a git repository on a listed host
// (host/org/repo//dir?ref=…, and the git:: form) is fetched at its ref — a tag, not the branch
// that moved on — with the git CLI, its own remote file fetched too; a private repository
// with the credential configured for its host; a link in the repository
// is left out, not followed; a ref that does not exist fails as not found, and a server that
// never answers as unreachable once the timeout passes.
func TestKustomizeRemoteGitBase(t *testing.T) {
	files := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-the-base\n"))
	}))
	defer files.Close()

	work, projects := t.TempDir(), t.TempDir()
	git(t, work, "init", "-q")
	deploy := func(image string) string {
		return "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n    spec:\n      containers:\n      - name: app\n        image: " + image + "\n"
	}
	require.NoError(t, os.MkdirAll(filepath.Join(work, "deploy", "base"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(work, "deploy", "common"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "base", "deployment.yaml"), []byte(deploy("app:v1")), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "base", "kustomization.yaml"), []byte("resources:\n- deployment.yaml\n- ../common\n- "+files.URL+"/cm.yaml\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "common", "kustomization.yaml"), []byte("resources:\n- sa.yaml\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "common", "sa.yaml"), []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n"), 0o644))
	require.NoError(t, os.Symlink("/etc/passwd", filepath.Join(work, "deploy", "base", "passwd")))
	require.NoError(t, os.MkdirAll(filepath.Join(work, "deploy", "escape"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "escape", "kustomization.yaml"), []byte("resources:\n- ../../../../../outside\n"), 0o644))
	noise := make([]byte, 48<<10) // does not compress: the pack is as large
	_, err := rand.Read(noise)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(work, "noise.bin"), noise, 0o644))
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "v1")
	git(t, work, "tag", "v1")
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "base", "deployment.yaml"), []byte(deploy("app:v2")), 0o644))
	git(t, work, "commit", "-q", "-am", "v2")
	git(t, projects, "clone", "-q", "--bare", work, "app.git")
	backend := gitBackend(t, projects)
	public := httptest.NewServer(backend)
	defer public.Close()
	srv := public.URL

	r := newRenderer(t, render.Options{KustomizeRemoteHosts: []string{srv, files.URL}, HTTPTimeout: 30 * time.Second})
	for _, ref := range []string{srv + "/app.git//deploy/base?ref=v1", "GIT::" + srv + "/app.git//deploy/base?ref=v1", srv + "/app.git/deploy/base?version=v1"} {
		b, err := renderKustomization(t, r, kustomizeDir(t, "resources:\n- cm.yaml\n- "+ref+"\nnamePrefix: prod-\n"))
		require.NoError(t, err, ref)
		assert.Equal(t, "app:v1", image(t, b, "prod-app"), "the tag's tree, not the branch's")
		object(t, b, "ServiceAccount", "prod-app")
		object(t, b, "ConfigMap", "prod-from-the-base")
		object(t, b, "ConfigMap", "prod-local")
	}
	b, err := renderKustomization(t, r, kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/base\n"))
	require.NoError(t, err, "the default branch")
	assert.Equal(t, "app:v2", image(t, b, "app"))

	// A private repository: only with the credential configured for its host.
	private := httptest.NewServer(basicAuth("reader", "s3cret", backend))
	defer private.Close()
	dir := kustomizeDir(t, "resources:\n- "+private.URL+"/app.git//deploy/common?ref=v1\n")
	_, err = renderKustomization(t, newRenderer(t, render.Options{KustomizeRemoteHosts: []string{private.URL}}), dir)
	requireReason(t, err, render.ReasonAuthDenied, "git fetch")
	withCreds := newRenderer(t, render.Options{KustomizeRemoteHosts: []string{private.URL}, Credentials: map[string]render.Credential{
		"git": {Host: private.Listener.Addr().String(), Username: "reader", Password: "s3cret"}}})
	b, err = renderKustomization(t, withCreds, dir)
	require.NoError(t, err)
	object(t, b, "ServiceAccount", "app")

	// A fetched base reads only inside its repository, as kustomize keeps a clone's; and all a
	// build fetches, downloaded and unpacked, stays within the budget.
	escape := kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/escape?ref=v1\n")
	require.NoError(t, os.MkdirAll(filepath.Join(escape, "outside"), 0o755))
	_, err = renderKustomization(t, r, escape)
	requireReason(t, err, render.ReasonKustomizeError, `"../../../../../outside" leaves the repository it was fetched from`)
	small := newRenderer(t, render.Options{KustomizeRemoteHosts: []string{srv}, MaxSourceSize: 32 << 10})
	_, err = renderKustomization(t, small, kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/base?ref=v1\n"))
	requireReason(t, err, render.ReasonSourceTooLarge, "more than 32768 bytes")

	_, err = renderKustomization(t, r, kustomizeDir(t, "configMapGenerator:\n- name: g\n  files:\n  - "+srv+"/app.git//deploy/base/passwd?ref=v1\n"))
	requireReason(t, err, render.ReasonKustomizeError, "names files, not repositories")
	_, err = renderKustomization(t, r, kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/base?ref=v9\n"))
	requireReason(t, err, render.ReasonSourceNotFound, "app.git: git fetch")
	_, err = renderKustomization(t, r, kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/none?ref=v1\n"))
	requireReason(t, err, render.ReasonKustomizeError, `no directory "deploy/none"`)
	_, err = renderKustomization(t, r, kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/base?ref=--upload-pack=touch\n"))
	requireReason(t, err, render.ReasonKustomizeError, "is not a branch, tag or commit")

	// The link was left out: a kustomization naming it finds nothing.
	require.NoError(t, os.WriteFile(filepath.Join(work, "deploy", "base", "kustomization.yaml"), []byte("resources:\n- deployment.yaml\nconfigMapGenerator:\n- name: leak\n  files:\n  - passwd\n"), 0o644))
	git(t, work, "commit", "-q", "-am", "leak")
	git(t, work, "push", "-q", filepath.Join(projects, "app.git"), "main")
	_, err = renderKustomization(t, r, kustomizeDir(t, "resources:\n- "+srv+"/app.git//deploy/base\n"))
	e := requireReason(t, err, render.ReasonKustomizeError, "passwd' doesn't exist")
	assert.NotContains(t, e.Message, "root:")

	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer hang.Close()
	defer close(stop)
	slow := newRenderer(t, render.Options{KustomizeRemoteHosts: []string{hang.URL}, HTTPTimeout: 2 * time.Second})
	_, err = renderKustomization(t, slow, kustomizeDir(t, "resources:\n- "+hang.URL+"/app.git//deploy/base?ref=v1\n"))
	requireReason(t, err, render.ReasonSourceUnreachable, "timed out after 2s")
	assert.Eventually(t, func() bool { return !running(hang.URL) }, 10*time.Second, 50*time.Millisecond,
		"git and the helpers it started are gone")
}
