// Command health runs troupe's health watcher against any NATS JetStream deployment and one
// Kubernetes cluster.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/health"
)

func main() {
	var (
		cluster          kubeFlags
		perNamespace     bool
		progressInterval time.Duration
		leaseTTL         time.Duration
	)
	serve.Main(serve.Command{
		Name: health.Name,
		Flags: func(fs *pflag.FlagSet) {
			cluster.bind(fs, 50, 100)
			fs.BoolVar(&perNamespace, "per-namespace", false, "watch each kind per namespace, not across the cluster (for namespaced RBAC)")
			fs.DurationVar(&progressInterval, "progress-interval", time.Second, "least time between two release.progressing of a release (ten times this when only the statuses' messages changed)")
			fs.DurationVar(&leaseTTL, "lease-ttl", 15*time.Second, "how long another replica waits to take over from one that stopped renewing the lease (crashed)")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			cfg, err := cluster.config()
			if err != nil {
				return nil, err
			}
			return health.New(ctx, env.JS, cfg, health.Options{PerNamespace: perNamespace, ProgressInterval: progressInterval, LeaseTTL: leaseTTL,
				Names: env.Names, Logger: env.Log, Metrics: env.Metrics, Subscriber: events.SubscriberConfig{TracerProvider: env.TracerProvider}})
		},
	})
}

// kubeFlags are --kubeconfig, --context, --kube-qps and --kube-burst, with the same rules as the
// applier's (services/applier/kube): a copy, so that the health watcher imports nothing of the
// applier's for forty lines of flags.
type kubeFlags struct {
	kubeconfig, context string
	qps                 float32
	burst               int
}

// bind adds the flags to fs, with the watcher's default request rate.
func (f *kubeFlags) bind(fs *pflag.FlagSet, qps float32, burst int) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", serve.EnvOr("TROUPE_KUBECONFIG", ""), "the target cluster (default: in-cluster config) [TROUPE_KUBECONFIG]")
	fs.StringVar(&f.context, "context", "", "kubeconfig context")
	fs.Float32Var(&f.qps, "kube-qps", qps, "API requests per second to the cluster")
	fs.IntVar(&f.burst, "kube-burst", burst, "API request burst")
}

// config is the cluster's client config: --kubeconfig (and --context) when given, the
// in-cluster config inside a pod, else the usual kubeconfig rules ($KUBECONFIG, ~/.kube/config).
func (f *kubeFlags) config() (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if f.kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		cfg, err = rest.InClusterConfig()
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = f.kubeconfig
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.context}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = f.qps, f.burst
	return cfg, nil
}
