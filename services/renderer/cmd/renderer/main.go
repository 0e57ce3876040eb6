// Command renderer runs troupe's renderer service against any NATS JetStream deployment.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/renderer"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

func main() {
	ctx, cancel := serve.SignalContext("renderer")
	err := run(ctx, os.Args[1:])
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "renderer:", err)
		os.Exit(1)
	}
}

type options struct {
	conn          events.ConnOptions
	httpListen    string
	logLevel      string
	concurrency   int
	kubeVersion   string
	maxBundleSize int
	plainHTTP     []string
	provision     bool
	replicas      int
	kubeconfig    string
	kubeContext   string
}

func (o *options) bindFlags(fs *pflag.FlagSet) {
	o.conn.BindFlags(fs)
	fs.StringVar(&o.httpListen, "http-listen", env("TROUPE_HTTP_LISTEN", ":8080"), "host:port for /healthz, /readyz, /metrics [TROUPE_HTTP_LISTEN]")
	fs.StringVar(&o.logLevel, "log-level", env("TROUPE_LOG_LEVEL", "info"), "debug, info, warn, error [TROUPE_LOG_LEVEL]")
	fs.IntVar(&o.concurrency, "concurrency", 4, "renders at once in this replica")
	fs.StringVar(&o.kubeVersion, "kube-version", env("TROUPE_KUBE_VERSION", render.DefaultKubeVersion), ".Capabilities.KubeVersion, and what chart kubeVersion constraints are checked against [TROUPE_KUBE_VERSION]")
	fs.IntVar(&o.maxBundleSize, "max-bundle-size", 32<<20, "largest bundle, in bytes")
	fs.StringSliceVar(&o.plainHTTP, "plain-http-registry", nil, "OCI registries (host:port) reached over plain HTTP")
	fs.StringVar(&o.kubeconfig, "kubeconfig", env("TROUPE_KUBECONFIG", ""), "the target cluster: .Capabilities and kind scopes are discovered from it [TROUPE_KUBECONFIG]")
	fs.StringVar(&o.kubeContext, "context", "", "kubeconfig context")
	fs.BoolVar(&o.provision, "provision", true, "create or update troupe's streams and buckets at start")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of the streams and buckets it provisions (3 on a cluster)")
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := pflag.NewFlagSet("renderer", pflag.ContinueOnError)
	o.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(o.logLevel))
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", renderer.Name).Logger()

	nc, err := o.conn.Connect("troupe-renderer")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if o.provision {
		if _, err := events.Provision(ctx, js, events.ProvisionConfig{Replicas: o.replicas}); err != nil {
			return fmt.Errorf("provision: %w", err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := events.NewMetrics(reg)
	if err != nil {
		return err
	}
	ropts := render.Options{KubeVersion: o.kubeVersion, MaxBundleSize: o.maxBundleSize, PlainHTTPRegistries: o.plainHTTP}
	if o.kubeconfig != "" {
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.kubeconfig},
			&clientcmd.ConfigOverrides{CurrentContext: o.kubeContext}).ClientConfig()
		if err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
		if err := render.Discover(ctx, cfg, &ropts); err != nil {
			log.Warn().Err(err).Msg("cluster not reachable: rendering with --kube-version and the built-in kind table")
		}
	}
	svc, err := renderer.New(ctx, js, renderer.Options{
		Render:      ropts,
		Concurrency: o.concurrency, Logger: &log, Metrics: metrics,
	})
	if err != nil {
		return err
	}

	var ready atomic.Bool
	ln, err := net.Listen("tcp", o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen: %w", err)
	}
	httpSrv := &http.Server{Handler: serve.Handler(reg, func() bool { return ready.Load() && nc.IsConnected() }), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(ln) }()

	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	select {
	case <-svc.Ready():
		ready.Store(true)
		log.Info().Str("nats", nc.ConnectedUrl()).Str("http", ln.Addr().String()).Msg("renderer ready")
	case err := <-done:
		return err
	}
	err = <-done // ctx ended: the subscriber drained
	ready.Store(false)
	if derr := nc.Drain(); derr != nil && !errors.Is(derr, context.Canceled) {
		log.Debug().Err(derr).Msg("drain")
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdown)
	return err
}

func env(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}
