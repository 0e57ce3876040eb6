// Command history runs troupe's history service against any NATS JetStream deployment: it keeps
// every release's revisions, drives rollbacks, and answers queries over NATS
// (troupe.history.<query>) and HTTP (/releases…).
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

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/history"
)

func main() {
	ctx, cancel := serve.SignalContext("history")
	err := run(ctx, os.Args[1:])
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "history:", err)
		os.Exit(1)
	}
}

type options struct {
	conn       events.ConnOptions
	httpListen string
	logLevel   string
	keep       int
	rebuild    bool
	provision  bool
	replicas   int
}

func (o *options) bindFlags(fs *pflag.FlagSet) {
	o.conn.BindFlags(fs)
	fs.StringVar(&o.httpListen, "http-listen", env("TROUPE_HTTP_LISTEN", ":8080"), "host:port for /healthz, /readyz, /metrics [TROUPE_HTTP_LISTEN]")
	fs.StringVar(&o.logLevel, "log-level", env("TROUPE_LOG_LEVEL", "info"), "debug, info, warn, error [TROUPE_LOG_LEVEL]")
	fs.IntVar(&o.keep, "keep", 10, "revisions kept per release (older bundles are deleted from the object store)")
	fs.BoolVar(&o.rebuild, "rebuild", false, "rebuild every release's history from the events stream before serving")
	fs.BoolVar(&o.provision, "provision", true, "create or update troupe's streams and buckets at start")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of the streams and buckets it provisions (3 on a cluster)")
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := pflag.NewFlagSet("history", pflag.ContinueOnError)
	o.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(o.logLevel))
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", history.Name).Logger()
	nc, err := o.conn.Connect("troupe-history")
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
	svc, err := history.New(ctx, js, history.Options{Keep: o.keep, Logger: &log, Metrics: metrics})
	if err != nil {
		return err
	}
	if o.rebuild {
		n, err := svc.Rebuild(ctx)
		if err != nil {
			return fmt.Errorf("--rebuild: %w", err)
		}
		log.Info().Int("releases", n).Msg("rebuilt from the stream")
	}
	if err := svc.Serve(ctx, nc); err != nil {
		return err
	}

	var ready atomic.Bool
	ln, err := net.Listen("tcp", o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/releases", svc.HTTPHandler())
	mux.Handle("/releases/", svc.HTTPHandler())
	mux.Handle("/", serve.Handler(reg, func() bool { return ready.Load() && nc.IsConnected() }))
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(ln) }()

	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	select {
	case <-svc.Ready():
		ready.Store(true)
		log.Info().Str("nats", nc.ConnectedUrl()).Str("http", ln.Addr().String()).Msg("history ready")
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

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
