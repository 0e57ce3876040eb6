// Command applier runs troupe's applier service against any NATS JetStream deployment and one
// Kubernetes cluster.
package main

import (
	"context"
	"os"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/serve"
	"github.com/troupe-dev/troupe/services/applier"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/services/applier/kube"
)

func main() {
	var (
		cluster           kube.Flags
		concurrency       int
		inflight          int
		leaseTTL          time.Duration
		allowNamespaces   []string
		denyClusterScoped bool
		allowAdopt        bool
		hookLogs          bool
		impersonate       string
		ackWait           time.Duration
		holder            string
	)
	serve.Main(serve.Command{
		Name: applier.Name,
		Flags: func(fs *pflag.FlagSet) {
			cluster.Bind(fs, 200, 400)
			fs.IntVar(&concurrency, "concurrency", 16, "releases applied at once by this replica")
			fs.IntVar(&inflight, "kube-requests", 64, "API requests in flight at once, all releases together")
			fs.DurationVar(&leaseTTL, "lease-ttl", 30*time.Second, "how long a crashed replica keeps a release locked")
			fs.StringSliceVar(&allowNamespaces, "allow-namespace", nil, "the only namespaces to touch (repeat; default: all)")
			fs.BoolVar(&denyClusterScoped, "deny-cluster-scoped", false, "refuse cluster-scoped objects (CRDs, ClusterRoles, …)")
			fs.StringVar(&impersonate, "impersonate-service-account", "", "act as this service account of each release's namespace")
			fs.BoolVar(&hookLogs, "hook-failure-logs", true, "put the last lines of a failed hook's container log in release.failed (off: only for charts that ask, with helm.sh/hook-output-log-policy: hook-failed)")
			fs.BoolVar(&allowAdopt, "allow-adopt", false, "honour a request's options.adopt (take over objects of another release or of none); off, such a request fails")
			fs.DurationVar(&ackWait, "ack-wait", 30*time.Second, "how long an event a dead replica was handling waits before another gets it")
			fs.StringVar(&holder, "holder", "", "this replica's name in leases (default applier/<host>/<pid>)")
		},
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			cfg, err := cluster.Config()
			if err != nil {
				return nil, err
			}
			writers, err := access.BundleWriters(env.Creds)
			if err != nil {
				return nil, err
			}
			if writers == nil {
				env.Log.Warn().Msg("not connected as troupe's applier identity (--creds): bundles are applied whoever wrote them, as NATS allows")
			}
			o := applier.Options{BundleWriters: writers,
				Apply: apply.Options{Concurrency: inflight, AllowNamespaces: allowNamespaces,
					DenyClusterScoped: denyClusterScoped, ImpersonateServiceAccount: impersonate, AllowAdopt: allowAdopt, NoHookLogs: !hookLogs},
				Concurrency: concurrency, LeaseTTL: leaseTTL, Holder: holder, Names: env.Names, Logger: env.Log, Metrics: env.Metrics,
				Checkpoint: testHook(env),
			}
			o.Subscriber.AckWait, o.Subscriber.TracerProvider = ackWait, env.TracerProvider
			return applier.New(ctx, env.JS, cfg, o)
		},
	})
}

// testHook is for fault tests only, never for a deployment: TROUPE_TEST_KILL_AT=<point> makes the
// process SIGKILL itself when a revision reaches that point (applier.Point*), and
// TROUPE_TEST_STALL_AT=<point> makes the handler block there forever (until the process is
// killed), holding the release's lease. Neither set: nil, no hook.
func testHook(env *serve.Env) func(point string) {
	kill, stall := os.Getenv("TROUPE_TEST_KILL_AT"), os.Getenv("TROUPE_TEST_STALL_AT")
	if kill == "" && stall == "" {
		return nil
	}
	return func(point string) {
		switch point {
		case kill:
			env.Log.Warn().Str("point", point).Msg("TROUPE_TEST_KILL_AT: killing myself at " + point)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		case stall:
			env.Log.Warn().Str("point", point).Msg("TROUPE_TEST_STALL_AT: stalling at " + point)
			select {}
		}
	}
}
