//go:build !lean

package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/trace"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/embedded"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/applier"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/services/applier/kube"
	"github.com/troupe-dev/troupe/services/health"
	"github.com/troupe-dev/troupe/services/history"
	"github.com/troupe-dev/troupe/services/history/ui"
	"github.com/troupe-dev/troupe/services/renderer"
	"github.com/troupe-dev/troupe/services/renderer/render"
	"github.com/troupe-dev/troupe/test/cluster"
)

type devOptions struct {
	natsListen string
	storeDir   string
	httpListen string
	provision  serve.ProvisionOptions
	natsLogs   bool
	kube       kube.Flags
	clusterBin string
	// lookupAllNamespaces is the renderer's --lookup-all-namespaces.
	lookupAllNamespaces bool
	// kustomizeRemoteHosts is the renderer's --kustomize-remote-hosts.
	kustomizeRemoteHosts []string
	// httpListenSet is whether --http-listen was given.
	httpListenSet bool
}

func (c *cli) devCmd() *cobra.Command {
	o := devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: devShort,
		Long:  devLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.httpListenSet = cmd.Flags().Changed("http-listen")
			return c.dev(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.natsListen, "nats-listen", envOr("TROUPE_NATS_LISTEN", "127.0.0.1:4222"), "host:port of the embedded NATS server; port -1 picks a free one [TROUPE_NATS_LISTEN]")
	f.StringVar(&o.storeDir, "store-dir", envOr("TROUPE_STORE_DIR", ".troupe"), "where the embedded NATS keeps its data [TROUPE_STORE_DIR]")
	f.StringVar(&o.httpListen, "http-listen", envOr("TROUPE_HTTP_LISTEN", "127.0.0.1:7070"), "host:port for /healthz, /readyz and /metrics; port 0 picks a free one [TROUPE_HTTP_LISTEN]")
	o.provision.BindFlags(f)
	f.BoolVar(&o.natsLogs, "nats-logs", false, "print the NATS server's own logs")
	o.kube.Bind(f, 200, 400)
	f.Lookup("kubeconfig").Usage = "deploy to this cluster instead of starting the local one [TROUPE_KUBECONFIG]"
	f.BoolVar(&o.lookupAllNamespaces, "lookup-all-namespaces", false, "a chart's lookup may read namespaced objects of every namespace, not only the release's")
	f.StringSliceVar(&o.kustomizeRemoteHosts, "kustomize-remote-hosts", nil, "a host (https; http://host:port for plain http) kustomizations may fetch remote bases, resources and files from (repeatable, or comma-separated); without one, none")
	f.StringVar(&o.clusterBin, "cluster-bin", envOr("TROUPE_CLUSTER_BIN", ""), "where the local cluster's binaries are (default: beside this executable, else bin/ beside go.work) [TROUPE_CLUSTER_BIN]")
	return cmd
}

func (c *cli) dev(ctx context.Context, o devOptions) error {
	log, err := c.logger()
	if err != nil {
		return err
	}
	if c.subjectsPrefix != "" && !o.httpListenSet {
		o.httpListen = "127.0.0.1:0" // beside the live troupe dev's
	}
	if err := history.CheckAPIListen(o.httpListen, ""); err != nil {
		return usagef("--http-listen %s: troupe dev serves the history API (every release's manifests) there, with no token: listen on loopback", o.httpListen)
	}
	httpLn, err := net.Listen("tcp", o.httpListen)
	if err != nil {
		return fmt.Errorf("--http-listen %s: %w", o.httpListen, err)
	}
	defer httpLn.Close() // on an error before the group serves on it; then the group closes it
	storeDir := filepath.Join(o.storeDir, "nats")
	var nc *nats.Conn
	natsURL, credsDir := "", ""
	// connect is the connection of one identity's service: its own, with the identity's
	// credentials, when dev runs the NATS server; the sandbox's one otherwise.
	connect := func(identity string) (*nats.Conn, error) { return nc, nil }
	creds := map[string]string{} // by identity, when dev runs the NATS server
	if c.subjectsPrefix != "" {
		// A sandbox lives beside the live system: on its NATS server and its cluster, as its
		// admin (the services' identities are the live system's).
		conn := c.conn
		if path := defaultCreds(conn, o.storeDir, access.Admin); path != "" {
			conn.CredsFile = path
		}
		if nc, err = conn.Connect("troupe-dev-" + c.subjectsPrefix); err != nil {
			return err
		}
		natsURL, storeDir = nc.ConnectedUrl(), "the server's"
		if o.kube.Kubeconfig == "" {
			o.kube.Kubeconfig = filepath.Join(o.storeDir, "kubeconfig")
			if _, err := os.Stat(o.kube.Kubeconfig); err != nil {
				nc.Close()
				return usagef("--subjects-prefix: a sandbox runs beside a running 'troupe dev' and deploys to its cluster (%s is missing); or pass --kubeconfig", o.kube.Kubeconfig)
			}
		}
	} else {
		// Auth on: one identity per service, the CLI and a viewer (events/access), their
		// credentials written afresh under <store-dir>/creds at every start.
		credsDir = filepath.Join(o.storeDir, "creds")
		auth, err := access.LoadOrCreate(credsDir)
		if err != nil {
			return err
		}
		if creds, err = auth.WriteCreds(credsDir, c.names); err != nil {
			return err
		}
		srv, err := embedded.Start(embedded.Options{Listen: o.natsListen, StoreDir: storeDir, Logs: o.natsLogs, Auth: auth})
		if err != nil {
			return err
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		natsURL = srv.ClientURL()
		connect = func(identity string) (*nats.Conn, error) {
			return events.ConnOptions{Server: natsURL, CredsFile: creds[identity]}.Connect("troupe-dev-"+identity,
				events.LogAsyncErrors(log.With().Str("identity", identity).Logger()))
		}
		if nc, err = connect(access.Admin); err != nil {
			return fmt.Errorf("connect to embedded NATS: %w", err)
		}
	}
	defer nc.Close()

	if o.kube.Kubeconfig == "" {
		c, err := c.startCluster(ctx, o)
		if err != nil {
			return err
		}
		defer c.Stop()
		o.kube.Kubeconfig = filepath.Join(o.storeDir, "kubeconfig")
	}
	kcfg, err := o.kube.Config()
	if err != nil {
		return err
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if _, err := o.provision.Provision(ctx, js, c.names, &log); err != nil {
		return err
	}
	conns := map[string]*nats.Conn{}
	defer func() {
		for _, conn := range conns {
			conn.Close() // the group drained them; on an error before it ran, closed here
		}
	}()
	serviceConn := func(identity string) (*nats.Conn, jetstream.JetStream, string, error) {
		conn, err := connect(identity)
		if err != nil {
			return nil, nil, "", err
		}
		if conn != nc {
			conns[identity] = conn
		}
		js, err := jetstream.New(conn)
		return conn, js, creds[identity], err
	}

	reg, metrics, err := serve.NewRegistry()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	tracers, stopTracing, err := c.devTracing(ctx, renderer.Name, applier.Name, health.Name, history.Name)
	if err != nil {
		return err
	}
	defer stopTracing() // once the group stopped the services: what they did is exported
	services, err := devServices(ctx, serviceConn, c.names, kcfg, render.Options{KustomizeRemoteHosts: o.kustomizeRemoteHosts, LookupAllNamespaces: o.lookupAllNamespaces}, log, metrics, mux, tracers)
	if err != nil {
		return err
	}
	// Ready only once every service receives events: a request published right after "ready" must
	// not be missed by a consumer that is not there yet. Stopped in order: not ready, services
	// drained, NATS drained, HTTP stopped; the deferred cluster and NATS server after.
	var others []*nats.Conn
	for _, conn := range conns {
		others = append(others, conn)
	}
	g := &serve.Group{NC: nc, Conns: others, Listener: httpLn, Mux: mux, Gatherer: reg, Log: &log,
		OnReady: func() {
			if c.subjectsPrefix != "" {
				fmt.Fprintf(c.stdout, "troupe dev: sandbox %s: stream %s on %s\n", c.subjectsPrefix, c.names.ReleaseSubjects(), natsURL)
			}
			fmt.Fprintf(c.stdout, "troupe dev: NATS JetStream at %s (data in %s)\n", natsURL, storeDir)
			if credsDir != "" {
				fmt.Fprintf(c.stdout, "troupe dev: NATS credentials, one per identity, in %s (the CLI uses cli.creds; admin.creds may do anything)\n", credsDir)
			}
			fmt.Fprintf(c.stdout, "troupe dev: deploying to %s (kubeconfig %s)\n", kcfg.Host, o.kube.Kubeconfig)
			fmt.Fprintf(c.stdout, "troupe dev: web UI at http://%s%s (health, metrics and /releases there too)\n", httpLn.Addr(), ui.Prefix)
			fmt.Fprintf(c.stdout, "troupe dev: services: %s\n", serviceNames(services))
			env := "TROUPE_SERVER=" + natsURL
			if credsDir != "" {
				abs, _ := filepath.Abs(filepath.Join(credsDir, access.CLI+".creds"))
				env += " TROUPE_CREDS=" + abs
			}
			fmt.Fprintf(c.stdout, "troupe dev: ready. In another shell: export %s; troupe list\n", env)
		},
		OnShutdown: func() { fmt.Fprintln(c.stdout, "troupe dev: shutting down") },
	}
	for _, name := range serviceNames(services) {
		g.Add(name, services[name])
	}
	err = g.Run(ctx)
	fmt.Fprintln(c.stdout, "troupe dev: stopped")
	return err
}

// startCluster starts the local cluster in <store-dir>/cluster and writes its admin kubeconfig to
// <store-dir>/kubeconfig. The cluster keeps its etcd data there across restarts, as the events
// stream keeps the releases that describe it. Its binaries are those of --cluster-bin, else those
// beside this executable (bin/ as `make build` lays it out), else bin/ beside the go.work above
// the working directory.
func (c *cli) startCluster(ctx context.Context, o devOptions) (*cluster.Cluster, error) {
	bin, err := cluster.ProcessBinDirs(o.clusterBin, "--cluster-bin or $TROUPE_CLUSTER_BIN").Find()
	if err != nil {
		return nil, fmt.Errorf("%w; or pass --kubeconfig to use another cluster", err)
	}
	dir, err := filepath.Abs(filepath.Join(o.storeDir, "cluster"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(c.stdout, "troupe dev: starting the local Kubernetes cluster in %s\n", dir)
	cl, err := cluster.Start(ctx, cluster.Options{Dir: dir, BinDir: bin, Durable: true,
		Log: func(format string, args ...any) { fmt.Fprintf(c.stdout, "troupe dev:   "+format+"\n", args...) }})
	if err != nil {
		return nil, fmt.Errorf("local cluster: %w (logs in %s; pass --kubeconfig to use another cluster)", err, dir)
	}
	if err := cl.WriteKubeconfig(filepath.Join(o.storeDir, "kubeconfig")); err != nil {
		cl.Stop()
		return nil, err
	}
	return cl, nil
}

// devServices returns the services `troupe dev` runs, by name: the four of troupe and
// catalog-check, the renderer with ropts. The history's queries are served on nc and its HTTP API on mux.
// Each of the four traces its work with the provider tracers returns for its name (nil: none).
func devServices(ctx context.Context, connect func(identity string) (*nats.Conn, jetstream.JetStream, string, error), names events.Names, kcfg *rest.Config, ropts render.Options, log zerolog.Logger, m *events.Metrics, mux *http.ServeMux,
	tracers func(service string) trace.TracerProvider) (map[string]serve.Service, error) {
	traced := func(service string) events.SubscriberConfig {
		return events.SubscriberConfig{TracerProvider: tracers(service)}
	}
	out := map[string]serve.Service{}
	logger := func(name string) *zerolog.Logger { l := log.With().Str("service", name).Logger(); return &l }

	if err := render.Discover(ctx, kcfg, &ropts); err != nil {
		log.Warn().Err(err).Msg("cluster not reachable: rendering with the built-in kind table until it answers")
	}
	_, js, creds, err := connect(access.Renderer)
	if err != nil {
		return nil, err
	}
	signer, err := access.BundleSigner(creds)
	if err != nil {
		return nil, err
	}
	r, err := renderer.New(ctx, js, renderer.Options{Names: names, Render: ropts, Logger: logger(renderer.Name), Metrics: m, Signer: signer,
		Subscriber: traced(renderer.Name)})
	if err != nil {
		return nil, err
	}
	out[renderer.Name] = r
	// Adoption on: a developer's own cluster, where `troupe release --adopt` takes over what
	// they made by hand.
	_, js, creds, err = connect(access.Applier)
	if err != nil {
		return nil, err
	}
	writers, err := access.BundleWriters(creds)
	if err != nil {
		return nil, err
	}
	a, err := applier.New(ctx, js, kcfg, applier.Options{Apply: apply.Options{AllowAdopt: true}, Names: names, Logger: logger(applier.Name), Metrics: m,
		BundleWriters: writers, Subscriber: traced(applier.Name)})
	if err != nil {
		return nil, err
	}
	out[applier.Name] = a
	_, js, _, err = connect(access.Health)
	if err != nil {
		return nil, err
	}
	h, err := health.New(ctx, js, kcfg, health.Options{Names: names, Logger: logger(health.Name), Metrics: m, Subscriber: traced(health.Name)})
	if err != nil {
		return nil, err
	}
	out[health.Name] = h
	nc, js, _, err := connect(access.History)
	if err != nil {
		return nil, err
	}
	hist, err := history.New(ctx, js, history.Options{Names: names, Logger: logger(history.Name), Metrics: m, Subscriber: traced(history.Name)})
	if err != nil {
		return nil, err
	}
	if err := hist.Serve(ctx, nc); err != nil {
		return nil, err
	}
	// The history API and the web UI answer only to loopback names: no token guards them here.
	api := history.LoopbackOnly(hist.HTTPHandler())
	mux.Handle("/releases", api)
	mux.Handle("/releases/", api)
	out[history.Name] = hist

	// The web UI reads as the viewer (events, dead letters, discovery) and publishes its buttons'
	// requests as the CLI does, with the cli identity's rights.
	vnc, vjs, _, err := connect(access.Viewer)
	if err != nil {
		return nil, err
	}
	_, cjs, _, err := connect(access.CLI)
	if err != nil {
		return nil, err
	}
	web, err := ui.New(ctx, ui.Options{Names: names, JS: vjs, NC: vnc, Query: hist.Answer, Requests: cjs, Logger: logger("ui")})
	if err != nil {
		return nil, err
	}
	mux.Handle(ui.Prefix, history.LoopbackOnly(web))
	mux.Handle("GET /{$}", http.RedirectHandler(ui.Prefix, http.StatusFound))

	// catalog-check reads every catalog event and dead-letters what does not conform, with the
	// reason, so a malformed event from any NATS client is visible in `troupe tail --dead-letters`.
	_, js, _, err = connect(access.CatalogCheck)
	if err != nil {
		return nil, err
	}
	check, err := events.NewSubscriber(js, events.SubscriberConfig{
		Service: "catalog-check", Names: names, Types: events.Types(), Concurrency: 8, Logger: &log, Metrics: m,
	}, func(ctx context.Context, e event.Event) error { return nil })
	if err != nil {
		return nil, err
	}
	out["catalog-check"] = check
	return out, nil
}

func serviceNames(m map[string]serve.Service) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
