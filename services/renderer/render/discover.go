package render

import (
	"context"
	"fmt"

	"helm.sh/helm/v4/pkg/action"
	"k8s.io/client-go/discovery"
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
	versions, err := action.GetVersionSet(dc)
	if err != nil {
		return fmt.Errorf("discover %s: %w", cfg.Host, err)
	}
	_, lists, err := dc.ServerGroupsAndResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return fmt.Errorf("discover %s: resources: %w", cfg.Host, err)
	}
	scopes := map[string]bool{} // apiVersion + " " + kind → namespaced
	for _, l := range lists {
		for _, r := range l.APIResources {
			scopes[l.GroupVersion+" "+r.Kind] = r.Namespaced
		}
	}
	o.KubeVersion = v.GitVersion
	o.APIVersions = append(o.APIVersions, versions...)
	o.Scope = func(apiVersion, kind string) (bool, bool) {
		ns, ok := scopes[apiVersion+" "+kind]
		return ns, ok
	}
	return nil
}
