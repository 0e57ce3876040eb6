package render

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/Masterminds/semver/v3"
	chart "helm.sh/helm/v4/pkg/chart/v2"

	"github.com/troupe-dev/troupe/events"
)

// resolveDependencies adds to ch the dependencies its Chart.yaml names and its charts/ lacks, as
// `helm dependency build` would fetch them: the version Chart.lock pins, else the newest that
// Chart.yaml's constraint allows, from an https:// repository (its index.yaml) or an oci://
// registry, with the request's credential when it is for that host. A file:// dependency is the
// uploader's to vendor (troupe release does); a repository named by `helm repo add` alias
// cannot be reached. It reports whether any version came from a range (then the render is not
// cached: a newer version may appear). Subcharts' own dependencies are theirs to vendor, as
// under Helm.
func (r *Renderer) resolveDependencies(ctx context.Context, ch *chart.Chart, h *events.HelmSource) (ranged bool, err error) {
	if ch.Metadata == nil {
		return false, nil
	}
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	for _, dep := range ch.Metadata.Dependencies {
		if dep == nil || have[dep.Name] {
			continue
		}
		version := dep.Version
		if ch.Lock != nil {
			for _, l := range ch.Lock.Dependencies {
				if l != nil && l.Name == dep.Name && l.Repository == dep.Repository {
					version = l.Version
				}
			}
		}
		what := fmt.Sprintf("chart %s: dependency %s %s", ch.Metadata.Name, dep.Name, version)
		if dep.Repository != "" {
			what += " from " + dep.Repository
		}
		src := &events.HelmSource{Version: version}
		repo := dep.Repository
		switch {
		case strings.HasPrefix(repo, "oci://"):
			src.OCI = strings.TrimSuffix(repo, "/") + "/" + dep.Name
		case strings.HasPrefix(repo, "https://") || strings.HasPrefix(repo, "http://"):
			src.RepoURL, src.Chart = repo, dep.Name
		case strings.HasPrefix(repo, "file://"):
			return false, fail(ReasonNotAChart, nil, "%s: not in the chart's charts/: a file:// dependency is vendored by whoever uploads the chart (troupe release does; a chart from a repository or registry must carry it)", what)
		case repo == "":
			return false, fail(ReasonNotAChart, nil, "%s: not in the chart's charts/, and no repository to fetch it from", what)
		default:
			return false, fail(ReasonNotAChart, nil, "%s: %q is a repository name from `helm repo add`, which the renderer does not have: name the repository by its https:// or oci:// URL", what, repo)
		}
		if h.Credentials != "" {
			if c, ok := r.opts.Credentials[h.Credentials]; ok && c.Host == hostOf(repo) {
				src.Credentials = h.Credentials
			}
		}
		if _, err := semver.StrictNewVersion(strings.TrimPrefix(version, "v")); err != nil {
			ranged = true
		}
		var sub *chart.Chart
		if src.OCI != "" {
			sub, err = r.pullOCI(ctx, src)
		} else {
			sub, err = r.pullRepo(ctx, src)
		}
		if err != nil {
			if e, ok := err.(*events.Error); ok {
				c := *e
				c.Message = what + ": " + e.Message
				return false, &c
			}
			return false, fail(ReasonSourceUnreachable, err, "%s", what)
		}
		ch.AddDependency(sub)
		have[dep.Name] = true
	}
	return ranged, nil
}

// hostOf is the host[:port] of a repository or registry URL.
func hostOf(repo string) string {
	u, err := url.Parse(repo)
	if err != nil {
		return ""
	}
	return u.Host
}
