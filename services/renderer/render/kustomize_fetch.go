//lint:file-ignore SA1019 kustomize still applies the deprecated patch fields, so they are read and rewritten too

package render

import (
	"archive/tar"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// remoteHosts is the renderer's --kustomize-remote-hosts: where a kustomization may fetch
// remote resources, bases and files from. An entry "host" or "host:port" allows https to that
// host (port 443 unless named); "http://host:port" allows plain http there and nowhere else.
type remoteHosts map[string]bool // "scheme://host:port"

func newRemoteHosts(entries []string) (remoteHosts, error) {
	hosts := remoteHosts{}
	for _, e := range entries {
		raw := e
		if !strings.Contains(e, "://") {
			raw = "https://" + e
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("renderer: kustomize remote host %q: want host, host:port or http://host:port", e)
		}
		hosts[origin(u)] = true
	}
	return hosts, nil
}

// origin is u's scheme, host and port, the port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	return u.Scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// allows returns nil when u may be fetched, else why not.
func (h remoteHosts) allows(u *url.URL) error {
	switch {
	case u.User != nil:
		return errors.New("credentials in a URL are refused")
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%s is not fetched: only https (or http to a host listed as http://host:port)", u.Scheme)
	case !h[origin(u)]:
		return fmt.Errorf("%s://%s is not in the renderer's --kustomize-remote-hosts", u.Scheme, u.Host)
	}
	return nil
}

// remoteRef is a remote reference of a kustomization as kustomize reads it: a file by URL, or
// a git repository (its URL, a directory in it, and a ref: kustomize's
// "host/org/repo//dir?ref=v1", "https://host/org/repo.git/dir?ref=v1", "git::https://…").
type remoteRef struct {
	url  *url.URL // the file's, or the repository's to clone
	repo bool
	dir  string // in the repository
	ref  string // a branch, tag or commit; "" for the default branch
}

// parseRemote reads ref, found in field of a kustomization. Resources, components and the
// generators', transformers' and validators' entries may be repositories; other fields name
// files. A URL names a repository as kustomize's do: forced with git::, or split into the
// repository and a directory in it by "//", by a ".git" segment or by Azure's "_git/REPO", or
// given a ?ref= (or ?version=); github.com/ORG/REPO/DIR without a scheme is one too. Other
// http(s) URLs are files (kustomize would GET one and, failing, try to clone it: here it fails).
func parseRemote(field, ref string) (remoteRef, error) {
	mayBeRepo := slices.Contains([]string{"resources", "components", "generators", "transformers", "validators"}, field)
	raw, forced := ref, false
	if len(raw) >= 5 && strings.EqualFold(raw[:5], "git::") {
		raw, forced = raw[5:], true
	}
	lower := strings.ToLower(raw)
	switch {
	case scpUser.MatchString(raw) || strings.HasPrefix(lower, "gh:") || strings.HasPrefix(lower, "github.com:") || strings.HasPrefix(lower, "ssh://"):
		return remoteRef{}, errors.New("git over ssh is not fetched: name the repository by https")
	case strings.HasPrefix(lower, "github.com/"):
		raw, forced = "https://"+raw, true // kustomize clones github.com/ORG/REPO over https
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return remoteRef{}, errors.New("not a URL kustomize could fetch")
	}
	q := u.Query()
	version := cmp.Or(q.Get("ref"), q.Get("version"))
	p := strings.TrimPrefix(u.Path, "/")
	var repoPath, dir string
	split := true
	if i := strings.Index(p, "/_git/"); i >= 0 { // Azure DevOps: ORG/PROJECT/_git/REPO/DIR
		rest := p[i+len("/_git/"):]
		name, sub, _ := strings.Cut(rest, "/")
		repoPath, dir = p[:i+len("/_git/")]+name, sub
	} else if before, after, ok := strings.Cut(p, "//"); ok {
		repoPath, dir = before, after
	} else if i := strings.Index(p+"/", ".git/"); i >= 0 {
		repoPath, dir = p[:i+len(".git")], strings.TrimPrefix(p[i+len(".git"):], "/")
	} else {
		repoPath, split = p, false
	}
	if !mayBeRepo || (!forced && !split && version == "") {
		if !mayBeRepo && (forced || split && strings.HasSuffix(repoPath, ".git")) {
			return remoteRef{}, fmt.Errorf("%s names files, not repositories", field)
		}
		return remoteRef{url: u}, nil
	}
	if !split { // github.com/ORG/REPO/DIR: the repository is the first two segments
		parts := strings.SplitN(repoPath, "/", 3)
		if len(parts) < 2 {
			return remoteRef{}, errors.New("names no repository (host/org/repo)")
		}
		repoPath = parts[0] + "/" + parts[1]
		if len(parts) == 3 {
			dir = parts[2]
		}
	}
	if slices.Contains(strings.Split(dir, "/"), "..") {
		return remoteRef{}, errors.New("a directory that leaves the repository")
	}
	repo := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: "/" + repoPath, User: u.User}
	return remoteRef{url: repo, repo: true, dir: strings.Trim(dir, "/"), ref: version}, nil
}

// key names what ref fetches (its URL and ref) in the directory it is put in.
func (ref remoteRef) key() string {
	h := sha256.Sum256([]byte(ref.url.String() + "\x00" + ref.ref))
	return hex.EncodeToString(h[:8])
}

// remoteDir is where fetched pieces are put, inside the kustomization that names them (kustomize
// reads a kustomization's files only under its own directory).
const remoteDir = ".troupe-remote"

// fetchRemote rewrites the kustomizations a build of dir reads so that each remote reference to
// an allowlisted host names a local copy, fetched with ctx and the renderer's timeout into
// memory: it returns the view kustomize builds from (fsys, with the copies and the rewritten
// kustomizations laid over it) and whether anything was fetched. A reference to a host not
// listed, over ssh, or too large fails the render; remote references left in inline
// configurations are refused by noRemote afterwards.
func (r *Renderer) fetchRemote(ctx context.Context, fsys filesys.FileSystem, dir string) (filesys.FileSystem, bool, error) {
	f := &remoteFetch{r: r, view: overlayFS{base: fsys, mem: filesys.MakeFsInMemory()}, seen: map[string]bool{},
		left: newBudget(archiveLimits{bytes: int64(r.opts.MaxSourceSize), entries: r.opts.MaxArchiveEntries, skipLinks: true})}
	if err := f.visit(ctx, dir); err != nil {
		return nil, false, err
	}
	return f.view, f.fetches > 0, nil
}

type remoteFetch struct {
	r       *Renderer
	view    overlayFS
	seen    map[string]bool // kustomization directories visited
	trees   []string        // where fetched repositories were put
	left    *budget         // bytes and files every fetch of this render may still bring
	fetches int
}

// maxFetches bounds the remote pieces one render fetches.
const maxFetches = 64

func (f *remoteFetch) visit(ctx context.Context, dir string) error {
	if real, _, err := f.view.CleanedAbs(dir); err == nil {
		dir = string(real) // as kustomize reads it: a linked base is where the link leads
	}
	if f.seen[dir] {
		return nil
	}
	f.seen[dir] = true
	k, file, err := readKustomization(f.view, dir)
	if err != nil || k == nil {
		return err
	}
	changed := false
	var visitErr error
	local := func(field, ref string) string {
		if visitErr != nil || !isRemote(ref) {
			return ref
		}
		loc, err := f.fetch(ctx, dir, field, ref)
		if err != nil {
			visitErr = fmt.Errorf("%s: %s %q: %w", file, field, redacted(ref), err)
			return ref
		}
		changed = true
		return loc
	}
	each := func(field string, list []string) {
		for i := range list {
			if field == "generators" || field == "transformers" || field == "validators" {
				if strings.Contains(list[i], "\n") {
					continue // inline: noRemote refuses remote files named in it
				}
			}
			list[i] = local(field, list[i])
		}
	}
	each("resources", k.Resources)
	each("components", k.Components)
	each("crds", k.Crds)
	each("configurations", k.Configurations)
	each("generators", k.Generators)
	each("transformers", k.Transformers)
	each("validators", k.Validators)
	if p := k.OpenAPI["path"]; p != "" {
		k.OpenAPI["path"] = local("openapi", p)
	}
	generatorFields := func(g *types.GeneratorArgs) {
		for i, src := range g.FileSources {
			key, p, keyed := strings.Cut(src, "=")
			if !keyed || strings.Contains(key, "/") {
				key, p = "", src
			}
			if loc := local("generator files", p); loc != p {
				if key == "" { // kustomize names a file's key after the URL's last segment
					key = path.Base(p)
				}
				g.FileSources[i] = key + "=" + loc
			}
		}
		for i := range g.EnvSources {
			g.EnvSources[i] = local("generator files", g.EnvSources[i])
		}
	}
	for i := range k.ConfigMapGenerator {
		generatorFields(&k.ConfigMapGenerator[i].GeneratorArgs)
	}
	for i := range k.SecretGenerator {
		generatorFields(&k.SecretGenerator[i].GeneratorArgs)
	}
	for i := range k.Patches {
		k.Patches[i].Path = local("patches", k.Patches[i].Path)
	}
	for i := range k.PatchesJson6902 {
		k.PatchesJson6902[i].Path = local("patches", k.PatchesJson6902[i].Path)
	}
	for i, p := range k.PatchesStrategicMerge {
		if !strings.Contains(string(p), "\n") {
			k.PatchesStrategicMerge[i] = types.PatchStrategicMerge(local("patches", string(p)))
		}
	}
	for i := range k.Replacements {
		k.Replacements[i].Path = local("replacements", k.Replacements[i].Path)
	}
	if visitErr != nil {
		return visitErr
	}
	if changed {
		data, err := yaml.Marshal(k)
		if err != nil {
			return err
		}
		if err := f.view.mem.MkdirAll(filepath.Dir(file)); err != nil {
			return err
		}
		if err := f.view.mem.WriteFile(file, data); err != nil {
			return err
		}
	}
	// A fetched repository's kustomizations read only inside it, as kustomize keeps a clone's.
	refs := slices.Concat(k.Resources, k.Components, files(k.Generators), files(k.Transformers), files(k.Validators))
	if tree := f.treeOf(dir); tree != "" {
		for _, sub := range refs {
			if !isRemote(sub) && !under(filepath.Join(dir, sub), []string{tree}) {
				return fmt.Errorf("%s: %q leaves the repository it was fetched from", file, sub)
			}
		}
	}
	// The directories the build reads, fetched ones included, may name remote pieces too.
	for _, sub := range refs {
		if p := filepath.Join(dir, sub); f.view.IsDir(p) {
			if err := f.visit(ctx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// fetch brings ref, named in field of the kustomization in dir, into memory under dir, and
// returns the reference that names it there.
func (f *remoteFetch) fetch(ctx context.Context, dir, field, ref string) (string, error) {
	rr, err := parseRemote(field, ref)
	if err != nil {
		return "", err
	}
	if err := f.r.remoteHosts.allows(rr.url); err != nil {
		return "", err
	}
	if f.fetches++; f.fetches > maxFetches {
		return "", fmt.Errorf("more than %d remote pieces in one build", maxFetches)
	}
	if !rr.repo {
		data, err := f.r.fetchFile(ctx, rr.url, f.left)
		if err != nil {
			return "", err
		}
		loc := path.Join(remoteDir, rr.key(), cleanBase(rr.url.Path))
		if err := f.view.mem.MkdirAll(filepath.Join(dir, path.Dir(loc))); err != nil {
			return "", err
		}
		return loc, f.view.mem.WriteFile(filepath.Join(dir, loc), data)
	}
	root := filepath.Join(dir, remoteDir, rr.key())
	if !slices.Contains(f.trees, root) {
		if err := f.r.fetchRepo(ctx, rr, f.view.mem, root, f.left); err != nil {
			return "", err
		}
		f.trees = append(f.trees, root)
	}
	target := filepath.Join(root, rr.dir)
	if !f.view.mem.IsDir(target) {
		return "", fmt.Errorf("no directory %q in %s", rr.dir, rr.url.Redacted())
	}
	return filepath.Rel(dir, target)
}

// hostCredential is the credential configured for u's host (its Host is u's host[:port]) — the
// first by name when several are — or nil: a kustomization cannot name one, so a fetch from a
// listed host uses the host's own. Over plain http, only a credential naming the port too.
func (r *Renderer) hostCredential(u *url.URL) *Credential {
	if u.Scheme != "https" && u.Port() == "" {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(r.opts.Credentials)) {
		if c := r.opts.Credentials[name]; strings.EqualFold(c.Host, u.Host) {
			return &c
		}
	}
	return nil
}

// redacted is ref with any password in it replaced, for messages.
func redacted(ref string) string {
	if u, err := url.Parse(strings.TrimPrefix(ref, "git::")); err == nil && u.User != nil {
		return strings.Replace(ref, u.User.String()+"@", u.User.Username()+":xxxxx@", 1)
	}
	return ref
}

// treeOf is the innermost fetched repository dir is in, "" when none.
func (f *remoteFetch) treeOf(dir string) string {
	var in string
	for _, t := range f.trees {
		if under(dir, []string{t}) && len(t) > len(in) {
			in = t
		}
	}
	return in
}

// cleanBase is a URL path's last segment, usable as a file name.
func cleanBase(p string) string {
	b := path.Base(p)
	if b == "/" || b == "." || b == ".." || b == "" {
		return "file"
	}
	return b
}

// fetchFile GETs u within the renderer's timeout, following redirects only to allowlisted hosts,
// and takes its size off left.
func (r *Renderer) fetchFile(ctx context.Context, u *url.URL, left *budget) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c := r.hostCredential(u); c != nil {
		req.SetBasicAuth(c.Username, c.Password)
	}
	client := &http.Client{CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("more than 5 redirects")
		}
		if err := r.remoteHosts.allows(req.URL); err != nil {
			return fmt.Errorf("redirected to %s: %w", req.URL.Redacted(), err)
		}
		if origin(req.URL) != origin(via[0].URL) {
			req.Header.Del("Authorization") // net/http keeps it for another port or scheme of the same name
		}
		return nil
	}}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, unreachable(fmt.Errorf("timed out after %s", r.opts.HTTPTimeout))
		}
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is named already
		}
		if strings.HasPrefix(err.Error(), "redirected to ") || strings.HasPrefix(err.Error(), "more than 5 redirects") {
			return nil, err // refused, not unreachable
		}
		return nil, unreachable(err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, &fetchError{ReasonSourceNotFound, errors.New(resp.Status)}
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, &fetchError{ReasonAuthDenied, errors.New(resp.Status)}
	default:
		return nil, unreachable(errors.New(resp.Status))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, left.bytes+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, unreachable(fmt.Errorf("timed out after %s", r.opts.HTTPTimeout))
		}
		return nil, unreachable(err)
	}
	if left.bytes -= int64(len(data)); left.bytes < 0 {
		return nil, &fetchError{ReasonSourceTooLarge, fmt.Errorf("more than %d bytes fetched in one build", left.archiveLimits.bytes)}
	}
	return data, nil
}

// fetchError is a remote piece that could not be fetched, rather than one refused: its reason
// is the render's (source_unreachable is retried).
type fetchError struct {
	reason string
	err    error
}

func (e *fetchError) Error() string { return e.err.Error() }
func (e *fetchError) Unwrap() error { return e.err }

func unreachable(err error) error { return &fetchError{ReasonSourceUnreachable, err} }

// fetchRepo fetches the tree of rr at its ref, and only that (git fetch --depth=1), with the git
// CLI kustomize itself clones with, in a scratch directory, then unpacks it (git archive) into
// mem at dest, within left. git runs with no configuration but its own, no prompt, no
// credential helper, only the URL's protocol allowed, no redirects followed, and is killed with
// every process it started when the renderer's timeout passes or the scratch directory grows
// past the budget.
func (r *Renderer) fetchRepo(ctx context.Context, rr remoteRef, mem filesys.FileSystem, dest string, left *budget) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.HTTPTimeout)
	defer cancel()
	scratch, err := os.MkdirTemp("", "troupe-git-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	git := func(stdout io.Writer, args ...string) error {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", scratch,
			"-c", "http.followRedirects=false", "-c", "protocol.allow=never", "-c", "protocol." + rr.url.Scheme + ".allow=always",
			"-c", "credential.helper=", "-c", "core.askPass=", "-c", "core.hooksPath=/dev/null"}, args...)...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + scratch, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=", "SSH_ASKPASS=", "GIT_ALLOW_PROTOCOL=" + rr.url.Scheme, "LC_ALL=C"}
		if c := r.hostCredential(rr.url); c != nil {
			// In the environment, not the arguments others may read; sent to this host only, as
			// redirects are not followed.
			auth := base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))
			cmd.Env = append(cmd.Env, "GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.extraHeader", "GIT_CONFIG_VALUE_0=Authorization: Basic "+auth)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		cmd.WaitDelay = 5 * time.Second
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = stdout, &limitedWriter{w: &stderr, n: 4 << 10}
		if err := startWatched(cmd, scratch, left.bytes, cancel); err != nil {
			switch {
			case errors.Is(err, errTooLarge):
				return &fetchError{ReasonSourceTooLarge, fmt.Errorf("%s: more than %d bytes fetched in one build", rr.url.Redacted(), left.archiveLimits.bytes)}
			case ctx.Err() != nil:
				return unreachable(fmt.Errorf("%s: timed out after %s", rr.url.Redacted(), r.opts.HTTPTimeout))
			}
			msg := lastLine(stderr.String(), err)
			reason := ReasonSourceUnreachable
			switch low := strings.ToLower(msg); {
			case strings.Contains(low, "not found") || strings.Contains(low, "couldn't find remote ref") || strings.Contains(low, "not our ref"):
				reason = ReasonSourceNotFound
			case strings.Contains(low, "authentication") || strings.Contains(low, "could not read username") || hasNumber(low, "403"):
				reason = ReasonAuthDenied
			}
			return &fetchError{reason, fmt.Errorf("%s: git %s: %s", rr.url.Redacted(), args[0], msg)}
		}
		return nil
	}
	want := cmp.Or(rr.ref, "HEAD")
	if strings.HasPrefix(want, "-") {
		return fmt.Errorf("ref %q is not a branch, tag or commit", want)
	}
	if err := git(nil, "init", "-q", "--bare"); err != nil {
		return err
	}
	if err := git(nil, "fetch", "-q", "--depth=1", "--no-tags", "--", rr.url.String(), want); err != nil {
		return err
	}
	// What was downloaded counts against the budget too, besides what it unpacks to.
	if left.bytes -= dirSize(scratch); left.bytes < 0 {
		return &fetchError{ReasonSourceTooLarge, fmt.Errorf("%s: more than %d bytes fetched in one build", rr.url.Redacted(), left.archiveLimits.bytes)}
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := untar(mem, dest, tar.NewReader(pr), left)
		if err != nil {
			cancel() // git stops writing
			pr.CloseWithError(err)
		} else {
			_, _ = io.Copy(io.Discard, pr) // the archive's padding
		}
		done <- err
	}()
	gitErr := git(pw, "archive", "--format=tar", "FETCH_HEAD")
	pw.CloseWithError(gitErr)
	if err := <-done; err != nil && (gitErr == nil || !errors.Is(err, gitErr)) {
		return &fetchError{ReasonSourceTooLarge, fmt.Errorf("%s: %w", rr.url.Redacted(), err)} // git's own archive: only the budget refuses it
	}
	return gitErr
}

var errTooLarge = errors.New("too large")

// startWatched runs cmd to its end, measuring dir every tenth of a second: past limit bytes,
// cancel is called (killing cmd) and errTooLarge returned.
func startWatched(cmd *exec.Cmd, dir string, limit int64, cancel func()) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			if dirSize(dir) > limit {
				return errTooLarge
			}
			return err
		case <-tick.C:
			if dirSize(dir) > limit {
				cancel()
				<-exited
				return errTooLarge
			}
		}
	}
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// lastLine is the last line git wrote to stderr, or err when it wrote none.
func lastLine(stderr string, err error) string {
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return err.Error()
}

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// overlayFS is base with mem laid over it: a file in mem hides base's of that name; directories
// are both's. It writes nothing.
type overlayFS struct {
	base, mem filesys.FileSystem
}

// inMem says whether p is read from mem: a file there, a directory only there, or anything
// under a directory of fetched pieces (never looked for on the disk).
func (o overlayFS) inMem(p string) bool {
	return fetchedPath(p) || o.mem.Exists(p) && (!o.mem.IsDir(p) || !o.base.Exists(p))
}

func fetchedPath(p string) bool {
	return slices.Contains(strings.Split(filepath.ToSlash(p), "/"), remoteDir)
}

func (o overlayFS) Open(p string) (filesys.File, error) {
	if o.inMem(p) {
		return o.mem.Open(p)
	}
	return o.base.Open(p)
}

func (o overlayFS) ReadFile(p string) ([]byte, error) {
	if o.inMem(p) {
		return o.mem.ReadFile(p)
	}
	return o.base.ReadFile(p)
}

func (o overlayFS) ReadDir(p string) ([]string, error) {
	if fetchedPath(p) {
		return o.mem.ReadDir(p)
	}
	if !o.mem.IsDir(p) {
		return o.base.ReadDir(p)
	}
	names, err := o.mem.ReadDir(p)
	if err != nil || !o.base.IsDir(p) {
		return names, err
	}
	more, err := o.base.ReadDir(p)
	for _, n := range more {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names, err
}

func (o overlayFS) IsDir(p string) bool {
	return o.mem.IsDir(p) || !fetchedPath(p) && o.base.IsDir(p)
}

func (o overlayFS) Exists(p string) bool {
	return o.mem.Exists(p) || !fetchedPath(p) && o.base.Exists(p)
}

func (o overlayFS) CleanedAbs(p string) (filesys.ConfirmedDir, string, error) {
	if o.inMem(p) {
		return o.mem.CleanedAbs(p)
	}
	return o.base.CleanedAbs(p)
}

func (o overlayFS) Glob(pattern string) ([]string, error) {
	var a []string
	if !fetchedPath(pattern) {
		var err error
		if a, err = o.base.Glob(pattern); err != nil {
			return nil, err
		}
	}
	b, err := o.mem.Glob(pattern)
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out), err
}

func (o overlayFS) Walk(p string, fn filepath.WalkFunc) error {
	if o.inMem(p) {
		return o.mem.Walk(p, fn)
	}
	return o.base.Walk(p, fn)
}

func (overlayFS) Create(p string) (filesys.File, error) { return nil, readOnly(p) }
func (overlayFS) Mkdir(p string) error                  { return readOnly(p) }
func (overlayFS) MkdirAll(p string) error               { return readOnly(p) }
func (overlayFS) RemoveAll(p string) error              { return readOnly(p) }
func (overlayFS) WriteFile(p string, _ []byte) error    { return readOnly(p) }

func readOnly(p string) error { return fmt.Errorf("%s: the renderer writes nothing", p) }
