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

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/history"
)

func main() {
	var keep int
	var rebuild bool
	var grace time.Duration
	var apiListen, tokenFile string
	serve.Main(serve.Command{
		Name: history.Name,
		Flags: func(fs *pflag.FlagSet) {
			fs.IntVar(&keep, "keep", 10, "revisions kept per release (older bundles are deleted from the object store)")
			fs.BoolVar(&rebuild, "rebuild", false, "rebuild every release's history from the events stream before serving")
			fs.DurationVar(&grace, "deadline-grace", history.DefaultGrace, "how long past a revision's deadline the deadline watchdog ends it (release.failed deadline_exceeded)")
			fs.StringVar(&apiListen, "api-listen", serve.EnvOr("TROUPE_API_LISTEN", history.DefaultAPIListen), "host:port of the HTTP API (/releases…); off loopback it needs --api-token-file [TROUPE_API_LISTEN]")
			fs.StringVar(&tokenFile, "api-token-file", serve.EnvOr("TROUPE_API_TOKEN_FILE", ""), "a file holding the bearer token the HTTP API requires [TROUPE_API_TOKEN_FILE]")
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
			if err := serveAPI(ctx, env, svc, apiListen, tokenFile); err != nil {
				return nil, err
			}
			return svc, nil
		},
	})
}

// serveAPI serves the HTTP API on its own listener (not beside /healthz and /metrics, which
// probes reach off the host): on loopback, or anywhere with a bearer token.
func serveAPI(ctx context.Context, env *serve.Env, svc *history.Service, addr, tokenFile string) error {
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
	srv := &http.Server{Handler: history.Guard(svc.HTTPHandler(), token), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.Log.Error().Err(err).Msg("history API stopped")
		}
	}()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	env.Log.Info().Str("api", ln.Addr().String()).Bool("token", token != "").Msg("history API listening")
	return nil
}
