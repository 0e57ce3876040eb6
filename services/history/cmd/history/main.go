// Command history runs troupe's history service against any NATS JetStream deployment: it keeps
// every release's revisions, drives rollbacks, and answers queries over NATS
// (troupe.history.<query>) and HTTP (/releases…).
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/history"
)

func main() {
	var keep int
	var rebuild bool
	var grace time.Duration
	serve.Main(serve.Command{
		Name: history.Name,
		Flags: func(fs *pflag.FlagSet) {
			fs.IntVar(&keep, "keep", 10, "revisions kept per release (older bundles are deleted from the object store)")
			fs.BoolVar(&rebuild, "rebuild", false, "rebuild every release's history from the events stream before serving")
			fs.DurationVar(&grace, "deadline-grace", history.DefaultGrace, "how long past a revision's deadline the deadline watchdog ends it (release.failed deadline_exceeded)")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			svc, err := history.New(ctx, env.JS, history.Options{Keep: keep, Grace: grace, Names: env.Names, Logger: env.Log, Metrics: env.Metrics})
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
			env.Mux.Handle("/releases", svc.HTTPHandler())
			env.Mux.Handle("/releases/", svc.HTTPHandler())
			return svc, nil
		},
	})
}
