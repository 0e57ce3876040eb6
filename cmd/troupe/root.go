package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/tracing"
)

// cli holds what every command shares.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	conn           events.ConnOptions
	logLevel       string
	// subjectsPrefix is the sandbox the command works in; empty: live. names are its subjects,
	// streams and buckets, set from it before any command runs.
	subjectsPrefix string
	names          events.Names
	// refuse ends the command's context with the reason when NATS refuses one of its publishes or
	// subscriptions: the server only says so asynchronously, and the call itself would wait out
	// its timeout (and be tried again, as if NATS were busy).
	refuse  context.CancelCauseFunc
	refused atomic.Pointer[refusedError]
	// otlp is where the requests' traces go (--otlp-endpoint): the CLI's root span of a request
	// (traced), troupe dev's services' spans.
	otlp tracing.Options
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) (*cobra.Command, *cli) {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "troupe",
		Short: "Deploy to Kubernetes by choreography: services reacting to CloudEvents on NATS JetStream",
		Long: `troupe deploys Helm charts, Kustomize overlays and plain manifests to Kubernetes through
independent services that react to CloudEvents on NATS JetStream.

Start a local environment with 'troupe dev', then publish and watch events from another shell.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })
	c.conn.BindFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&c.subjectsPrefix, "subjects-prefix", envOr("TROUPE_SUBJECTS_PREFIX", ""), "work in this sandbox (see 'troupe replay --to'), not on the live subjects [TROUPE_SUBJECTS_PREFIX]")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		names, err := events.NewNames(c.subjectsPrefix)
		if err != nil {
			return usageError{err}
		}
		c.names = names
		ctx, cancel := context.WithCancelCause(cmd.Context())
		cmd.SetContext(ctx)
		c.refuse = cancel
		return nil
	}
	root.PersistentFlags().StringVar(&c.logLevel, "log-level", envOr("TROUPE_LOG_LEVEL", "info"), "log level: debug, info, warn, error [TROUPE_LOG_LEVEL]")
	c.otlp.BindFlags(root.PersistentFlags())
	root.AddCommand(c.devCmd(), c.publishCmd(), c.tailCmd(), c.releaseCmd(), c.adoptCmd(), c.natsConfigCmd(), c.installCmd(), c.versionCmd(), c.statusCmd(), c.listCmd(), c.historyCmd(),
		c.getCmd(), c.diffCmd(), c.rollbackCmd(), c.uninstallCmd(), c.redriveCmd(), c.traceCmd(), c.graphCmd(), c.replayCmd(), c.identitiesCmd(),
		c.gateCmd(), c.approveCmd(), c.rejectCmd())
	return root, c
}

// logger returns a JSON logger on stderr at the chosen level.
func (c *cli) logger() (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(c.logLevel))
	if err != nil {
		return zerolog.Nop(), usagef("--log-level %q: %w", c.logLevel, err)
	}
	return zerolog.New(c.stderr).Level(lvl).With().Timestamp().Logger(), nil
}

// connect connects to NATS and JetStream.
func (c *cli) connect(name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := c.natsConn(name)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// connectAs is connect with natsConnAs's credentials.
func (c *cli) connectAs(name, identity string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := c.natsConnAs(name, identity)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// natsConn connects to NATS as name, with the credentials given, else those `troupe dev` wrote
// for the CLI (defaultCreds). A permission the server refuses ends the command with a
// refusedError.
func (c *cli) natsConn(name string) (*nats.Conn, error) { return c.natsConnAs(name, access.CLI) }

// natsConnAs is natsConn with, by default, the credentials `troupe dev` wrote for identity: the
// admin's for what only an operator does (the gate policy), the approver's to ask a gate.
func (c *cli) natsConnAs(name, identity string) (*nats.Conn, error) {
	o := c.conn
	if path := defaultCreds(o, storeDir(), identity); path != "" {
		o.CredsFile = path
	}
	return o.Connect(name, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			r := refusedError{err: err, creds: o.CredsFile}
			c.refused.CompareAndSwap(nil, &r)
			if c.refuse != nil {
				c.refuse(r)
			}
		}
	}))
}

// storeDir is where `troupe dev` keeps its data and credentials, as its --store-dir says by
// default: $TROUPE_STORE_DIR, else .troupe.
func storeDir() string { return envOr("TROUPE_STORE_DIR", ".troupe") }

// defaultCreds returns <store>/creds/<identity>.creds, the credentials `troupe dev` wrote (the
// CLI's store is $TROUPE_STORE_DIR, else .troupe, as troupe dev's --store-dir), when o says no
// credentials of its own and that file exists; else "".
func defaultCreds(o events.ConnOptions, store, identity string) string {
	if o.CredsFile != "" || o.User != "" || o.Token != "" || o.NKeyFile != "" {
		return ""
	}
	path := filepath.Join(store, "creds", identity+".creds")
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}

// refusedError is NATS refusing what a command asked: its identity may not publish or subscribe
// there.
type refusedError struct {
	err   error
	creds string
}

func (r refusedError) Error() string {
	who := "these credentials"
	if r.creds != "" {
		who = r.creds
	}
	return fmt.Sprintf("%v: %s may not do this (another identity's credentials, e.g. admin.creds, may: --creds or TROUPE_CREDS)", r.err, who)
}

func (r refusedError) Unwrap() error { return r.err }

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
