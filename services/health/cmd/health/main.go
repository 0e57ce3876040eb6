// Command health runs troupe's health watcher against any NATS JetStream deployment and one
// Kubernetes cluster.
package main

import (
	"context"
	"time"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/applier/kube"
	"github.com/troupe-dev/troupe/services/health"
)

func main() {
	var (
		cluster          kube.Flags
		perNamespace     bool
		progressInterval time.Duration
	)
	serve.Main(serve.Command{
		Name: health.Name,
		Flags: func(fs *pflag.FlagSet) {
			cluster.Bind(fs, 50, 100)
			fs.BoolVar(&perNamespace, "per-namespace", false, "watch each kind per namespace, not across the cluster (for namespaced RBAC)")
			fs.DurationVar(&progressInterval, "progress-interval", time.Second, "least time between two release.progressing of a release")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			cfg, err := cluster.Config()
			if err != nil {
				return nil, err
			}
			return health.New(ctx, env.JS, cfg, health.Options{PerNamespace: perNamespace, ProgressInterval: progressInterval,
				Names: env.Names, Logger: env.Log, Metrics: env.Metrics})
		},
	})
}
