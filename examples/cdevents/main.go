package main

import (
	"context"
	"errors"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events/serve"
)

func main() {
	var (
		o              Options
		reconciliation bool
	)
	serve.Main(serve.Command{
		Name: DefaultName,
		Flags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.Sink, "sink", serve.EnvOr("TROUPE_CDEVENTS_SINK", ""), "CloudEvents HTTP sink to POST the CDEvents to (required) [TROUPE_CDEVENTS_SINK]")
			fs.StringVar(&o.Name, "name", DefaultName, "durable consumer (and service) name: run two bridges to two sinks under two names")
			fs.StringVar(&o.Source, "source", DefaultSource, "CDEvents context source (a URI reference)")
			fs.StringVar(&o.Spec, "spec", Spec05, "CDEvents spec version: 0.5 (v0.5.1), or 0.4 (v0.4.1) for a consumer on an older SDK, such as Flux's CDEvents Receiver")
			fs.BoolVar(&o.Structured, "structured", false, "send structured-mode CloudEvents (default binary mode)")
			fs.BoolVar(&reconciliation, "reconciliation", true, "also send the reconciliation started/finished custom events (false: the service events only)")
			fs.IntVar(&o.MaxDeliver, "max-deliver", DefaultMaxDeliver, "tries of one troupe event before it is dead-lettered")
			fs.DurationVar(&o.Timeout, "timeout", DefaultTimeout, "timeout of one POST to the sink")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			if o.Sink == "" {
				return nil, errors.New("--sink is required")
			}
			o.NoReconciliation = !reconciliation
			o.Names, o.Logger, o.Metrics = env.Names, env.Log, env.Metrics
			return New(ctx, env.JS, o)
		},
	})
}
