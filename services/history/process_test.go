package history_test

import (
	"bytes"
	"fmt"
	"github.com/stretchr/testify/assert"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/services/history"
)

// TestReplicasAsProcesses: two history processes (the binary cmd/history builds) share the
// consumer; one is SIGKILLed in the middle of a burst of events and started again. Once every
// event is handled, the views are the ones Rebuild makes from the stream, and every rollback of
// the burst started.
func TestReplicasAsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs history processes")
	}
	dir := t.TempDir()
	bin := buildHistory(t, dir)

	srv, nc, js := natstest.Start(t)
	// The test's history is never started: it reads the views and rebuilds them.
	svc, err := history.New(t.Context(), js, history.Options{})
	require.NoError(t, err)
	e := &env{t: t, nc: nc, js: js, svc: svc, pub: events.NewPublisher(js, events.Names{})}

	var logs []string
	// start runs a history process and waits until it is ready; kill SIGKILLs it and waits until
	// it is gone.
	start := func(name string) (kill func()) {
		t.Helper()
		log := filepath.Join(dir, fmt.Sprintf("%s-%d.log", name, len(logs)))
		logs = append(logs, log)
		f, err := os.Create(log)
		require.NoError(t, err)
		cmd := exec.Command(bin, "--server", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0")
		cmd.Stdout, cmd.Stderr = f, f
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		require.NoError(t, cmd.Start())
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); f.Close(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			<-exited
		})
		for {
			b, _ := os.ReadFile(log)
			if bytes.Contains(b, []byte(`"history ready"`)) {
				return func() {
					require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
					<-exited
				}
			}
			select {
			case <-exited:
				t.Fatalf("%s exited before it was ready: %s", name, b)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("--- %s (last 3000 bytes)\n%s", filepath.Base(l), b[max(0, len(b)-3000):])
			}
		}
	})
	killA := start("a")
	start("b")

	rels := []events.Release{{Namespace: "prod", Name: "a"}, {Namespace: "prod", Name: "b"}, {Namespace: "staging", Name: "a"},
		{Namespace: "staging", Name: "b"}}
	rollbacks := e.rollbacks()
	burst := make(chan struct{})
	go func() { defer close(burst); e.burst(rels, 8) }()

	// SIGKILL a once history has handled a third of the burst and an event is out for handling
	// (or, on a machine where history kept up with no event out at any look, once the burst is
	// published).
	cons, err := js.Consumer(t.Context(), events.StreamName, history.Name)
	require.NoError(t, err)
	for out := false; !out; {
		info, err := cons.Info(t.Context())
		require.NoError(t, err)
		select {
		case <-burst:
			out = true
		case <-time.After(5 * time.Millisecond):
			out = info.AckFloor.Stream > 40 && info.NumAckPending > 0
		}
	}
	killA()
	start("a")

	<-burst
	e.settled()

	live := snapshot(t, e)
	require.Len(t, live, len(rels))
	e.rolledBack(rels)
	for _, rel := range rels {
		require.Positive(t, rollbacks()[rel.String()], "%s: the rollback started", rel)
	}
	sameViews(t, e.rebuilt(), live)
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		require.NotContains(t, strings.ToLower(string(b)), "panic", filepath.Base(l))
	}
}

// buildHistory builds cmd/history into dir.
func buildHistory(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "history")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/history").CombinedOutput()
	require.NoError(t, err, "go build: %s", out)
	return bin
}

// TestAPIListenAsTheBinaryServesIt: the history binary refuses to serve its API off loopback
// without a token; with one, its API answers only requests that carry it.
func TestAPIListenAsTheBinaryServesIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a history process")
	}
	dir := t.TempDir()
	bin := buildHistory(t, dir)
	srv, _, _ := natstest.Start(t)

	out, err := exec.Command(bin, "--server", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--api-listen", "0.0.0.0:0").CombinedOutput()
	require.Error(t, err, "started with its API open to all: %s", out)
	assert.Contains(t, string(out), "--api-listen: the history API on 0.0.0.0:0 is reachable off this host")

	token := filepath.Join(dir, "token")
	require.NoError(t, os.WriteFile(token, []byte("s3cret\n"), 0o600))
	log := filepath.Join(dir, "history.log")
	f, err := os.Create(log)
	require.NoError(t, err)
	cmd := exec.Command(bin, "--server", srv.ClientURL(), "--http-listen", "127.0.0.1:0", "--api-listen", "0.0.0.0:0", "--api-token-file", token)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); f.Close() })
	addr := regexp.MustCompile(`"api":"[^"]*:(\d+)"`)
	var port string
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(log)
		if m := addr.FindSubmatch(b); m != nil {
			port = string(m[1])
		}
		return port != ""
	}, time.Minute, 50*time.Millisecond, "the API listens")
	get := func(auth string) int {
		req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+port+"/releases", nil)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusUnauthorized, get(""))
	assert.Equal(t, http.StatusUnauthorized, get("Bearer nope"))
	assert.Equal(t, http.StatusOK, get("Bearer s3cret"))
}
