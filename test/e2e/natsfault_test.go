package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// TestNATSKilledUnderServices: the four services as processes, started before their nats-server
// process exists, wait for it and serve a release; the nats-server is SIGKILLed with a release in
// flight and started again on the same port and store: that release still ends (exactly one
// terminal event), and one published after ends ready.
func TestNATSKilledUnderServices(t *testing.T) {
	nats := natstest.Plan(t, 1) // not started yet
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(env.logs, "*-*.log"))
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			t.Logf("--- %s (last 6000 bytes)\n%s", l, tail(b, 6000))
		}
	})
	url := nats.URL(0)
	started := make(chan error, len(services))
	for _, s := range services {
		args := []string{"--server", url, "--http-listen", "127.0.0.1:0"}
		if s == "history" {
			args = append(args, "--api-listen", "127.0.0.1:0")
		}
		if s != "history" {
			args = append(args, "--kubeconfig", env.kube.Kubeconfig)
		}
		go func() {
			p, err := startProcess(s, `"`+s+` ready"`, args...)
			if err == nil {
				t.Cleanup(p.stop)
			}
			started <- err
		}()
	}
	time.Sleep(time.Second) // let them start first: what they do without NATS is the point
	nats.StartAll()
	for range services {
		require.NoError(t, <-started)
	}

	ns := env.kube.Namespace(t)
	r := troupeOn(t, url, "release", "hello", chart(), "-n", ns, "--wait")
	require.Equal(t, 0, r.code, r)

	r = troupeOn(t, url, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=2", "--timeout", "1m")
	require.Equal(t, 0, r.code, r)
	nats.Kill(0) // revision 2 in flight
	nats.Start(0)

	r = troupeOn(t, url, "release", "hello", chart(), "-n", ns, "--set", "replicaCount=3", "--wait")
	require.Equal(t, 0, r.code, r)
	assert.EqualValues(t, 3, replicas(t, ns, "hello"))

	// Revision 2, in flight at the SIGKILL, ends too: with its own terminal event, or — if the
	// restart lost its delivery — the deadline watchdog's (its --timeout is 1m).
	_, js := nats.Connect(t)
	var ends map[int][]string
	require.Eventually(t, func() bool {
		ends = terminalEvents(t, js, "troupe.release."+ns+".hello.>")
		return len(ends[2]) > 0
	}, 3*time.Minute, time.Second, "revision 2 ends")
	t.Logf("revision 2, in flight at the SIGKILL, ended with %v", ends[2])
	for rev := 1; rev <= 3; rev++ {
		assert.Len(t, ends[rev], 1, fmt.Sprintf("revision %d: one terminal event: %v", rev, ends[rev]))
	}
	assert.Equal(t, []string{events.TypeReady}, ends[3])
}

var terminal = map[string]bool{events.TypeReady: true, events.TypeFailed: true, events.TypeSuperseded: true, events.TypeUninstalled: true}

// terminalEvents returns the types of the terminal events stored on filter, by revision: every
// copy the stream holds, not relying on its duplicate window.
func terminalEvents(t *testing.T, js jetstream.JetStream, filter string) map[int][]string {
	t.Helper()
	out := map[int][]string{}
	for _, e := range storedEvents(t, js, filter) {
		if terminal[e.Type()] {
			out[events.Revision(e)] = append(out[events.Revision(e)], e.Type())
		}
	}
	return out
}

// storedEvents is every event the stream holds on filter, in stream order.
func storedEvents(t *testing.T, js jetstream.JetStream, filter string) []event.Event {
	t.Helper()
	s, err := js.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(filter))
	require.NoError(t, err)
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	if n == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	require.NoError(t, err)
	batch, err := c.Fetch(int(n), jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	var out []event.Event
	for m := range batch.Messages() {
		e, err := events.Names{}.Decode(m.Subject(), m.Headers(), m.Data())
		require.NoError(t, err)
		out = append(out, e)
	}
	require.NoError(t, batch.Error())
	return out
}
