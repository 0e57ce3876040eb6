package events_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// The subscriber process of TestAtLeastOnceAcrossSIGKILL: the test binary run again with
// TROUPE_CRASH_TEST_NATS set. Its handler records each event it handles in a KV bucket, slowly,
// so that a SIGKILL finds events in flight.
func TestMain(m *testing.M) {
	if url := os.Getenv("TROUPE_CRASH_TEST_NATS"); url != "" {
		os.Exit(subscriberProcess(url))
	}
	os.Exit(m.Run())
}

func subscriberProcess(url string) int {
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		return 1
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "handled")
	if err != nil {
		return 1
	}
	sub, err := events.NewSubscriber(js, events.SubscriberConfig{Service: "renderer", Types: []string{events.TypeRequested},
		Concurrency: 2, AckWait: 2 * time.Second}, func(ctx context.Context, e event.Event) error {
		time.Sleep(20 * time.Millisecond)
		n := 0
		if entry, err := kv.Get(ctx, e.ID()); err == nil {
			n = len(entry.Value())
		}
		_, err := kv.Put(ctx, e.ID(), []byte(strings.Repeat("x", n+1))) // handled n+1 times
		return err
	})
	if err != nil {
		return 1
	}
	go func() {
		<-sub.Ready()
		os.Stdout.WriteString("ready\n")
	}()
	if err := sub.Start(ctx); err != nil {
		return 1
	}
	return 0
}

// TestAtLeastOnceAcrossSIGKILL: a subscriber process killed with SIGKILL while it handles events
// loses none. Those in flight and those published while nothing runs are handled once it is
// back (at least once: some twice), and every event ends acked.
func TestAtLeastOnceAcrossSIGKILL(t *testing.T) {
	s, _, js := natstest.Start(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "handled"})
	require.NoError(t, err)
	pub := events.NewPublisher(js, events.Names{})
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "TROUPE_CRASH_TEST_NATS="+s.ClientURL())
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		cmd.Stderr = os.Stderr
		require.NoError(t, cmd.Start())
		buf := make([]byte, 6)
		_, err = out.Read(buf)
		require.NoError(t, err, "the subscriber process did not start")
		require.Equal(t, "ready\n", string(buf))
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	handled := func() map[string]int {
		out := map[string]int{}
		keys, err := kv.ListKeys(t.Context())
		require.NoError(t, err)
		for k := range keys.Keys() {
			e, err := kv.Get(t.Context(), k)
			require.NoError(t, err)
			out[k] = len(e.Value())
		}
		return out
	}

	proc := start()
	var ids []string
	for i := range 60 {
		ids = append(ids, publishRequest(t, pub, rel(i)).ID())
	}
	require.Eventually(t, func() bool { return len(handled()) >= 10 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, proc.Process.Signal(syscall.SIGKILL))
	_ = proc.Wait()
	before := handled()
	require.Less(t, len(before), 60, "the kill must come with work left")

	for i := 60; i < 80; i++ { // published while nothing runs
		ids = append(ids, publishRequest(t, pub, rel(i)).ID())
	}
	start()
	require.Eventually(t, func() bool { return len(handled()) == 80 }, time.Minute, 50*time.Millisecond)
	after := handled()
	for _, id := range ids {
		assert.GreaterOrEqual(t, after[id], 1, id)
	}
	require.Eventually(t, func() bool {
		c, err := js.Consumer(t.Context(), events.StreamName, "renderer")
		require.NoError(t, err)
		info, err := c.Info(t.Context())
		require.NoError(t, err)
		return info.NumAckPending == 0 && info.NumPending == 0
	}, 30*time.Second, 50*time.Millisecond, "every event acked")
}
