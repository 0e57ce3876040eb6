package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Cluster is nats-server processes on loopback, each its own process with its own store
// directory, so that a test can SIGKILL one and start it again on the same port and store — what
// a crash of a NATS node is, which an embedded server cannot be. One node is a plain server; more
// form a JetStream cluster (named "troupe", nodes n0, n1, …). Every process is killed when the
// test ends, and with the test process if it dies.
type Cluster struct {
	t     testing.TB
	bin   string
	mu    sync.Mutex
	nodes []*node
	// config, when set, gives node i (its store directory) a configuration file and environment:
	// the server runs on it, with only its addresses and directories set by flags.
	config func(i int, dir string) (file string, env []string)
}

type node struct {
	name                     string
	port, monitor, routePort int
	dir                      string
	cmd                      *exec.Cmd
	done                     chan struct{}
}

// Start3 starts a 3-node JetStream cluster and waits until every node is healthy (JetStream
// current, a meta leader elected).
func Start3(t testing.TB) *Cluster {
	t.Helper()
	c := Plan(t, 3)
	c.StartAll()
	return c
}

// StartProcess starts one nats-server process with JetStream and waits until it is healthy.
func StartProcess(t testing.TB) *Cluster {
	t.Helper()
	c := Plan(t, 1)
	c.StartAll()
	return c
}

// Plan picks the ports and store directories of n nodes and starts none: a test that needs a
// URL before there is a server there (a service started before NATS) starts them later with
// Start or StartAll.
func Plan(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binary(t)}
	ports := freePorts(t, 3*n)
	for i := range n {
		c.nodes = append(c.nodes, &node{name: fmt.Sprintf("n%d", i), port: ports[3*i], monitor: ports[3*i+1],
			routePort: ports[3*i+2], dir: t.TempDir()})
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.Kill(i)
		}
		if t.Failed() && os.Getenv("NATSTEST_LOGS") != "" { // NATSTEST_LOGS=1: each node's log when a test fails
			for i, n := range c.nodes {
				t.Logf("--- nats-server %s\n%s", n.name, c.logTail(i))
			}
		}
	})
	return c
}

// PlanConfig is Plan for nodes that run on a configuration file (a deployment's, as rendered):
// config writes node i's into its store directory dir and returns its path and the environment
// it expects (its store and pid file under dir: paths are config's to rewrite). Flags set only
// the addresses, which must differ on one machine: client, monitoring and route (on 127.0.0.1),
// and the routes; the server name and everything else come from the file.
func PlanConfig(t testing.TB, n int, config func(i int, dir string) (file string, env []string)) *Cluster {
	t.Helper()
	c := Plan(t, n)
	c.config = config
	return c
}

// URL is node i's client URL.
func (c *Cluster) URL(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].port) }

// URLs is every node's client URL, comma-separated: what --server takes.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Connect connects to the cluster (any node, reconnecting forever); the connection closes when
// the test ends.
func (c *Cluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
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

// StartAll starts every node that is not running and waits until all are healthy.
func (c *Cluster) StartAll() {
	c.t.Helper()
	for i := range c.nodes {
		c.launch(i)
	}
	for i := range c.nodes {
		c.WaitHealthy(i)
	}
}

// Start starts node i (again: same ports, same store) if it is not running, and waits until it
// is healthy. In a cluster a node is healthy only once it has caught up with the others, so
// start a whole cluster that is down with StartAll.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	c.launch(i)
	c.WaitHealthy(i)
}

// Kill SIGKILLs node i and waits until it is gone: no shutdown, no flush, as in a crash.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	cmd, done := n.cmd, n.done
	n.cmd = nil
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Restart SIGKILLs node i and starts it again on the same port and store.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Kill(i)
	c.Start(i)
}

// launch starts node i's process unless it runs.
func (c *Cluster) launch(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.cmd != nil {
		return
	}
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-m", strconv.Itoa(n.monitor), "-js",
		"-sd", n.dir, "-n", n.name}
	var env []string
	if c.config != nil {
		file, e := c.config(i, n.dir)
		env = e
		args = []string{"-c", file, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-m", strconv.Itoa(n.monitor)}
	}
	if len(c.nodes) > 1 {
		var routes []string
		for _, o := range c.nodes {
			routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", o.routePort))
		}
		if c.config == nil {
			args = append(args, "--cluster_name", "troupe")
		}
		args = append(args, "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", n.routePort), "--routes", strings.Join(routes, ","))
	}
	log, err := os.OpenFile(filepath.Join(n.dir, "nats-server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		c.t.Fatalf("start nats-server %s: %v", n.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); log.Close(); close(done) }()
	n.cmd, n.done = cmd, done
}

// WaitHealthy waits until node i's /healthz says it serves JetStream. A node that exits or is
// not healthy in two minutes fails the test, with the end of its log.
func (c *Cluster) WaitHealthy(i int) {
	c.t.Helper()
	c.mu.Lock()
	n := c.nodes[i]
	done := n.done
	c.mu.Unlock()
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.monitor)
	hc := http.Client{Timeout: 5 * time.Second}
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
		if res, err := hc.Get(url); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			c.t.Fatalf("nats-server %s exited:\n%s", n.name, c.logTail(i))
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.t.Fatalf("nats-server %s not healthy in 2 minutes:\n%s", n.name, c.logTail(i))
}

func (c *Cluster) logTail(i int) string {
	b, _ := os.ReadFile(filepath.Join(c.nodes[i].dir, "nats-server.log"))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// StreamLeader returns the index of the node leading stream's raft group, -1 if none does.
func (c *Cluster) StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) int {
	s, err := js.Stream(ctx, stream)
	if err != nil || s.CachedInfo().Cluster == nil {
		return -1
	}
	for i, n := range c.nodes {
		if n.name == s.CachedInfo().Cluster.Leader {
			return i
		}
	}
	return -1
}

// Binary returns the path of a nats-server binary of the version this module depends on:
// $TROUPE_NATS_SERVER if set, else bin/nats-server beside the go.work above the working
// directory (what `make nats-bin` builds), built there with `go build` from the module cache when
// it is missing or of another version.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("TROUPE_NATS_SERVER"); p != "" {
		return p
	}
	root, err := WorkRoot()
	if err != nil {
		t.Fatalf("natstest: %v: set TROUPE_NATS_SERVER", err)
	}
	bin := filepath.Join(root, "bin", "nats-server")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	want := "nats-server: v" + server.VERSION
	if out, err := exec.Command(bin, "--version").Output(); err == nil && strings.TrimSpace(string(out)) == want {
		return bin
	}
	// Built beside and renamed into place: tests of several packages may build at once.
	tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
	build := exec.Command("go", "build", "-o", tmp, "github.com/nats-io/nats-server/v2")
	build.Dir = filepath.Join(root, "events")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// WorkRoot returns the directory of the go.work found walking up from the working directory:
// the repository's root, where bin/ is, for tests of any of its modules.
func WorkRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
