// Package kube is how troupe's commands that reach a Kubernetes cluster (the applier, and troupe
// dev for its services) are told which one. The health watcher's command has a copy of the same
// flags and rules (services/health/cmd/health), so as not to import the applier: change both.
package kube

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/troupe-dev/troupe/events/serve"
)

// Flags are --kubeconfig, --context, --kube-qps and --kube-burst.
type Flags struct {
	Kubeconfig, Context string
	QPS                 float32
	Burst               int
}

// Bind adds the flags to fs, with the command's default request rate.
func (f *Flags) Bind(fs *pflag.FlagSet, qps float32, burst int) {
	fs.StringVar(&f.Kubeconfig, "kubeconfig", serve.EnvOr("TROUPE_KUBECONFIG", ""), "the target cluster (default: in-cluster config) [TROUPE_KUBECONFIG]")
	fs.StringVar(&f.Context, "context", "", "kubeconfig context")
	fs.Float32Var(&f.QPS, "kube-qps", qps, "API requests per second to the cluster")
	fs.IntVar(&f.Burst, "kube-burst", burst, "API request burst")
}

// Config is the cluster's client config: --kubeconfig (and --context) when given, the
// in-cluster config inside a pod, else the usual kubeconfig rules ($KUBECONFIG, ~/.kube/config).
func (f *Flags) Config() (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if f.Kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		cfg, err = rest.InClusterConfig()
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = f.Kubeconfig
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: f.Context}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = f.QPS, f.Burst
	return cfg, nil
}
