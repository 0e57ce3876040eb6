package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDevStopsOnSIGINT runs the built binary, as a user does, and interrupts it.
func TestDevStopsOnSIGINT(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "troupe")
	build := exec.Command("go", "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			cmd := exec.Command(bin, "dev", "--nats-listen", "127.0.0.1:-1", "--http-listen", "127.0.0.1:0", "--store-dir", t.TempDir(), "--kubeconfig", testKube.Kubeconfig)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			lines := bufio.NewScanner(stdout)
			var seen []string
			for lines.Scan() {
				seen = append(seen, lines.Text())
				if strings.Contains(lines.Text(), "troupe dev: ready") {
					break
				}
			}
			require.NoError(t, cmd.Process.Signal(sig))
			for lines.Scan() {
				seen = append(seen, lines.Text())
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				assert.NoError(t, err, "exit 0 after a clean shutdown")
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatal("troupe dev did not stop")
			}
			assert.Contains(t, strings.Join(seen, "\n"), "troupe dev: stopped")
		})
	}
}
