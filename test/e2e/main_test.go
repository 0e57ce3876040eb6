// Package e2e tests troupe as users run it: the CLI and the four services as separate processes
// (the binaries `go build` makes), a real embedded NATS JetStream and the real local cluster.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/events/embedded"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/test/cluster"
)

// env is what every test shares: binaries, the NATS URL, the cluster.
var env struct {
	root    string // the repository
	bin     string // the built binaries
	natsURL string
	// creds are the credentials file of each identity (events/access) on the test's NATS, which
	// runs with auth on as `troupe dev`'s does: the services, the CLI and the notifier connect as
	// their own identities, as a deployment's do.
	creds map[string]string
	kube  *cluster.Cluster
	js    jetstream.JetStream
	logs  string
}

// services are troupe's four, each its own process.
var services = []string{"renderer", "applier", "health", "history"}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "troupe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	env.bin, env.logs = filepath.Join(dir, "bin"), filepath.Join(dir, "logs")
	_ = os.MkdirAll(env.logs, 0o755)
	if env.root, err = natstest.WorkRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	// As `make build` does: the lean CLI, troupe-dev (what `troupe dev` runs), the services.
	for _, args := range [][]string{
		{"-tags", "lean", "-o", filepath.Join(env.bin, "troupe"), "./cmd/troupe"},
		{"-o", filepath.Join(env.bin, "troupe-dev"), "./cmd/troupe"},
		{"-o", env.bin + "/", "./services/renderer/cmd/renderer", "./services/applier/cmd/applier", "./services/health/cmd/health",
			"./services/history/cmd/history", "./examples/notifier"},
	} {
		build := exec.Command("go", append([]string{"build"}, args...)...)
		build.Dir = env.root
		if out, err := build.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("build: %w\n%s", err, out))
		}
	}
	if env.kube, err = cluster.Start(ctx, cluster.Options{}); err != nil {
		return fail(err)
	}
	defer env.kube.Stop()
	auth, err := access.LoadOrCreate(filepath.Join(dir, "creds"))
	if err != nil {
		return fail(err)
	}
	if env.creds, err = auth.WriteCreds(filepath.Join(dir, "creds"), events.Names{}); err != nil {
		return fail(err)
	}
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:-1", StoreDir: filepath.Join(dir, "nats"), Auth: auth})
	if err != nil {
		return fail(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	env.natsURL = srv.ClientURL()
	nc, err := nats.Connect(env.natsURL, nats.UserCredentials(env.creds[access.Admin]))
	if err != nil {
		return fail(err)
	}
	defer nc.Close()
	env.js, _ = jetstream.New(nc)
	if _, err := events.Provision(ctx, env.js, events.ProvisionConfig{}); err != nil {
		return fail(err)
	}
	for _, s := range services {
		var args []string
		if s != "history" {
			args = []string{"--kubeconfig", env.kube.Kubeconfig}
		}
		if s == "applier" {
			args = append(args, "--allow-adopt") // troupe adopt, --adopt: as troupe dev runs it
		}
		if s == "history" {
			args = append(args, "--ui-creds", env.creds[access.CLI]) // the web UI's buttons (ui_test.go)
		}
		p, err := startService(s, args...)
		if err != nil {
			return fail(err)
		}
		defer p.stop()
	}
	code := m.Run()
	if code != 0 {
		for _, s := range services {
			b, _ := os.ReadFile(filepath.Join(env.logs, s+".log"))
			fmt.Fprintf(os.Stderr, "--- %s log (last 3000 bytes)\n%s\n", s, tail(b, 3000))
		}
	}
	return code
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// process is a service process.
type process struct {
	name string
	log  string // its output
	cmd  *exec.Cmd
	done chan struct{}
}

// startService runs a service binary (serve.Main's flags) against the test's NATS and waits
// until it logs that it is ready. It connects as its own identity and provisions nothing (the
// admin did), or in a sandbox (--subjects-prefix) as the admin, provisioning the sandbox.
func startService(name string, args ...string) (*process, error) {
	common := []string{"--server", env.natsURL, "--http-listen", "127.0.0.1:0"}
	switch identity := name; {
	case slices.Contains(args, "--subjects-prefix"):
		common = append(common, "--creds", env.creds[access.Admin])
	case identity == "notifier":
		common = append(common, "--creds", env.creds[access.Subscriber], "--provision=false")
	default:
		common = append(common, "--creds", env.creds[identity], "--provision=false")
	}
	if name == "history" {
		common = append(common, "--api-listen", "127.0.0.1:0")
	}
	return startProcess(name, `"`+name+` ready"`, append(common, args...)...)
}

// startProcess runs the binary name and waits until its output holds ready. It dies with the
// test process.
func startProcess(name, ready string, args ...string) (*process, error) {
	logPath := filepath.Join(env.logs, name+".log")
	if _, err := os.Stat(logPath); err == nil {
		logPath = filepath.Join(env.logs, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(env.bin, name), args...)
	cmd.Dir = env.root
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte(ready)) {
			return p, nil
		}
		select {
		case <-p.done:
			b, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s exited: %s", name, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.stop()
	b, _ := os.ReadFile(logPath)
	return nil, fmt.Errorf("%s not ready in 60s: %s", name, tail(b, 2000))
}

// stop sends SIGTERM and waits for the process to drain and exit.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// result is one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// troupe runs the CLI binary against the test's NATS.
func troupe(t *testing.T, args ...string) result {
	t.Helper()
	return troupeOn(t, env.natsURL, args...)
}

// troupeOn runs the CLI binary against the NATS at server.
func troupeOn(t *testing.T, server string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	args = append(args, "--server", server)
	if server == env.natsURL && !slices.Contains(args, "--creds") {
		// The CLI's identity; a sandbox (its subjects are no identity's but the admin's) the admin's.
		creds := env.creds[access.CLI]
		if slices.Contains(args, "--subjects-prefix") || (args[0] == "replay" && slices.Contains(args, "--to")) {
			creds = env.creds[access.Admin]
		}
		args = append(args, "--creds", creds)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(env.bin, "troupe"), args...)
	cmd.Dir = env.root
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("troupe %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// chart is the project's example chart.
func chart() string { return filepath.Join(env.root, "examples", "charts", "hello") }
