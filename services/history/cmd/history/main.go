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
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/history"
	"github.com/troupe-dev/troupe/services/history/ui"
)

func main() {
	var keep int
	var rebuild bool
	var grace time.Duration
	var apiListen, tokenFile, uiCreds string
	var webUI bool
	serve.Main(serve.Command{
		Name: history.Name,
		Flags: func(fs *pflag.FlagSet) {
			fs.IntVar(&keep, "keep", 10, "revisions kept per release (older bundles are deleted from the object store)")
			fs.BoolVar(&rebuild, "rebuild", false, "rebuild every release's history from the events stream before serving")
			fs.DurationVar(&grace, "deadline-grace", history.DefaultGrace, "how long past a revision's deadline the deadline watchdog ends it (release.failed deadline_exceeded)")
			fs.StringVar(&apiListen, "api-listen", serve.EnvOr("TROUPE_API_LISTEN", history.DefaultAPIListen), "host:port of the HTTP API (/releases…); off loopback it needs --api-token-file [TROUPE_API_LISTEN]")
			fs.StringVar(&tokenFile, "api-token-file", serve.EnvOr("TROUPE_API_TOKEN_FILE", ""), "a file holding the bearer token the HTTP API requires [TROUPE_API_TOKEN_FILE]")
			fs.BoolVar(&webUI, "ui", true, "serve the web UI at /ui/ on the HTTP API's address, under its rules (loopback, or the token)")
			fs.StringVar(&uiCreds, "ui-creds", serve.EnvOr("TROUPE_UI_CREDS", ""), "NATS credentials with the cli identity's rights, for the web UI's rollback, uninstall and re-drive buttons; without them the UI is read-only [TROUPE_UI_CREDS]")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			svc, err := history.New(ctx, env.JS, history.Options{Keep: keep, Grace: grace, Names: env.Names, Logger: env.Log, Metrics: env.Metrics,
				Subscriber: events.SubscriberConfig{TracerProvider: env.TracerProvider}})
			if err != nil {
				return nil, err
			}
			if rebuild {
				n, err := svc.Rebuild(ctx)
				if err != nil {
					return nil, fmt.Errorf("--rebuild: %w", err)
				}
				env.Log.Info().Int("releases", n).Msg("rebuilt from the stream")
			}
			if err := svc.Serve(ctx, env.NC); err != nil {
				return nil, err
			}
			h := svc.HTTPHandler()
			if webUI {
				if h, err = withUI(ctx, env, svc, h, uiCreds); err != nil {
					return nil, err
				}
			}
			if err := serveAPI(ctx, env, h, apiListen, tokenFile); err != nil {
				return nil, err
			}
			return svc, nil
		},
	})
}

// serveAPI serves the HTTP API on its own listener (not beside /healthz and /metrics, which
// probes reach off the host): on loopback, or anywhere with a bearer token.
func serveAPI(ctx context.Context, env *serve.Env, h http.Handler, addr, tokenFile string) error {
	var token string
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return fmt.Errorf("--api-token-file: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("--api-token-file %s is empty", tokenFile)
		}
	}
	if err := history.CheckAPIListen(addr, token); err != nil {
		return fmt.Errorf("--api-listen: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--api-listen: %w", err)
	}
	srv := &http.Server{Handler: history.Guard(h, token), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.Log.Error().Err(err).Msg("history API stopped")
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	env.Log.Info().Str("api", ln.Addr().String()).Bool("token", token != "").Msg("history API listening")
	return nil
}

// withUI adds the web UI to the HTTP API api. It reads with the history's own connection; its
// buttons publish over a connection with credsFile (the cli identity's rights), and without one
// it is read-only.
func withUI(ctx context.Context, env *serve.Env, svc *history.Service, api http.Handler, credsFile string) (http.Handler, error) {
	o := ui.Options{Names: env.Names, JS: env.JS, NC: env.NC, Query: svc.Answer, Logger: env.Log,
		ReadOnlyWhy: "the history service was given no --ui-creds (credentials with the cli identity's rights)"}
	if credsFile != "" {
		conn := env.Conn
		conn.CredsFile, conn.NKeyFile, conn.User, conn.Password, conn.Token = credsFile, "", "", "", ""
		nc, err := conn.ConnectRetrying("troupe-history-ui", *env.Log)
		if err != nil {
			return nil, fmt.Errorf("--ui-creds: %w", err)
		}
		go func() { <-ctx.Done(); _ = nc.Drain() }()
		if o.Requests, err = jetstream.New(nc); err != nil {
			return nil, fmt.Errorf("--ui-creds: %w", err)
		}
	}
	web, err := ui.New(ctx, o)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", api)
	mux.Handle(ui.Prefix, web)
	mux.Handle("GET /{$}", http.RedirectHandler(ui.Prefix, http.StatusFound))
	return mux, nil
}
