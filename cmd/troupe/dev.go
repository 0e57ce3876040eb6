package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/embedded"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/renderer"
)

type devOptions struct {
	natsListen string
	storeDir   string
	httpListen string
	maxAge     time.Duration
	natsLogs   bool
}

func (c *cli) devCmd() *cobra.Command {
	o := devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded NATS JetStream and every troupe service in one process",
		Long: `Run a local troupe: an embedded nats-server with JetStream (its data in --store-dir), troupe's
streams and buckets provisioned, and every troupe service in this process. Prints the NATS URL
for the other commands. Stops cleanly on Ctrl-C (a second Ctrl-C exits at once).

Serves /healthz, /readyz and /metrics on --http-listen.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return c.dev(cmd.Context(), o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.natsListen, "nats-listen", envOr("TROUPE_NATS_LISTEN", "127.0.0.1:4222"), "host:port of the embedded NATS server; port -1 picks a free one [TROUPE_NATS_LISTEN]")
	f.StringVar(&o.storeDir, "store-dir", envOr("TROUPE_STORE_DIR", ".troupe"), "where the embedded NATS keeps its data [TROUPE_STORE_DIR]")
	f.StringVar(&o.httpListen, "http-listen", envOr("TROUPE_HTTP_LISTEN", "127.0.0.1:7070"), "host:port for /healthz, /readyz and /metrics; port 0 picks a free one [TROUPE_HTTP_LISTEN]")
	f.DurationVar(&o.maxAge, "max-age", 30*24*time.Hour, "how long the stream keeps events")
	f.BoolVar(&o.natsLogs, "nats-logs", false, "print the NATS server's own logs")
	return cmd
}

// runner is a service `troupe dev` runs: Start blocks until ctx ends; Ready is closed once it
// receives events.
type runner interface {
	Start(ctx context.Context) error
	Ready() <-chan struct{}
}

func (c *cli) dev(ctx context.Context, o devOptions) error {
	log, err := c.logger()
	if err != nil {
		return err
	}
	httpLn, err := net.Listen("tcp", o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen %s: %w", o.httpListen, err)
	}
	storeDir := filepath.Join(o.storeDir, "nats")
	srv, err := embedded.Start(embedded.Options{Listen: o.natsListen, StoreDir: storeDir, Logs: o.natsLogs})
	if err != nil {
		httpLn.Close()
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()

	nc, err := nats.Connect(srv.ClientURL(), nats.Name("troupe-dev"))
	if err != nil {
		return fmt.Errorf("connect to embedded NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	provisioned, err := events.Provision(ctx, js, events.ProvisionConfig{MaxAge: o.maxAge})
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	for _, p := range provisioned {
		log.Debug().Str("kind", p.Kind).Str("name", p.Name).Str("action", p.Action).Msg("provisioned")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := events.NewMetrics(reg)
	if err != nil {
		return err
	}
	services, err := devServices(ctx, js, log, metrics)
	if err != nil {
		return err
	}

	var ready atomic.Bool
	httpSrv := &http.Server{Handler: serve.Handler(reg, func() bool { return ready.Load() && nc.IsConnected() }), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(httpLn) }()

	svcCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServices()
	var wg sync.WaitGroup
	errs := make(chan error, len(services))
	for name, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Start(svcCtx); err != nil {
				errs <- fmt.Errorf("service %s: %w", name, err)
			}
		}()
	}
	// Ready only once every service receives events: a request published right after must not
	// be missed by a consumer that is not there yet.
	for name, s := range services {
		select {
		case <-s.Ready():
		case err := <-errs:
			stopServices()
			wg.Wait()
			return err
		case <-time.After(30 * time.Second):
			stopServices()
			wg.Wait()
			return fmt.Errorf("service %s did not start within 30s", name)
		}
	}
	ready.Store(true)
	fmt.Fprintf(c.stdout, "troupe dev: NATS JetStream at %s (data in %s)\n", srv.ClientURL(), storeDir)
	fmt.Fprintf(c.stdout, "troupe dev: health and metrics at http://%s\n", httpLn.Addr())
	fmt.Fprintf(c.stdout, "troupe dev: services: %s\n", serviceNames(services))
	fmt.Fprintf(c.stdout, "troupe dev: ready. In another shell: export TROUPE_SERVER=%s; troupe tail\n", srv.ClientURL())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	// Shutdown: not ready → services drain → NATS drains → HTTP stops (the deferred server shutdown last).
	fmt.Fprintln(c.stdout, "troupe dev: shutting down")
	ready.Store(false)
	stopServices()
	wg.Wait()
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn().Err(err).Msg("drain NATS connection")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	fmt.Fprintln(c.stdout, "troupe dev: stopped")
	return runErr
}

// devServices returns the services `troupe dev` runs, by name. More join as they are built.
func devServices(ctx context.Context, js jetstream.JetStream, log zerolog.Logger, m *events.Metrics) (map[string]runner, error) {
	out := map[string]runner{}
	rlog := log.With().Str("service", renderer.Name).Logger()
	r, err := renderer.New(ctx, js, renderer.Options{Logger: &rlog, Metrics: m})
	if err != nil {
		return nil, err
	}
	out[renderer.Name] = r
	// catalog-check reads every catalog event and dead-letters what does not conform, with the
	// reason, so a malformed event from any NATS client is visible in `troupe tail --dead-letters`.
	check, err := events.NewSubscriber(js, events.SubscriberConfig{
		Service: "catalog-check", Types: events.Types(), Concurrency: 8, Logger: &log, Metrics: m,
	}, func(ctx context.Context, e event.Event) error { return nil })
	if err != nil {
		return nil, err
	}
	out["catalog-check"] = check
	return out, nil
}

func serviceNames(m map[string]runner) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
