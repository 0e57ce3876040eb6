package render

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/registry"
	repo "helm.sh/helm/v4/pkg/repo/v1"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
)

// maxDownload bounds a downloaded index or chart.
const maxDownload = 64 << 20

// pullOCI pulls a chart from an OCI registry with Helm's registry client.
func (r *Renderer) pullOCI(ctx context.Context, h *events.HelmSource) (*chart.Chart, error) {
	ref := strings.TrimPrefix(h.OCI, "oci://")
	if h.Version != "" && !strings.Contains(refPath(ref), ":") {
		ref += ":" + h.Version
	}
	host, _, _ := strings.Cut(ref, "/")
	opts := []registry.ClientOption{registry.ClientOptWriter(io.Discard), registry.ClientOptEnableCache(false),
		registry.ClientOptHTTPClient(&http.Client{Timeout: r.opts.HTTPTimeout})}
	if slices.Contains(r.opts.PlainHTTPRegistries, host) {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	if h.Credentials != "" {
		c, err := r.credential(h.Credentials, host, h.OCI)
		if err != nil {
			return nil, err
		}
		opts = append(opts, registry.ClientOptBasicAuth(c.Username, c.Password))
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "OCI client for %s", h.OCI)
	}
	res, err := client.Pull(ref, registry.PullOptWithChart(true))
	if err != nil {
		return nil, classifyFetch(h.OCI, err)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(res.Chart.Data))
	if err != nil {
		return nil, fail(ReasonNotAChart, err, "%s is not a Helm chart", h.OCI)
	}
	return ch, nil
}

// refPath is ref without its host, where a port's colon is not a tag's.
func refPath(ref string) string {
	_, p, _ := strings.Cut(ref, "/")
	return p
}

// credential is the credential a request names, for the repository or registry at host (what,
// for messages): an error when it is not configured, or is for another host.
func (r *Renderer) credential(name, host, what string) (*Credential, error) {
	c, ok := r.opts.Credentials[name]
	if !ok {
		return nil, fail(ReasonAuthDenied, nil, "credentials %q for %s are not configured on the renderer", name, what)
	}
	if c.Host != host {
		return nil, fail(ReasonAuthDenied, nil, "credentials %q are for %s, not %s: the renderer sends a credential only to its host", name, c.Host, host)
	}
	return &c, nil
}

// pullRepo finds the chart in the repository's index.yaml (exact version or semver range, the
// newest if none) and downloads it.
func (r *Renderer) pullRepo(ctx context.Context, h *events.HelmSource) (*chart.Chart, error) {
	var cred *Credential
	if h.Credentials != "" {
		u, err := url.Parse(h.RepoURL)
		if err != nil {
			return nil, fail(ReasonSourceNotFound, err, "repository %s", h.RepoURL)
		}
		if cred, err = r.credential(h.Credentials, u.Host, h.RepoURL); err != nil {
			return nil, err
		}
	}
	indexURL := strings.TrimSuffix(h.RepoURL, "/") + "/index.yaml"
	data, err := r.download(ctx, indexURL, cred)
	if err != nil {
		return nil, err
	}
	var idx repo.IndexFile
	if err := yaml.Unmarshal(data, &idx); err != nil || idx.APIVersion == "" {
		return nil, fail(ReasonNotAChart, err, "%s is not a Helm repository index", indexURL)
	}
	idx.SortEntries()
	cv, err := idx.Get(h.Chart, h.Version)
	if err != nil {
		want := h.Chart
		if h.Version != "" {
			want += " " + h.Version
		}
		return nil, fail(ReasonSourceNotFound, err, "chart %s in %s", want, h.RepoURL)
	}
	if len(cv.URLs) == 0 {
		return nil, fail(ReasonSourceNotFound, nil, "chart %s %s in %s has no download URL", h.Chart, cv.Version, h.RepoURL)
	}
	u, err := repo.ResolveReferenceURL(h.RepoURL, cv.URLs[0])
	if err != nil {
		return nil, fail(ReasonSourceNotFound, err, "chart %s %s in %s", h.Chart, cv.Version, h.RepoURL)
	}
	archive, err := r.download(ctx, u, cred)
	if err != nil {
		return nil, err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, fail(ReasonNotAChart, err, "%s is not a Helm chart archive", u)
	}
	return ch, nil
}

func (r *Renderer) download(ctx context.Context, url string, cred *Credential) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fail(ReasonSourceNotFound, err, "%s", url)
	}
	if cred != nil && req.URL.Host == cred.Host { // a chart the index places on another host gets none
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "download %s", url)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fail(ReasonAuthDenied, nil, "download %s: %s", url, resp.Status)
	case resp.StatusCode == http.StatusNotFound:
		return nil, fail(ReasonSourceNotFound, nil, "download %s: %s", url, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fail(ReasonSourceUnreachable, nil, "download %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDownload+1))
	if err != nil {
		return nil, fail(ReasonSourceUnreachable, err, "download %s", url)
	}
	if len(data) > maxDownload {
		return nil, fail(ReasonSourceUnreachable, nil, "download %s: more than %d bytes", url, maxDownload)
	}
	return data, nil
}

// classifyFetch maps a registry client error onto a reason code: by the registry's HTTP status
// when the error carries it, else by its words (a status code only as a number of its own: a
// registry on port 40329 is not a 403).
func classifyFetch(what string, err error) *events.Error {
	var resp *errcode.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.StatusCode {
		case http.StatusUnauthorized, http.StatusForbidden:
			return fail(ReasonAuthDenied, err, "pull %s", what)
		case http.StatusNotFound:
			return fail(ReasonSourceNotFound, err, "pull %s", what)
		}
	}
	msg := strings.ToLower(err.Error())
	switch {
	case hasNumber(msg, "401") || hasNumber(msg, "403") || strings.Contains(msg, "unauthorized") ||
		strings.Contains(msg, "forbidden") || strings.Contains(msg, "denied") || strings.Contains(msg, "credential"):
		return fail(ReasonAuthDenied, err, "pull %s", what)
	case strings.Contains(msg, "not found") || hasNumber(msg, "404") || strings.Contains(msg, "unknown"):
		return fail(ReasonSourceNotFound, err, "pull %s", what)
	case errors.Is(err, context.DeadlineExceeded):
		return fail(ReasonSourceUnreachable, err, "pull %s: timed out", what)
	default:
		return fail(ReasonSourceUnreachable, err, "pull %s", what)
	}
}

// hasNumber says whether s holds n as a number of its own, not inside a longer one.
func hasNumber(s, n string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], n)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(n)
		if (start == 0 || !isDigit(s[start-1])) && (end == len(s) || !isDigit(s[end])) {
			return true
		}
		i = start + 1
	}
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }
