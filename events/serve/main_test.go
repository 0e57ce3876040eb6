package serve_test

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/events/serve"
)

type service struct{ ready chan struct{} }

func (s *service) Start(ctx context.Context) error { close(s.ready); <-ctx.Done(); return nil }
func (s *service) Ready() <-chan struct{}          { return s.ready }

// TestRun: a command connects, provisions, serves /readyz once its service is ready and its own
// handlers beside, takes its own flags, and returns when ctx ends.
func TestRun(t *testing.T) {
	srv := natstest.Server(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	var greeting string
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, serve.Command{
			Name:  "echo",
			Flags: func(fs *pflag.FlagSet) { fs.StringVar(&greeting, "greeting", "hi", "what to say") },
			New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
				env.Mux.HandleFunc("/greeting", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(greeting)) })
				return &service{ready: make(chan struct{})}, nil
			},
		}, []string{"--server", srv.ClientURL(), "--http-listen", addr, "--greeting", "hello", "--log-level", "warn"})
	}()
	get := func(path string) (int, string) {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		var b [64]byte
		n, _ := res.Body.Read(b[:])
		return res.StatusCode, string(b[:n])
	}
	require.Eventually(t, func() bool { code, _ := get("/readyz"); return code == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
	code, body := get("/greeting")
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "hello", body)
	code, _ = get("/metrics")
	assert.Equal(t, http.StatusOK, code)

	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
}

// TestRunBadFlag: an unknown flag or level is an error, before anything connects.
func TestRunBadFlag(t *testing.T) {
	err := serve.Run(t.Context(), serve.Command{Name: "echo"}, []string{"--log-level", "loud"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--log-level")
}

// TestRunServiceFails: a service that cannot start ends Run with its error, named.
func TestRunServiceFails(t *testing.T) {
	srv := natstest.Server(t)
	boom := errors.New("boom")
	err := serve.Run(t.Context(), serve.Command{
		Name: "echo",
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			return newFake(func(context.Context, func()) error { return boom }), nil
		},
	}, []string{"--server", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--log-level", "warn"})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, "service echo: boom", err.Error())
}

// A subscriber is a service serve.Main can run as it is.
var _ serve.Service = (*events.Subscriber)(nil)

// TestRunStartsBeforeNATS: a service started while its NATS server is not there yet waits for it:
// /healthz true and /readyz false meanwhile, then ready once the server is up, provisioned and
// the consumer receives, and it handles an event.
func TestRunStartsBeforeNATS(t *testing.T) {
	nats := natstest.Plan(t, 1) // ports picked, no server yet
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	handled := make(chan string, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, serve.Command{
			Name: "echo",
			New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
				return events.NewSubscriber(env.JS, events.SubscriberConfig{Service: "echo", Types: []string{events.TypeRequested}, Names: env.Names},
					func(ctx context.Context, e event.Event) error { handled <- e.ID(); return nil })
			},
		}, []string{"--server", nats.URLs(), "--http-listen", addr, "--log-level", "warn"})
	}()
	status := func(path string) int {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0
		}
		res.Body.Close()
		return res.StatusCode
	}
	require.Eventually(t, func() bool {
		select {
		case err := <-done:
			t.Fatalf("Run returned without NATS: %v", err)
		default:
		}
		return status("/healthz") == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "/healthz while NATS is not there")
	assert.Equal(t, http.StatusServiceUnavailable, status("/readyz"), "/readyz while NATS is not there")

	nats.StartAll()
	require.Eventually(t, func() bool { return status("/readyz") == http.StatusOK }, time.Minute, 20*time.Millisecond)
	_, js := nats.Connect(t)
	e, err := events.NewEvent("troupe/test", events.TypeRequested, events.Release{Namespace: "test", Name: "app"},
		events.Requested{Source: events.Source{Helm: &events.HelmSource{Path: "charts/app"}}})
	require.NoError(t, err)
	_, err = events.NewPublisher(js, events.Names{}).Publish(t.Context(), e)
	require.NoError(t, err)
	assert.Equal(t, e.ID(), <-handled)

	cancel()
	assert.NoError(t, <-done)
}

// A subscriber says whether it receives events: its group is not ready while it does not.
var _ serve.Receiver = (*events.Subscriber)(nil)

// TestProvisionOnly: --provision-only waits for NATS, provisions the streams and buckets at
// --replicas, and returns nil without starting the service or serving.
func TestProvisionOnly(t *testing.T) {
	nats := natstest.Plan(t, 1) // no server yet: the Job may start before NATS
	done := make(chan error, 1)
	started := false
	go func() {
		done <- serve.Run(t.Context(), serve.Command{
			Name: "echo",
			New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
				started = true
				return &service{ready: make(chan struct{})}, nil
			},
		}, []string{"--server", nats.URLs(), "--provision-only", "--max-age", "48h", "--log-level", "warn"})
	}()
	select {
	case err := <-done:
		t.Fatalf("returned before NATS was there: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	nats.StartAll()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(time.Minute):
		t.Fatal("--provision-only did not return once NATS was there")
	}
	assert.False(t, started, "the service is not started")
	_, js := nats.Connect(t)
	s, err := js.Stream(t.Context(), events.Names{}.Stream())
	require.NoError(t, err, "the events stream is provisioned")
	assert.Equal(t, 48*time.Hour, s.CachedInfo().Config.MaxAge)

	err = serve.Run(t.Context(), serve.Command{Name: "echo"}, []string{"--server", nats.URLs(), "--provision-only", "--provision=false"})
	assert.ErrorContains(t, err, "nothing to do")
}

// TestCPUProfile: with $TROUPE_CPU_PROFILE a service writes a CPU profile of its run, complete
// once it stopped.
func TestCPUProfile(t *testing.T) {
	srv := natstest.Server(t)
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	t.Setenv("TROUPE_CPU_PROFILE", path)
	ctx, cancel := context.WithCancel(t.Context())
	err := serve.Run(ctx, serve.Command{
		Name: "echo",
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			return newFake(func(ctx context.Context, ready func()) error {
				ready()
				cancel()
				<-ctx.Done()
				return nil
			}), nil
		},
	}, []string{"--server", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--log-level", "warn"})
	require.NoError(t, err)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f) // a profile is gzipped protobuf
	require.NoError(t, err)
	b, err := io.ReadAll(gz)
	require.NoError(t, err, "complete: written to its end when the service stopped")
	assert.NotEmpty(t, b)
}

// TestHeapProfile: with $TROUPE_HEAP_PROFILE a running service writes its heap profile, again
// when its heap grew.
func TestHeapProfile(t *testing.T) {
	srv := natstest.Server(t)
	path := filepath.Join(t.TempDir(), "heap.pprof")
	t.Setenv("TROUPE_HEAP_PROFILE", path)
	ctx, cancel := context.WithCancel(t.Context())
	var held [][]byte
	err := serve.Run(ctx, serve.Command{
		Name: "echo",
		New: func(ctx context.Context, env *serve.Env) (serve.Service, error) {
			return newFake(func(ctx context.Context, ready func()) error {
				ready()
				defer cancel()
				first := waitForFile(t, path, time.Time{})
				held = append(held, make([]byte, 64<<20)) // the heap grows far past a tenth
				runtime.GC()                              // and the live heap says so now
				second := waitForFile(t, path, first)
				// Not rewritten while the heap stays as it is (written on growth, not every tick).
				time.Sleep(3 * time.Second)
				fi, err := os.Stat(path)
				require.NoError(t, err)
				assert.Equal(t, second, fi.ModTime(), "rewritten without the heap growing")
				return nil
			}), nil
		},
	}, []string{"--server", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--log-level", "warn"})
	require.NoError(t, err)
	require.Len(t, held, 1)
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	gz, err := gzip.NewReader(f)
	require.NoError(t, err)
	b, err := io.ReadAll(gz)
	require.NoError(t, err)
	assert.NotEmpty(t, b)
}

// waitForFile waits until path exists with a modification time after since, and returns it.
func waitForFile(t *testing.T, path string, since time.Time) time.Time {
	t.Helper()
	var mod time.Time
	require.Eventually(t, func() bool {
		fi, err := os.Stat(path)
		if err != nil {
			return false
		}
		mod = fi.ModTime()
		return mod.After(since)
	}, 30*time.Second, 50*time.Millisecond, "%s written after %s", path, since)
	return mod
}
