package serve_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/events/serve"
)

// fake is a service whose Start the test writes: run gets ctx and the function that makes the
// service ready.
type fake struct {
	ready chan struct{}
	once  sync.Once
	run   func(ctx context.Context, ready func()) error
}

func newFake(run func(ctx context.Context, ready func()) error) *fake {
	return &fake{ready: make(chan struct{}), run: run}
}

func (f *fake) Start(ctx context.Context) error { return f.run(ctx, f.markReady) }
func (f *fake) Ready() <-chan struct{}          { return f.ready }
func (f *fake) markReady()                      { f.once.Do(func() { close(f.ready) }) }

// untilStopped is a well-behaved service: ready at once, returning nil once ctx ended.
func untilStopped(ctx context.Context, ready func()) error { ready(); <-ctx.Done(); return nil }

// group is a Group under test, running on its own connection and a free port.
type group struct {
	*serve.Group
	addr    string
	cancel  context.CancelFunc
	done    chan error
	readied chan struct{} // closed by OnReady
}

// newGroup returns a Group on a connection to srv, listening on a free port (through wrap, if
// not nil), with OnReady set. Start it with run.
func newGroup(t *testing.T, nc *nats.Conn, wrap func(net.Listener) net.Listener) *group {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	g := &group{addr: ln.Addr().String(), done: make(chan error, 1), readied: make(chan struct{})}
	if wrap != nil {
		ln = wrap(ln)
	}
	g.Group = &serve.Group{NC: nc, Listener: ln, OnReady: func() { close(g.readied) }}
	return g
}

func (g *group) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	g.cancel = cancel
	go func() { g.done <- g.Run(ctx) }()
}

// wait returns what Run returned.
func (g *group) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-g.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// readyz returns /readyz's status code, 0 if the server does not answer.
func (g *group) readyz() int {
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + g.addr + "/readyz")
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// TestGroupReadyOnlyWhenAllReady: /readyz is true once every service is ready, not before, and
// only while NATS is connected.
func TestGroupReadyOnlyWhenAllReady(t *testing.T) {
	srv := natstest.Server(t)
	nc, _ := natstest.Connect(t, srv)
	ready := map[string]chan struct{}{"a": make(chan struct{}), "b": make(chan struct{})}
	g := newGroup(t, nc, nil)
	for _, name := range []string{"a", "b"} {
		g.Add(name, newFake(func(ctx context.Context, markReady func()) error {
			select {
			case <-ready[name]:
				markReady()
			case <-ctx.Done():
				return nil
			}
			<-ctx.Done()
			return nil
		}))
	}
	g.run(t)

	require.Eventually(t, func() bool { return g.readyz() == http.StatusServiceUnavailable }, 10*time.Second, 10*time.Millisecond, "HTTP serves while the services start")
	close(ready["a"])
	assert.Never(t, func() bool { return g.readyz() != http.StatusServiceUnavailable }, 300*time.Millisecond, 10*time.Millisecond, "ready with b not ready")
	assert.False(t, isClosed(g.readied), "OnReady with b not ready")
	close(ready["b"])
	require.Eventually(t, func() bool { return g.readyz() == http.StatusOK }, 10*time.Second, 10*time.Millisecond)
	assert.True(t, isClosed(g.readied), "OnReady once every service is ready")

	srv.Shutdown()
	assert.Eventually(t, func() bool { return g.readyz() == http.StatusServiceUnavailable }, 10*time.Second, 10*time.Millisecond, "ready with NATS gone")

	g.cancel()
	assert.NoError(t, g.wait(t))
}

// TestGroupStopsWhenOneFails: a service that fails, stops on its own or is not ready in time
// stops every other, and Run returns why, naming it.
func TestGroupStopsWhenOneFails(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		b    func(ctx context.Context, ready func()) error
		// wantIs and wantMsg are what Run returns; readied is whether the group was ready before.
		wantIs       error
		wantMsg      string
		readied      bool
		readyTimeout time.Duration
	}{
		{
			name:    "fails to start",
			b:       func(ctx context.Context, ready func()) error { return boom },
			wantIs:  boom,
			wantMsg: "service b: boom",
		},
		{
			name:    "fails once ready",
			b:       func(ctx context.Context, ready func()) error { return boom },
			wantIs:  boom,
			wantMsg: "service b: boom",
			readied: true,
		},
		{
			name:    "stops on its own",
			b:       func(ctx context.Context, ready func()) error { return nil },
			wantIs:  serve.ErrStopped,
			wantMsg: "service b: stopped before it was asked to",
			readied: true,
		},
		{
			name:         "never ready",
			b:            func(ctx context.Context, ready func()) error { <-ctx.Done(); return nil },
			wantIs:       serve.ErrNotReady,
			wantMsg:      "service b: did not become ready within 100ms",
			readyTimeout: 100 * time.Millisecond,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, nc, _ := natstest.Start(t)
			g := newGroup(t, nc, nil)
			g.ReadyTimeout = tc.readyTimeout
			aStopped := make(chan struct{})
			// a is ready at once, so "fails once ready" fails with the group ready.
			g.Add("a", newFake(func(ctx context.Context, ready func()) error {
				defer close(aStopped)
				return untilStopped(ctx, ready)
			}))
			b := tc.b
			if tc.readied {
				// b returns only once the group is ready, so that its return is what stops it.
				b = func(ctx context.Context, ready func()) error {
					ready()
					<-g.readied
					return tc.b(ctx, ready)
				}
			}
			g.Add("b", newFake(b))
			g.run(t)

			err := g.wait(t)
			require.Error(t, err)
			assert.ErrorIs(t, err, tc.wantIs)
			assert.Equal(t, tc.wantMsg, err.Error())
			assert.True(t, isClosed(aStopped), "a stopped")
			assert.Equal(t, tc.readied, isClosed(g.readied), "OnReady called")
		})
	}
}

// TestGroupShutsDownInOrder: readiness false, then the services drain (seeing /readyz false
// while they do, NATS still connected), then NATS drains, then HTTP stops.
func TestGroupShutsDownInOrder(t *testing.T) {
	_, nc, _ := natstest.Start(t)
	var (
		mu    sync.Mutex
		steps []string
	)
	record := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		steps = append(steps, fmt.Sprintf(format, args...))
	}
	g := newGroup(t, nc, func(ln net.Listener) net.Listener {
		return closeHook{ln, func() { record("http stopped, NATS closed: %t", nc.IsClosed()) }}
	})
	g.OnShutdown = func() { record("shutdown") }
	for _, name := range []string{"a", "b"} {
		g.Add(name, newFake(func(ctx context.Context, ready func()) error {
			ready()
			<-ctx.Done()
			record("%s draining, /readyz %d, NATS connected: %t", name, g.readyz(), nc.IsConnected())
			return nil
		}))
	}
	g.run(t)
	<-g.readied
	require.Equal(t, http.StatusOK, g.readyz())
	g.cancel()
	require.NoError(t, g.wait(t))

	mu.Lock()
	defer mu.Unlock()
	require.Len(t, steps, 4, "%q", steps)
	assert.Equal(t, "shutdown", steps[0])
	assert.ElementsMatch(t, []string{
		"a draining, /readyz 503, NATS connected: true",
		"b draining, /readyz 503, NATS connected: true",
	}, steps[1:3])
	assert.Equal(t, "http stopped, NATS closed: true", steps[3])
}

// closeHook is a listener that calls hook when closed.
type closeHook struct {
	net.Listener
	hook func()
}

func (c closeHook) Close() error { c.hook(); return c.Listener.Close() }

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
