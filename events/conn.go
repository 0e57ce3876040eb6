package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
)

// DefaultServer is the NATS URL used when none is given: where `troupe dev` listens.
const DefaultServer = "nats://127.0.0.1:4222"

// ConnOptions says how to reach a NATS deployment.
type ConnOptions struct {
	Server    string
	User      string
	Password  string
	Token     string
	CredsFile string
	NKeyFile  string
	TLSCert   string
	TLSKey    string
	TLSCA     string
	Timeout   time.Duration
}

// BindFlags adds --server, --user, --password, --token, --creds, --nkey, --tls-cert, --tls-key,
// --tls-ca and --connect-timeout to fs, each defaulting to its TROUPE_* environment variable
// (TROUPE_SERVER, TROUPE_USER, …).
func (o *ConnOptions) BindFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.Server, "server", env("TROUPE_SERVER", DefaultServer), "NATS server URL(s), comma-separated [TROUPE_SERVER]")
	fs.StringVar(&o.User, "user", env("TROUPE_USER", ""), "NATS user [TROUPE_USER]")
	fs.StringVar(&o.Password, "password", env("TROUPE_PASSWORD", ""), "NATS password [TROUPE_PASSWORD]")
	fs.StringVar(&o.Token, "token", env("TROUPE_TOKEN", ""), "NATS token [TROUPE_TOKEN]")
	fs.StringVar(&o.CredsFile, "creds", env("TROUPE_CREDS", ""), "NATS credentials file [TROUPE_CREDS]")
	fs.StringVar(&o.NKeyFile, "nkey", env("TROUPE_NKEY", ""), "NATS nkey seed file [TROUPE_NKEY]")
	fs.StringVar(&o.TLSCert, "tls-cert", env("TROUPE_TLS_CERT", ""), "TLS client certificate [TROUPE_TLS_CERT]")
	fs.StringVar(&o.TLSKey, "tls-key", env("TROUPE_TLS_KEY", ""), "TLS client key [TROUPE_TLS_KEY]")
	fs.StringVar(&o.TLSCA, "tls-ca", env("TROUPE_TLS_CA", ""), "TLS CA certificate to verify the server [TROUPE_TLS_CA]")
	fs.DurationVar(&o.Timeout, "connect-timeout", 5*time.Second, "how long one attempt to connect may take (a service tries again forever, a command gives up)")
}

// Connect connects to NATS as name (shown in the server's connection list), and fails if no
// server answers: for a command a user waits on. Once connected it reconnects forever. extra
// options are applied after the name and reconnect options, before the credentials.
func (o ConnOptions) Connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	return o.connect(name, extra...)
}

// ConnectRetrying connects to NATS as name like Connect, but for a service that must start
// whatever else is up: when no server answers it returns a connection that keeps trying in the
// background (every ReconnectWait, forever), not an error — check IsConnected, or wait with
// WaitConnected. Every disconnection and reconnection is logged to log, with the server.
func (o ConnOptions) ConnectRetrying(name string, log zerolog.Logger) (*nats.Conn, error) {
	return o.connect(name, nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info().Str("nats", nc.ConnectedUrl()).Msg("connected to NATS") }),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Warn().Err(err).Msg("disconnected from NATS: reconnecting")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info().Str("nats", nc.ConnectedUrl()).Msg("reconnected to NATS") }),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			log.Debug().Err(err).Msg("NATS reconnect attempt failed")
		}),
		LogAsyncErrors(log))
}

// LogAsyncErrors logs what the server reports on a connection apart from any call: a publish or
// subscription its permissions refuse ("Permissions Violation for Publish to …"), a slow
// consumer. Without it nats.go drops them, and a refused publish only shows as a timeout.
func LogAsyncErrors(log zerolog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		ev := log.Warn().Err(err)
		if sub != nil {
			ev = ev.Str("subscription", sub.Subject)
		}
		ev.Msg("NATS reported an error")
	})
}

// WaitConnected blocks until nc is connected, logging to log every 10 seconds that it waits and
// for which server; it returns false if ctx ended first or nc was closed.
func WaitConnected(ctx context.Context, nc *nats.Conn, server string, log zerolog.Logger) bool {
	status := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return false
		}
		log.Info().Str("server", server).Msg("waiting for NATS: not connected yet")
		select {
		case <-ctx.Done():
			return false
		case <-status:
		case <-tick.C:
		}
	}
	return true
}

func (o ConnOptions) connect(name string, extra ...nats.Option) (*nats.Conn, error) {
	server := o.Server
	if server == "" {
		server = DefaultServer
	}
	opts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1)}, extra...)
	if o.Timeout > 0 {
		opts = append(opts, nats.Timeout(o.Timeout))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
		if name := CredsIdentity(o.CredsFile); name != "" {
			opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(name)))
		}
	}
	if o.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey %s: %w", o.NKeyFile, err)
		}
		opts = append(opts, opt)
	}
	if o.TLSCert != "" || o.TLSKey != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	nc, err := nats.Connect(server, opts...)
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		with := "no credentials (--creds or TROUPE_CREDS; `troupe dev` writes them under <store-dir>/creds)"
		switch {
		case o.CredsFile != "":
			with = "the credentials " + o.CredsFile
		case o.User != "" || o.Token != "" || o.NKeyFile != "":
			with = "the user, token or nkey given"
		}
		return nil, fmt.Errorf("connect to NATS at %s: %w: %s", server, err, with)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w (is `troupe dev` running, or is --server/TROUPE_SERVER set?)", server, err)
	}
	return nc, nil
}

// CredsTag marks the user JWTs troupe signs for its identities (events/access).
const CredsTag = "troupe"

// InboxPrefix is where the replies of troupe's identity name come, and the only subjects it may
// subscribe to: a connection with its credentials sets nats.CustomInboxPrefix to it (Connect
// does, from the credentials file).
func InboxPrefix(identity string) string { return "_INBOX." + identity }

// CredsIdentity returns the identity a credentials file of troupe's is for (the name of its user
// JWT, tagged CredsTag), or "" for any other file.
func CredsIdentity(path string) string {
	_, _, uc, err := readCreds(path)
	if err != nil || !uc.Tags.Contains(CredsTag) || uc.Name == "" || strings.ContainsAny(uc.Name, ".*> \t") {
		return ""
	}
	return uc.Name
}

// readCreds reads a NATS credentials file: its bytes, its user JWT and that JWT's claims.
func readCreds(path string) ([]byte, string, *jwt.UserClaims, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", nil, err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, "", nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, token, uc, nil
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}

// Unavailable reports whether err is NATS or JetStream not answering for a moment: a server
// reconnecting, or a stream or bucket electing a leader after a node went down (a few seconds in
// a cluster). Trying the same call again later cures it.
func Unavailable(err error) bool {
	for _, e := range []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders, jetstream.ErrNoStreamResponse,
		nats.ErrDisconnected, nats.ErrConnectionReconnecting} {
		if errors.Is(err, e) {
			return true
		}
	}
	// A publish tried again while the first, same id, is still being committed in a cluster;
	// JetStream itself unavailable for a moment (503: a node of the cluster just killed).
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == duplicateMsgIDInProcess || apiErr.ErrorCode == jetStreamUnavailable)
}

// jetStreamUnavailable is JetStream's error 10008: "JetStream system temporarily unavailable" (a
// 503), which a chaos run's CLI met while a NATS node was down.
const jetStreamUnavailable jetstream.ErrorCode = 10008

// duplicateMsgIDInProcess is JetStream's error 10158: "duplicate message id is in process".
const duplicateMsgIDInProcess jetstream.ErrorCode = 10158

// Await calls f until it returns anything but an Unavailable error, for up to patience (and
// while ctx lasts), waiting 250ms, doubling up to 4s, between tries: for a command a user waits
// on, which should ride out a JetStream leader election rather than fail, and still give up.
func Await(ctx context.Context, patience time.Duration, f func() error) error {
	return retryWhile(ctx, patience, 4*time.Second, Unavailable, f)
}

// retryWhile calls f until it returns nil or an error retryable does not accept, for up to
// patience (and while ctx lasts), waiting 250ms, doubling up to most, between tries.
func retryWhile(ctx context.Context, patience, most time.Duration, retryable func(error) bool, f func() error) error {
	give := time.Now().Add(patience)
	for wait := 250 * time.Millisecond; ; wait = min(2*wait, most) {
		err := f()
		if err == nil || !retryable(err) || ctx.Err() != nil || time.Now().Add(wait).After(give) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
