package serve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/tracing"
)

// Service is what a service command runs: started once, ready when it receives events, Start
// returning once ctx ended and it drained.
type Service interface {
	Start(ctx context.Context) error
	Ready() <-chan struct{}
}

// Command is one troupe service's command: its name, its own flags, and how to build it once
// NATS is connected and troupe's streams and buckets provisioned.
//
// New is called again, after a backoff, when it fails because NATS is not there yet (a stream or
// bucket not found, a timeout, no responders: see notThereYet), so it must open what it needs from
// NATS before it adds handlers to Env.Mux; any other error ends the command.
type Command struct {
	Name  string
	Flags func(fs *pflag.FlagSet)
	New   func(ctx context.Context, env *Env) (Service, error)
}

// Env is what Command.New gets: the connection, a logger and metrics for the service, and the
// HTTP mux it may add handlers to (beside /healthz, /readyz and /metrics).
type Env struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Names   events.Names // the system to work in: live, or the sandbox of --subjects-prefix
	Log     *zerolog.Logger
	Metrics *events.Metrics
	Mux     *http.ServeMux
	// Conn is how the service reached NATS: for a second connection under another identity
	// (history's web UI publishing with the cli identity's rights).
	Conn events.ConnOptions
	// Creds is the NATS credentials file the service connected with ("" for none): what it
	// signs the objects it writes with, and whose account it trusts (events.Signer, Attestor).
	Creds string
	// TracerProvider exports the service's spans as --otlp-endpoint or OpenTelemetry's
	// environment says (events/tracing): for events.SubscriberConfig.TracerProvider. nil when
	// tracing is off.
	TracerProvider trace.TracerProvider
}

// Main runs c with the process's arguments until SIGINT or SIGTERM, and exits.
func Main(c Command) {
	ctx, cancel := SignalContext(c.Name)
	err := Run(ctx, c, os.Args[1:])
	cancel()
	if errors.Is(err, pflag.ErrHelp) {
		return // the usage is printed: --help asked for nothing else
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", c.Name, err)
		os.Exit(1)
	}
}

// Run parses args (the flags every service has — NATS connection, --http-listen, --log-level,
// --provision, --replicas, --max-age, --subjects-prefix, --otlp-endpoint — and c's), connects,
// provisions, builds the service, and runs it in a Group of one (see Group.Run) until ctx ends or
// the service fails; then it exports the spans not exported yet (tracing.Provider.Shutdown).
func Run(ctx context.Context, c Command, args []string) error {
	var (
		conn       events.ConnOptions
		httpListen string
		logLevel   string
		provision  ProvisionOptions
		only       bool
		prefix     string
		otlp       tracing.Options
	)
	fs := pflag.NewFlagSet(c.Name, pflag.ContinueOnError)
	conn.BindFlags(fs)
	fs.StringVar(&httpListen, "http-listen", EnvOr("TROUPE_HTTP_LISTEN", ":8080"), "host:port for /healthz, /readyz, /metrics [TROUPE_HTTP_LISTEN]")
	fs.StringVar(&logLevel, "log-level", EnvOr("TROUPE_LOG_LEVEL", "info"), "debug, info, warn, error [TROUPE_LOG_LEVEL]")
	provision.BindFlags(fs)
	fs.BoolVar(&only, "provision-only", false, "provision the streams and buckets as --provision says, then exit without serving: a deployment's one-shot Job, run with the admin's credentials, so the services run with --provision=false")
	fs.StringVar(&prefix, "subjects-prefix", EnvOr("TROUPE_SUBJECTS_PREFIX", ""), "work in this sandbox, not on the live subjects [TROUPE_SUBJECTS_PREFIX]")
	otlp.BindFlags(fs)
	if c.Flags != nil {
		c.Flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	names, err := events.NewNames(prefix)
	if err != nil {
		return fmt.Errorf("--subjects-prefix: %w", err)
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(logLevel))
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", c.Name).Logger()
	// $TROUPE_CPU_PROFILE: a CPU profile of the whole run, written when the service stops (for
	// `make bench-scale -profile`; a file, not an HTTP endpoint: nothing more to expose).
	if path := os.Getenv("TROUPE_CPU_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fmt.Errorf("$TROUPE_CPU_PROFILE: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("$TROUPE_CPU_PROFILE: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// $TROUPE_HEAP_PROFILE: the heap profile as of the service's largest live heap (rewritten
	// each time it grew a tenth past the last one written; what it held then, and what it had
	// allocated), for the same bench.
	if path := os.Getenv("TROUPE_HEAP_PROFILE"); path != "" {
		go heapProfiles(ctx, path, log)
	}
	tp, err := tracing.New(ctx, otlp, c.Name)
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(ctx); err != nil {
			log.Warn().Err(err).Msg("tracing")
		}
	}()

	// Connected or not: a service starts while NATS is unreachable, serving /healthz at once and
	// /readyz false until it is connected and receiving (Prepare, then the group).
	nc, err := conn.ConnectRetrying("troupe-"+c.Name, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if only {
		return provisionOnly(ctx, nc, js, names, &provision, conn.Server, log)
	}
	reg, metrics, err := NewRegistry()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen: %w", err)
	}
	env := &Env{NC: nc, JS: js, Names: names, Log: &log, Metrics: metrics, Mux: http.NewServeMux(), Creds: conn.CredsFile, Conn: conn,
		TracerProvider: tp.TracerProvider()}
	g := &Group{NC: nc, Listener: ln, Mux: env.Mux, Gatherer: reg, Log: &log, ReadyTimeout: NoReadyTimeout,
		OnReady: func() {
			log.Info().Str("nats", nc.ConnectedUrl()).Str("http", ln.Addr().String()).Msg(c.Name + " ready")
		}}
	g.Prepare = func(ctx context.Context) error {
		w := waiter{log: log, server: conn.Server}
		if !events.WaitConnected(ctx, nc, conn.Server, log) {
			return nil
		}
		if !w.retry(ctx, "provision troupe's streams and buckets", func() error {
			_, err := provision.Provision(ctx, js, names, &log)
			return err
		}) {
			return nil
		}
		var svc Service
		if !w.retry(ctx, "start "+c.Name, func() error {
			s, err := c.New(ctx, env)
			if err != nil && !notThereYet(err) {
				return permanent{err}
			}
			svc = s
			return err
		}) {
			return w.err
		}
		g.Add(c.Name, svc)
		return nil
	}
	return g.Run(ctx)
}

// NewRegistry returns a metrics registry with the Go runtime's and the process's collectors and
// troupe's metrics registered, and those metrics, for the services of one process to share.
func NewRegistry() (*prometheus.Registry, *events.Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics, err := events.NewMetrics(reg)
	if err != nil {
		return nil, nil, err
	}
	return reg, metrics, nil
}

// EnvOr returns the environment variable name, or def when it is not set.
func EnvOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// heapProfiles writes the heap profile to path whenever the live heap (as of the last GC, what
// the profile's in-use figures count) grew a tenth past what it was at the last one written,
// until ctx ends.
func heapProfiles(ctx context.Context, path string, log zerolog.Logger) {
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var written uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		metrics.Read(live)
		if live[0].Value.Kind() != metrics.KindUint64 {
			log.Warn().Msg("$TROUPE_HEAP_PROFILE: this Go runtime does not report its live heap")
			return
		}
		heap := live[0].Value.Uint64()
		if heap < written+written/10 {
			continue
		}
		if err := writeHeapProfile(path); err != nil {
			log.Warn().Err(err).Msg("$TROUPE_HEAP_PROFILE")
			return
		}
		written = heap
	}
}

func writeHeapProfile(path string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path) // whole, whenever it is read
}
