package render

import (
	"context"
	"fmt"
	"sort"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Discover reads the target cluster's version, API versions and which kinds are namespaced, and
// sets them on o: .Capabilities then describe the cluster the release goes to, as `helm install`
// sees it, and a kind unknown to the built-in table gets its namespace right. It leaves o as it
// was and returns an error when the cluster cannot be reached.
func Discover(ctx context.Context, cfg *rest.Config, o *Options) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("discover %s: %w", cfg.Host, err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return fmt.Errorf("discover %s: server version: %w", cfg.Host, err)
	}
	// One discovery read for both the API versions and the scopes, so they agree.
	groups, lists, err := dc.ServerGroupsAndResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return fmt.Errorf("discover %s: resources: %w", cfg.Host, err)
	}
	// .Capabilities.APIVersions as Helm builds them: every group/version, and group/version/Kind.
	seen := map[string]bool{}
	var versions []string
	add := func(v string) {
		if !seen[v] {
			seen[v] = true
			versions = append(versions, v)
		}
	}
	for _, g := range groups {
		for _, gv := range g.Versions {
			add(gv.GroupVersion)
		}
	}
	scopes := map[string]bool{} // apiVersion + " " + kind → namespaced
	for _, l := range lists {
		for _, r := range l.APIResources {
			add(l.GroupVersion + "/" + r.Kind)
			scopes[l.GroupVersion+" "+r.Kind] = r.Namespaced
		}
	}
	sort.Strings(versions)
	if o.Kube, err = kubernetes.NewForConfig(cfg); err != nil {
		return fmt.Errorf("discover %s: %w", cfg.Host, err)
	}
	o.KubeVersion = v.GitVersion
	o.APIVersions = append(o.APIVersions, versions...)
	o.Scope = func(apiVersion, kind string) (bool, bool) {
		ns, ok := scopes[apiVersion+" "+kind]
		return ns, ok
	}
	return nil
}
