package serve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// DefaultReadyTimeout is how long a Group waits for its services to become ready.
const DefaultReadyTimeout = 30 * time.Second

// NoReadyTimeout, as a Group's ReadyTimeout, makes it wait for its services to become ready as
// long as it takes, logging every 10 seconds which it waits for: a service process waits for NATS
// however long it is down.
const NoReadyTimeout time.Duration = -1

// Group runs several services in one process as one: on one NATS connection, behind one HTTP
// server, started together and stopped together, in order. A single service command (Run) and
// `troupe dev` both run their services in a Group.
//
// Set the fields, Add the services, then Run once.
type Group struct {
	// NC is the connection the services share: the group is ready only while it is connected,
	// and Run drains it once the services stopped. Required.
	NC *nats.Conn
	// Conns are further connections the services use (troupe dev's, one per service identity):
	// ready only while each is connected too, drained with NC.
	Conns []*nats.Conn
	// Listener is where the HTTP server listens; Run closes it. Required.
	Listener net.Listener
	// Mux holds the services' own handlers; Run adds /healthz, /readyz and /metrics to it.
	// Default: a new mux.
	Mux *http.ServeMux
	// Gatherer is what /metrics serves. Default: an empty registry.
	Gatherer prometheus.Gatherer
	// Log receives what goes wrong during shutdown. Default: none.
	Log *zerolog.Logger
	// ReadyTimeout bounds how long every service has to become ready, from when they start:
	// DefaultReadyTimeout when zero, no bound when negative (NoReadyTimeout).
	ReadyTimeout time.Duration
	// Prepare, if set, runs once HTTP serves (/healthz true, /readyz false) and before the services
	// start, for what waits on NATS: connecting, provisioning, building the services — it may Add
	// them. Its error stops the group as a service's would; if ctx ends while it runs, Run shuts
	// down and returns nil.
	Prepare func(ctx context.Context) error
	// OnReady, if set, is called once every service is ready, just after /readyz turned true.
	OnReady func()
	// OnShutdown, if set, is called when shutdown begins, just after /readyz turned false.
	OnShutdown func()

	services []member
}

// Receiver is a Service that says whether it receives events right now: an events.Subscriber, or
// a service that delegates to one. Its group is ready only while it does.
type Receiver interface {
	Receiving() bool
}

type member struct {
	name string
	svc  Service
}

// exit is a service's Start returning.
type exit struct {
	name string
	err  error
}

// Add adds a service to run under name, which errors and logs call it by. Add before Run, or in
// Prepare.
func (g *Group) Add(name string, s Service) { g.services = append(g.services, member{name, s}) }

// Run serves HTTP, starts every service, and blocks until ctx ends or a service stops on its own;
// then it shuts down in order: /readyz false, every service's context cancelled and its Start
// waited for, the connection drained, the HTTP server stopped.
//
// /readyz is true only while every service is ready, NC is connected, and every service that is a
// Receiver receives events (a subscriber whose consumer disappeared does not, until it created it
// again). A service whose Start
// returns before ctx ended stops the group; so does a service not ready within ReadyTimeout.
// Run returns nil after a shutdown ctx asked for, else an error naming the service: the one that
// failed, then any the others returned while stopping.
func (g *Group) Run(ctx context.Context) error {
	mux := cmp.Or(g.Mux, http.NewServeMux())
	var gatherer prometheus.Gatherer = prometheus.NewRegistry()
	if g.Gatherer != nil {
		gatherer = g.Gatherer
	}
	var ready atomic.Bool
	mux.Handle("/", Handler(gatherer, func() bool { return ready.Load() && g.connected() && g.receiving() }))
	httpSrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = httpSrv.Serve(g.Listener) }()

	var err error
	if g.Prepare != nil {
		err = g.Prepare(ctx)
	}

	// The services' context ends when the group stops them, not when ctx ends: readiness turns
	// false first, so that no request is routed to a process that no longer takes events.
	svcCtx, stopServices := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServices()
	exits := make(chan exit, len(g.services))
	var wg sync.WaitGroup
	if err == nil && ctx.Err() == nil {
		for _, m := range g.services {
			wg.Go(func() { exits <- exit{m.name, m.svc.Start(svcCtx)} })
		}
		err = g.waitReady(ctx, exits)
	}
	if err == nil && ctx.Err() == nil {
		ready.Store(true)
		if g.OnReady != nil {
			g.OnReady()
		}
		select {
		case <-ctx.Done():
		case e := <-exits:
			err = e.unasked()
		}
	}

	ready.Store(false)
	if g.OnShutdown != nil {
		g.OnShutdown()
	}
	stopServices()
	wg.Wait()
	close(exits)
	for e := range exits {
		if e.err != nil {
			err = errors.Join(err, fmt.Errorf("service %s: %w", e.name, e.err))
		}
	}
	g.drain()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	return err
}

// waitReady waits until every service is ready, and returns nil; or until ctx ends, and returns
// nil; or until a service stops or ReadyTimeout passes, and returns why.
func (g *Group) waitReady(ctx context.Context, exits <-chan exit) error {
	timeout := cmp.Or(g.ReadyTimeout, DefaultReadyTimeout)
	var expired <-chan time.Time
	if timeout > 0 {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		expired = timer.C
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for _, m := range g.services {
		for waiting := true; waiting; {
			select {
			case <-m.svc.Ready():
				waiting = false
			case e := <-exits:
				return e.unasked()
			case <-ctx.Done():
				return nil
			case <-tick.C:
				if g.Log != nil {
					g.Log.Info().Strs("services", g.notReady()).Bool("nats_connected", g.connected()).
						Msg("waiting for services to become ready")
				}
			case <-expired:
				return fmt.Errorf("service %s: %w within %s", strings.Join(g.notReady(), ", "), ErrNotReady, timeout)
			}
		}
	}
	return nil
}

// receiving reports whether every service that says whether it receives events (Receiver) does.
func (g *Group) receiving() bool {
	for _, m := range g.services {
		if r, ok := m.svc.(Receiver); ok && !r.Receiving() {
			return false
		}
	}
	return true
}

// notReady names the services not ready yet.
func (g *Group) notReady() []string {
	var late []string
	for _, m := range g.services {
		if !isClosed(m.svc.Ready()) {
			late = append(late, m.name)
		}
	}
	return late
}

// unasked is the error of a service that stopped while the group did not ask it to.
func (e exit) unasked() error {
	if e.err == nil {
		return fmt.Errorf("service %s: %w", e.name, ErrStopped)
	}
	return fmt.Errorf("service %s: %w", e.name, e.err)
}

// connected is whether NC and every one of Conns is connected.
func (g *Group) connected() bool {
	for _, nc := range append([]*nats.Conn{g.NC}, g.Conns...) {
		if !nc.IsConnected() {
			return false
		}
	}
	return true
}

// drain drains the connections and waits until they closed: what the services published is
// flushed before the process exits.
func (g *Group) drain() {
	var wg sync.WaitGroup
	for _, nc := range append(slices.Clone(g.Conns), g.NC) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.drainOne(nc)
		}()
	}
	wg.Wait()
}

func (g *Group) drainOne(nc *nats.Conn) {
	err := nc.Drain()
	if err != nil {
		if !errors.Is(err, nats.ErrConnectionClosed) && g.Log != nil {
			g.Log.Warn().Err(err).Msg("drain NATS connection")
		}
		return
	}
	// Drain only starts draining; the connection closes when it is done, within DrainTimeout.
	deadline := time.Now().Add(cmp.Or(nc.Opts.DrainTimeout, nats.DefaultDrainTimeout) + time.Second)
	for !nc.IsClosed() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
