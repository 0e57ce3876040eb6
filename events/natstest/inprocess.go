package natstest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// InProcessCluster starts n embedded servers with JetStream, routed to each other as one cluster, in this
// test process (each with its own store in t.TempDir()), and waits until JetStream has a meta
// leader, so R3 streams and buckets can be made at once. It returns the servers and a client URL
// list naming them all. They shut down when the test ends.
//
// In-process servers are enough to see what a replicated stream answers (its error codes, its
// leader's view); killing a node as a process is the chaos harness's job.
func InProcessCluster(t testing.TB, n int) ([]*server.Server, string) {
	t.Helper()
	routes := make([]*url.URL, n)
	ports := freePorts(t, n) // held open together: n distinct ports
	for i := range n {
		routes[i] = &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", ports[i])}
	}
	servers := make([]*server.Server, n)
	urls := ""
	for i := range n {
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("troupe-test-%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "troupe-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		servers[i] = s
	}
	for i, s := range servers {
		if !s.ReadyForConnections(30 * time.Second) {
			t.Fatalf("cluster node %d not ready", i+1)
		}
		if urls != "" {
			urls += ","
		}
		urls += s.ClientURL()
	}
	// JetStream answers once the nodes elected a meta leader.
	nc, err := nats.Connect(urls)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("cluster: no JetStream meta leader: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return servers, urls
}

// ConnectURL connects to urls (a comma-separated list); the connection closes when the test ends.
func ConnectURL(t testing.TB, urls string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(urls)
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
