// Command health runs troupe's health watcher against any NATS JetStream deployment and one
// Kubernetes cluster.
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
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/health"
)

func main() {
	ctx, cancel := serve.SignalContext("health")
	err := run(ctx, os.Args[1:])
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "health:", err)
		os.Exit(1)
	}
}

type options struct {
	conn             events.ConnOptions
	httpListen       string
	logLevel         string
	perNamespace     bool
	progressInterval time.Duration
	kubeconfig       string
	kubeContext      string
	qps              float32
	burst            int
	provision        bool
	replicas         int
}

func (o *options) bindFlags(fs *pflag.FlagSet) {
	o.conn.BindFlags(fs)
	fs.StringVar(&o.httpListen, "http-listen", env("TROUPE_HTTP_LISTEN", ":8080"), "host:port for /healthz, /readyz, /metrics [TROUPE_HTTP_LISTEN]")
	fs.StringVar(&o.logLevel, "log-level", env("TROUPE_LOG_LEVEL", "info"), "debug, info, warn, error [TROUPE_LOG_LEVEL]")
	fs.BoolVar(&o.perNamespace, "per-namespace", false, "watch each kind per namespace, not across the cluster (for namespaced RBAC)")
	fs.DurationVar(&o.progressInterval, "progress-interval", time.Second, "least time between two release.progressing of a release")
	fs.StringVar(&o.kubeconfig, "kubeconfig", env("TROUPE_KUBECONFIG", ""), "the target cluster (default: in-cluster config) [TROUPE_KUBECONFIG]")
	fs.StringVar(&o.kubeContext, "context", "", "kubeconfig context")
	fs.Float32Var(&o.qps, "kube-qps", 200, "API requests per second to the cluster")
	fs.IntVar(&o.burst, "kube-burst", 400, "API request burst")
	fs.BoolVar(&o.provision, "provision", true, "create or update troupe's streams and buckets at start")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of the streams and buckets it provisions (3 on a cluster)")
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := pflag.NewFlagSet("health", pflag.ContinueOnError)
	o.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(o.logLevel))
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", health.Name).Logger()
	cfg, err := kubeConfig(o.kubeconfig, o.kubeContext)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = o.qps, o.burst

	nc, err := o.conn.Connect("troupe-health")
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
	svc, err := health.New(ctx, js, cfg, health.Options{
		PerNamespace: o.perNamespace, ProgressInterval: o.progressInterval, Logger: &log, Metrics: metrics,
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
		log.Info().Str("nats", nc.ConnectedUrl()).Str("cluster", cfg.Host).Str("http", ln.Addr().String()).Msg("health ready")
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

func kubeConfig(path, context string) (*rest.Config, error) {
	if path == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
		return rest.InClusterConfig()
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: path},
		&clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	return cfg, nil
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
