package serve

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/troupe-dev/troupe/events"
)

// Provisioning modes, the values of --provision.
const (
	// ProvisionOff provisions nothing: the streams and buckets are someone else's.
	ProvisionOff = "false"
	// ProvisionRaise creates what is missing and raises replicas and lengthens retention of what
	// exists to the flags, never lowering: a restart with default flags changes nothing an
	// operator set up. The default.
	ProvisionRaise = "true"
	// ProvisionLower also lowers replicas and shortens retention to the flags: the explicit ask.
	ProvisionLower = "lower"
)

// ProvisionOptions are the flags that say what a command provisions at start: every service
// command and `troupe dev` bind them.
type ProvisionOptions struct {
	// Mode is ProvisionRaise, ProvisionLower or ProvisionOff.
	Mode string
	// Replicas of the streams and buckets (1 in dev, 3 on a cluster).
	Replicas int
	// MaxAge of the events and dead letters.
	MaxAge time.Duration
}

// BindFlags binds --provision, --replicas and --max-age (with TROUPE_* environment fallbacks).
func (o *ProvisionOptions) BindFlags(fs *pflag.FlagSet) {
	o.Mode = EnvOr("TROUPE_PROVISION", ProvisionRaise)
	fs.Var((*provisionMode)(&o.Mode), "provision", "at start: true creates missing streams and buckets and raises replicas and retention to --replicas and --max-age, never lowering them; lower also lowers and shortens them; false provisions nothing [TROUPE_PROVISION]")
	fs.Lookup("provision").NoOptDefVal = ProvisionRaise
	replicas, maxAge := 1, 30*24*time.Hour
	if v, err := parseEnvInt("TROUPE_REPLICAS"); err == nil && v > 0 {
		replicas = v
	}
	if v, err := time.ParseDuration(EnvOr("TROUPE_MAX_AGE", "")); err == nil && v > 0 {
		maxAge = v
	}
	fs.IntVar(&o.Replicas, "replicas", replicas, "replicas of the streams and buckets it provisions (3 on a cluster) [TROUPE_REPLICAS]")
	fs.DurationVar(&o.MaxAge, "max-age", maxAge, "how long the events stream keeps events (replay and rebuild reach that far back) [TROUPE_MAX_AGE]")
}

// Provision provisions names's streams and buckets as the options say (nothing for
// ProvisionOff), logs what it created, changed and kept against the flags, and returns it.
func (o *ProvisionOptions) Provision(ctx context.Context, js jetstream.JetStream, names events.Names, log *zerolog.Logger) ([]events.Provisioned, error) {
	if o.Mode == ProvisionOff {
		return nil, nil
	}
	out, err := events.Provision(ctx, js, events.ProvisionConfig{Names: names, Replicas: o.Replicas, MaxAge: o.MaxAge, Lower: o.Mode == ProvisionLower})
	for _, p := range out {
		ev := log.Debug()
		switch {
		case len(p.Kept) > 0:
			ev = log.Warn().Strs("kept", p.Kept).Str("hint", "--provision=lower lowers them")
		case p.Action != events.Unchanged:
			ev = log.Info()
		}
		ev.Str("kind", p.Kind).Str("name", p.Name).Str("action", p.Action).Strs("changed", p.Changed).Msg("provisioned " + p.Name)
	}
	if err != nil {
		return out, fmt.Errorf("provision: %w", err)
	}
	return out, nil
}

// provisionMode is --provision: true, lower or false (also 1/0, t/f as a bool flag takes).
type provisionMode string

func (m *provisionMode) String() string { return string(*m) }
func (m *provisionMode) Type() string   { return "mode" }
func (m *provisionMode) Set(s string) error {
	switch s {
	case "true", "1", "t", "T", "TRUE", "True":
		*m = ProvisionRaise
	case "false", "0", "f", "F", "FALSE", "False":
		*m = ProvisionOff
	case ProvisionLower:
		*m = ProvisionLower
	default:
		return fmt.Errorf("%q: want true, lower or false", s)
	}
	return nil
}

func parseEnvInt(name string) (int, error) {
	var v int
	_, err := fmt.Sscan(EnvOr(name, ""), &v)
	return v, err
}

// provisionOnly is --provision-only: it waits for NATS as a service does, provisions until that
// succeeds (a permission error too is retried: the Job's credentials may be mounted late), and
// returns; nil once done, the context's error when stopped first.
func provisionOnly(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, names events.Names, o *ProvisionOptions, server string, log zerolog.Logger) error {
	if o.Mode == ProvisionOff {
		return fmt.Errorf("--provision-only with --provision=false: nothing to do")
	}
	if !events.WaitConnected(ctx, nc, server, log) {
		return ctx.Err()
	}
	w := waiter{log: log, server: server}
	if !w.retry(ctx, "provision troupe's streams and buckets", func() error {
		_, err := o.Provision(ctx, js, names, &log)
		return err
	}) {
		return ctx.Err()
	}
	log.Info().Str("nats", nc.ConnectedUrl()).Msg("provisioned troupe's streams and buckets")
	return nil
}
