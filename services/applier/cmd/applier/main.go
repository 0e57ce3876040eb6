// Command applier runs troupe's applier service against any NATS JetStream deployment and one
// Kubernetes cluster.
package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/applier"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/services/applier/kube"
)

func main() {
	var (
		cluster           kube.Flags
		concurrency       int
		inflight          int
		leaseTTL          time.Duration
		allowNamespaces   []string
		denyClusterScoped bool
		impersonate       string
	)
	serve.Main(serve.Command{
		Name: applier.Name,
		Flags: func(fs *pflag.FlagSet) {
			cluster.Bind(fs, 200, 400)
			fs.IntVar(&concurrency, "concurrency", 16, "releases applied at once by this replica")
			fs.IntVar(&inflight, "kube-requests", 64, "API requests in flight at once, all releases together")
			fs.DurationVar(&leaseTTL, "lease-ttl", 30*time.Second, "how long a crashed replica keeps a release locked")
			fs.StringSliceVar(&allowNamespaces, "allow-namespace", nil, "the only namespaces to touch (repeat; default: all)")
			fs.BoolVar(&denyClusterScoped, "deny-cluster-scoped", false, "refuse cluster-scoped objects (CRDs, ClusterRoles, …)")
			fs.StringVar(&impersonate, "impersonate-service-account", "", "act as this service account of each release's namespace")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			cfg, err := cluster.Config()
			if err != nil {
				return nil, err
			}
			return applier.New(ctx, env.JS, cfg, applier.Options{
				Apply: apply.Options{Concurrency: inflight, AllowNamespaces: allowNamespaces,
					DenyClusterScoped: denyClusterScoped, ImpersonateServiceAccount: impersonate},
				Concurrency: concurrency, LeaseTTL: leaseTTL, Names: env.Names, Logger: env.Log, Metrics: env.Metrics,
			})
		},
	})
}
