package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
)

func main() {
	var (
		o       Options
		envErr  error
		digests = serve.EnvOr("TROUPE_POLICY_REQUIRE_DIGEST", "true")
	)
	serve.Main(serve.Command{
		Name: "gate-" + DefaultName, // the gate's service name, as the SDK names it (with the default --name)
		Flags: func(fs *pflag.FlagSet) {
			requireDigest, err := strconv.ParseBool(digests)
			if err != nil {
				envErr = fmt.Errorf("TROUPE_POLICY_REQUIRE_DIGEST: %q is not true or false", digests)
			}
			fs.StringVar(&o.Name, "name", serve.EnvOr("TROUPE_GATE_NAME", DefaultName), "the gate's name: what releases' options.gates and namespaces' policies name; its NATS identity is gate-<name> [TROUPE_GATE_NAME]")
			fs.BoolVar(&o.Rules.RequireDigest, "require-digest", requireDigest, "image-digest: every image must be pinned by a sha256 digest (false: only the tag latest, or no tag, is refused) [TROUPE_POLICY_REQUIRE_DIGEST]")
			fs.StringSliceVar(&o.Rules.ForbidLoadBalancerIn, "forbid-loadbalancer-in", splitList(serve.EnvOr("TROUPE_POLICY_FORBID_LOADBALANCER_IN", "")),
				`no-loadbalancer: namespaces, comma-separated, where a Service may not be of type LoadBalancer ("*": every namespace) [TROUPE_POLICY_FORBID_LOADBALANCER_IN]`)
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			if envErr != nil {
				return nil, envErr
			}
			o.Rules.ForbidLoadBalancerIn = splitList(strings.Join(o.Rules.ForbidLoadBalancerIn, ",")) // "prod, staging"
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
