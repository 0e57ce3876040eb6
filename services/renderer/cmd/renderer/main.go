// Command renderer runs troupe's renderer service against any NATS JetStream deployment.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/renderer"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

func main() {
	var (
		concurrency   int
		kubeVersion   string
		maxBundleSize int
		maxSourceSize int
		plainHTTP     []string
		sourceRoots   []string
		remoteHosts   []string
		fetchTimeout  time.Duration
		credsFile     string
		kubeconfig    string
		inCluster     bool
		kubeContext   string
		lookupAll     bool
	)
	serve.Main(serve.Command{
		Name: renderer.Name,
		Flags: func(fs *pflag.FlagSet) {
			fs.IntVar(&concurrency, "concurrency", 4, "renders at once in this replica")
			fs.StringVar(&kubeVersion, "kube-version", serve.EnvOr("TROUPE_KUBE_VERSION", render.DefaultKubeVersion), ".Capabilities.KubeVersion, and what chart kubeVersion constraints are checked against [TROUPE_KUBE_VERSION]")
			fs.IntVar(&maxBundleSize, "max-bundle-size", 32<<20, "largest bundle, in bytes")
			fs.IntVar(&maxSourceSize, "max-source-size", 64<<20, "largest uploaded source, in bytes, and largest a kustomize archive may unpack to")
			fs.StringSliceVar(&plainHTTP, "plain-http-registry", nil, "OCI registries (host:port) reached over plain HTTP")
			fs.StringVar(&credsFile, "credentials", serve.EnvOr("TROUPE_RENDERER_CREDENTIALS", ""), "a YAML file of repository and registry credentials by name: NAME: {host: HOST[:PORT], username: U, password: P}; each is sent only to its host [TROUPE_RENDERER_CREDENTIALS]")
			fs.StringArrayVar(&sourceRoots, "source-root", nil, "a directory path sources (helm.path, kustomize.path, manifests.path) may name, symlinks resolved (repeatable, or comma-separated); without one, path sources are refused")
			fs.StringSliceVar(&remoteHosts, "kustomize-remote-hosts", nil, "a host kustomizations may fetch remote bases, resources and files from: host or host:port (https), http://host:port (plain http) (repeatable, or comma-separated); without one, a kustomization naming anything remote fails")
			fs.DurationVar(&fetchTimeout, "fetch-timeout", 60*time.Second, "bounds each download: a chart, a repository index, a kustomization's remote base or file")
			fs.StringVar(&kubeconfig, "kubeconfig", serve.EnvOr("TROUPE_KUBECONFIG", ""), "the target cluster: .Capabilities and kind scopes are discovered from it (and kept fresh), valuesFrom and lookup read it [TROUPE_KUBECONFIG]")
			fs.StringVar(&kubeContext, "context", "", "kubeconfig context")
			fs.BoolVar(&inCluster, "in-cluster", false, "the target cluster is the one the renderer runs in (its pod's service account), as --kubeconfig would name it")
			fs.BoolVar(&lookupAll, "lookup-all-namespaces", false, "a chart's lookup may read namespaced objects of every namespace the renderer may read; without it, only the release's namespace (and cluster-scoped kinds)")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			ropts := render.Options{KubeVersion: kubeVersion, MaxBundleSize: maxBundleSize, MaxSourceSize: maxSourceSize, PlainHTTPRegistries: plainHTTP, SourceRoots: sourceRoots,
				KustomizeRemoteHosts: remoteHosts, HTTPTimeout: fetchTimeout, LookupAllNamespaces: lookupAll}
			if credsFile != "" {
				b, err := os.ReadFile(credsFile)
				if err != nil {
					return nil, fmt.Errorf("--credentials: %w", err)
				}
				if err := yaml.UnmarshalStrict(b, &ropts.Credentials); err != nil {
					return nil, fmt.Errorf("--credentials %s: %w", credsFile, err)
				}
			}
			if kubeconfig != "" && inCluster {
				return nil, fmt.Errorf("--kubeconfig and --in-cluster: give one")
			}
			if kubeconfig != "" || inCluster {
				var cfg *rest.Config
				var err error
				if inCluster {
					cfg, err = rest.InClusterConfig()
				} else {
					cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
						&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
						&clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
				}
				if err != nil {
					return nil, fmt.Errorf("the target cluster: %w", err)
				}
				if err := render.Discover(ctx, cfg, &ropts); err != nil {
					env.Log.Warn().Err(err).Msg("cluster not reachable: rendering with --kube-version and the built-in kind table until it answers")
				}
			}
			signer, err := access.BundleSigner(env.Creds)
			if err != nil {
				return nil, err
			}
			return renderer.New(ctx, env.JS, renderer.Options{Render: ropts, Concurrency: concurrency, Names: env.Names, Logger: env.Log, Metrics: env.Metrics,
				Signer: signer, Subscriber: events.SubscriberConfig{TracerProvider: env.TracerProvider}})
		},
	})
}
