// Package embedded runs a nats-server with JetStream inside the process, for `troupe dev` and for
// tests: the real server, not a stand-in.
package embedded

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/troupe-dev/troupe/events/access"
)

// Options configure the embedded server.
type Options struct {
	// Listen is host:port for clients; port -1 picks a free one. Default 127.0.0.1:-1.
	Listen string
	// StoreDir is where JetStream keeps its files. Required.
	StoreDir string
	// Name is the server's name. Default "troupe-dev".
	Name string
	// Logs makes the server log to stderr.
	Logs bool
	// Auth, if set, turns authentication on: the server trusts only the users Auth signs, each
	// with its identity's permissions (access.Table). A store kept without auth is moved to
	// Auth's account the first time.
	Auth *access.Authority
}

// Start starts the server and waits until it accepts connections. Shut it down with
// Shutdown and WaitForShutdown.
func Start(o Options) (*server.Server, error) {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:-1"
	}
	if o.Name == "" {
		o.Name = "troupe-dev"
	}
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats: no store dir")
	}
	host, portS, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen address %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen port %q: %w", portS, err)
	}
	if port > 0 {
		// The server only logs a failed listen and then never becomes ready: say it at once.
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		ln.Close()
	}
	opts := &server.Options{
		ServerName: o.Name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      !o.Logs,
	}
	if o.Auth != nil {
		if err := o.Auth.AdoptStore(o.StoreDir); err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		if err := trust(opts, o.Auth); err != nil {
			return nil, fmt.Errorf("embedded nats: auth: %w", err)
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	if o.Logs {
		s.ConfigureLogger()
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 10s on %s (is the port taken?)", o.Listen)
	}
	return s, nil
}

// trust turns o into a server that trusts only a's users: operator mode, its accounts preloaded.
func trust(o *server.Options, a *access.Authority) error {
	oc, err := jwt.DecodeOperatorClaims(a.Operator())
	if err != nil {
		return err
	}
	resolver := &server.MemAccResolver{}
	for _, j := range a.Accounts() {
		ac, err := jwt.DecodeAccountClaims(j)
		if err != nil {
			return err
		}
		if err := resolver.Store(ac.Subject, j); err != nil {
			return err
		}
	}
	o.MaxControlLine = max(o.MaxControlLine, access.MaxControlLine)
	o.TrustedOperators = []*jwt.OperatorClaims{oc}
	o.AccountResolver = resolver
	o.SystemAccount = a.SystemAccount()
	return nil
}
