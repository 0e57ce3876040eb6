package main

import (
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
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
}

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
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
		return nil
	}
	root.PersistentFlags().StringVar(&c.logLevel, "log-level", envOr("TROUPE_LOG_LEVEL", "info"), "log level: debug, info, warn, error [TROUPE_LOG_LEVEL]")
	root.AddCommand(c.devCmd(), c.publishCmd(), c.tailCmd(), c.releaseCmd(), c.versionCmd(), c.statusCmd(), c.listCmd(), c.historyCmd(),
		c.getCmd(), c.diffCmd(), c.rollbackCmd(), c.uninstallCmd(), c.traceCmd(), c.graphCmd(), c.replayCmd())
	return root
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
	nc, err := c.conn.Connect(name)
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

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
