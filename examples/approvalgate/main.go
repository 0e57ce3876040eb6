package main

import (
	"context"
	"strings"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
)

func main() {
	var o Options
	serve.Main(serve.Command{
		Name: "gate-" + DefaultName, // the gate's service name, as the SDK names it (with the default --name)
		Flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.Name, "name", serve.EnvOr("TROUPE_GATE_NAME", DefaultName), "the gate's name: what releases' options.gates, namespaces' policies and `troupe approve --gate` name; its NATS identity is gate-<name> [TROUPE_GATE_NAME]")
			fs.StringSliceVar(&o.Approvers, "approvers", splitList(serve.EnvOr("TROUPE_APPROVERS", "")), "the only names a decision may be by (troupe approve --by), comma-separated (default: anyone with the approver identity) [TROUPE_APPROVERS]")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			o.Names, o.Logger = env.Names, env.Log
			o.Subscriber = events.SubscriberConfig{Metrics: env.Metrics, TracerProvider: env.TracerProvider}
			return New(ctx, env.JS, o)
		},
	})
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
