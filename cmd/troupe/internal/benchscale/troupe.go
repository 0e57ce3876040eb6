package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/test/cluster"
)

// services are troupe's services, each run as its own process.
var services = []string{"renderer", "applier", "health", "history"}

// troupe runs nats-server and the services as processes, as on a cluster, and requests every
// phase through the CLI.
func (b *bench) troupe(ctx context.Context, dir string, n int) (*result, error) {
	names := namespaces(n)
	kube, err := b.startCluster(ctx, dir, append(names, "scale-warm"))
	if err != nil {
		return nil, err
	}
	defer kube.Stop()
	t, err := b.startTroupe(ctx, dir, n, kube)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	w, err := t.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	var cli clis
	troupe := func(args ...string) *exec.Cmd {
		return exec.Command(filepath.Join(b.bin, "troupe"), append(append([]string{}, args...), "--server", t.url, "--creds", t.creds[access.CLI])...)
	}
	// One release first, untimed: the chart's first upload, the services' first render and
	// apply, discovery caches.
	var warm clis
	if err := warm.run(troupe("release", "podinfo", b.chart, "-n", "scale-warm", "--wait", "--timeout", "5m")); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	procs := clusterProcs(kube)
	for name, pid := range t.pids {
		procs[name] = pid
	}
	js, err := jetstream.New(t.admin)
	if err != nil {
		return nil, err
	}
	seqs, err := streamSeqs(ctx, js)
	if err != nil {
		return nil, err
	}
	ms, err := b.measure(ctx, kube, "troupe", n, procs, append(append(append([]string{}, services...), "nats-server"), clusterOrder...))
	if err != nil {
		return nil, err
	}
	r := &result{side: "troupe", n: n}
	for _, p := range phases {
		args := map[string][]string{
			"install":  {"release", "podinfo", b.chart},
			"upgrade":  {"release", "podinfo", b.chart, "--set", upgradeSet},
			"rollback": {"rollback", "podinfo"},
		}[p]
		// One CLI process requests every release (--namespaces): one connection, one upload,
		// the requests published inFlight at a time; the watcher sees them ready.
		ph, err := w.phase(names, p == "rollback", func() error {
			return cli.run(troupe(append(args, "--namespaces", strings.Join(names, ","), "--timeout", timeout(n).String())...))
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		ph.name = p
		r.phases = append(r.phases, ph)
	}
	if err := ms.done(ctx, r); err != nil {
		return nil, err
	}
	after, err := streamSeqs(ctx, js)
	if err != nil {
		return nil, err
	}
	r.writes = map[string]uint64{}
	for s, seq := range after {
		r.writes[s] = seq - seqs[s]
	}
	r.cli = cli.usage("troupe CLI (all processes)")
	return r, nil
}

// running is nats-server and the services, as processes.
type running struct {
	url   string
	creds map[string]string // by identity
	pids  map[string]int    // by name
	procs []*exec.Cmd
	admin *nats.Conn
}

func (t *running) stop() {
	if t.admin != nil {
		t.admin.Close()
	}
	for i := len(t.procs) - 1; i >= 0; i-- {
		_ = t.procs[i].Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = t.procs[i].Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = t.procs[i].Process.Kill()
			<-done
		}
	}
}

// startTroupe starts nats-server with troupe's authorization (`troupe nats-config`), provisions
// the streams and buckets as the admin, and starts each service with its own identity.
func (b *bench) startTroupe(ctx context.Context, dir string, n int, kube *cluster.Cluster) (_ *running, err error) {
	t := &running{pids: map[string]int{}}
	defer func() {
		if err != nil {
			t.stop()
		}
	}()
	keys := filepath.Join(dir, "keys")
	authConf, err := exec.Command(filepath.Join(b.bin, "troupe"), "nats-config", "--dir", keys, "-o", "conf").Output()
	if err != nil {
		return nil, fmt.Errorf("troupe nats-config: %w", err)
	}
	a, err := access.LoadOrCreate(keys)
	if err != nil {
		return nil, err
	}
	if t.creds, err = a.WriteCreds(filepath.Join(dir, "creds"), events.Names{}); err != nil {
		return nil, err
	}
	ports, err := cluster.FreePorts(1)
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n}\n%s", ports[0], filepath.Join(dir, "nats"), authConf)
	if err := os.WriteFile(filepath.Join(dir, "nats-server.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	t.url = fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	if err := t.start(dir, "nats-server", filepath.Join(b.clusterBin, "nats-server"), "Server is ready", nil, "-c", filepath.Join(dir, "nats-server.conf")); err != nil {
		return nil, err
	}
	admin := events.ConnOptions{Server: t.url, CredsFile: t.creds[access.Admin]}
	if t.admin, err = admin.Connect("bench-scale-admin"); err != nil {
		return nil, err
	}
	js, err := jetstream.New(t.admin)
	if err != nil {
		return nil, err
	}
	if _, err := events.Provision(ctx, js, events.ProvisionConfig{}); err != nil {
		return nil, err
	}
	for _, s := range services {
		args := []string{"--server", t.url, "--http-listen", "127.0.0.1:0", "--creds", t.creds[s], "--provision=false"}
		if s == "history" {
			args = append(args, "--api-listen", "127.0.0.1:0")
		} else {
			args = append(args, "--kubeconfig", kube.Kubeconfig)
		}
		var env []string
		if b.profile != "" {
			env = append(env, "TROUPE_CPU_PROFILE="+filepath.Join(b.profile, fmt.Sprintf("troupe-%d-%s.pprof", n, s)),
				"TROUPE_HEAP_PROFILE="+filepath.Join(b.profile, fmt.Sprintf("troupe-%d-%s.heap.pprof", n, s)))
		}
		if err := t.start(dir, s, filepath.Join(b.bin, s), `"`+s+` ready"`, env, args...); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// start runs bin with env added to this program's, its output in dir/<name>.log, and waits until
// the log holds ready.
func (t *running) start(dir, name, bin, ready string, env []string, args ...string) error {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	logf.Close() // the child has it
	t.procs, t.pids[name] = append(t.procs, cmd), cmd.Process.Pid
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte(ready)) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	return fmt.Errorf("%s not ready after a minute:\n%s", name, tailOf(b, 2000))
}

func tailOf(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// watcher follows release.ready and release.failed on the stream, as a viewer.
type watcher struct {
	nc *nats.Conn
	cc jetstream.ConsumeContext

	mu    sync.Mutex
	ready map[string]int // the revision of the last release.ready, by namespace (every release is "podinfo")
	fails map[string]string
	wake  chan struct{}
	at    map[string]time.Time // when ready[ns] was seen
}

func (t *running) watch(ctx context.Context) (*watcher, error) {
	viewer := events.ConnOptions{Server: t.url, CredsFile: t.creds[access.Viewer]}
	nc, err := viewer.Connect("bench-scale")
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	readyF, _ := events.Names{}.TypeFilter(events.TypeReady)
	failedF, _ := events.Names{}.TypeFilter(events.TypeFailed)
	cons, err := js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{readyF, failedF}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		nc.Close()
		return nil, err
	}
	w := &watcher{nc: nc, ready: map[string]int{}, fails: map[string]string{}, at: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	w.cc, err = cons.Consume(func(m jetstream.Msg) {
		e, err := events.Names{}.Decode(m.Subject(), m.Headers(), m.Data())
		if err != nil {
			return
		}
		rel, err := events.ReleaseOf(e)
		if err != nil {
			return
		}
		now := time.Now()
		w.mu.Lock()
		switch e.Type() {
		case events.TypeReady:
			w.ready[rel.Namespace], w.at[rel.Namespace] = events.Revision(e), now
		case events.TypeFailed:
			w.fails[rel.Namespace] = fmt.Sprintf("revision %d: %s", events.Revision(e), e.Data())
		}
		w.mu.Unlock()
		select {
		case w.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return w, nil
}

func (w *watcher) stop() { w.cc.Stop(); w.nc.Close() }

// phase requests every namespace's release (request) and waits until each has a release.ready
// since the request of a revision newer than it had before (a new revision), or of any (a
// rollback: troupe makes the earlier revision current again, it numbers no new one); each
// release's latency runs from the request's start.
func (w *watcher) phase(names []string, anyRevision bool, request func() error) (phase, error) {
	w.mu.Lock()
	base := map[string]int{}
	for _, ns := range names {
		base[ns] = w.ready[ns]
		delete(w.fails, ns)
	}
	w.mu.Unlock()
	start := time.Now()
	if err := request(); err != nil {
		return phase{}, err
	}
	fmt.Fprintf(os.Stderr, "  %d requested by the CLI in %s\n", len(names), time.Since(start).Round(time.Millisecond))
	deadline := time.After(timeout(len(names)))
	for {
		w.mu.Lock()
		left := 0
		var failed string
		for _, ns := range names {
			if !w.at[ns].After(start) || !anyRevision && w.ready[ns] <= base[ns] {
				left++
				if f, ok := w.fails[ns]; ok && failed == "" {
					failed = ns + "/podinfo " + f
				}
			}
		}
		if failed != "" {
			w.mu.Unlock()
			return phase{}, fmt.Errorf("release.failed: %s", failed)
		}
		if left == 0 {
			ph := phase{}
			for _, ns := range names {
				ph.latency = append(ph.latency, w.at[ns].Sub(start))
				ph.wall = max(ph.wall, w.at[ns].Sub(start))
			}
			w.mu.Unlock()
			return ph, nil
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-deadline:
			return phase{}, fmt.Errorf("%d of %d releases not ready after %s", left, len(names), timeout(len(names)))
		}
	}
}

// timeout is each release's timeout when n are requested at once: the default 5 minutes, and
// room for the cluster to roll out n Deployments at the ~10 per second it manages here.
func timeout(n int) time.Duration {
	return 5*time.Minute + time.Duration(n)*150*time.Millisecond
}
