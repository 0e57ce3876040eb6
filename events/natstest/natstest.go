// Package natstest starts a real embedded nats-server with JetStream for a test, provisioned
// with troupe's streams and buckets, and stops it when the test ends.
package natstest

import (
	"context"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/embedded"
)

// Server starts an embedded server on a free port with its store in t.TempDir(), without
// provisioning anything.
func Server(t testing.TB) *server.Server {
	t.Helper()
	s, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// Connect connects to s; the connection closes when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Start starts a server, provisions troupe's streams and buckets on it, and connects.
func Start(t testing.TB) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := Server(t)
	nc, js := Connect(t, s)
	if _, err := events.Provision(t.Context(), js, events.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	return s, nc, js
}

// Service is a troupe service: started once, ready when it receives events, Start returning
// once ctx ended and it drained.
type Service interface {
	Start(ctx context.Context) error
	Ready() <-chan struct{}
}

// Run starts svc and waits until it is ready (the test fails if Start returns first). The
// returned stop ends it and waits for Start to return, which must return nil; it also runs when
// the test ends.
func Run(t testing.TB, svc Service) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Start(ctx) }()
	select {
	case <-svc.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("service stopped before it was ready: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("service stopped with an error: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
