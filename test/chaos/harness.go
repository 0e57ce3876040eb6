package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
	"github.com/troupe-dev/troupe/test/cluster"
)

// Config sets a run. Zero values take the defaults named on each field; ConfigFromEnv reads
// them from CHAOS_* variables.
type Config struct {
	// Releases is how many releases the run deploys (CHAOS_RELEASES). Default 6.
	Releases int
	// Revisions is how many revisions (release.requested) the run makes, all releases together:
	// installs, upgrades, dry runs; rollbacks and uninstalls come on top (CHAOS_REVISIONS).
	// Default 40: about a minute.
	Revisions int
	// Parallel is how many releases take requests at once (CHAOS_PARALLEL). Default 3.
	Parallel int
	// Replicas of each service, each its own process (CHAOS_REPLICAS). Default 2.
	Replicas int
	// KillEvery is the mean time between two SIGKILLs of a service process (CHAOS_KILL_EVERY).
	// Default 3s.
	KillEvery time.Duration
	// NodeDown is how long the killed NATS node stays down (CHAOS_NODE_DOWN). Default 8s.
	NodeDown time.Duration
	// Timeout is every request's --timeout (CHAOS_TIMEOUT). Default 2m.
	Timeout time.Duration
	// Grace is added to each deadline before a flow counts as stuck (CHAOS_GRACE). Default 30s.
	Grace time.Duration
	// Dir keeps the run's logs and stores (CHAOS_DIR). Default: a new temporary directory.
	Dir string
	// Log receives progress lines. Optional.
	Log func(format string, args ...any)
}

// ConfigFromEnv reads Config from CHAOS_* environment variables (unset: the defaults).
func ConfigFromEnv() (Config, error) {
	var c Config
	var errs []error
	num := func(name string, p *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				errs = append(errs, fmt.Errorf("%s=%q: want a number from 1", name, v))
			}
			*p = n
		}
	}
	dur := func(name string, p *time.Duration) {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a duration above 0", name, v))
			}
			*p = d
		}
	}
	num("CHAOS_RELEASES", &c.Releases)
	num("CHAOS_REVISIONS", &c.Revisions)
	num("CHAOS_PARALLEL", &c.Parallel)
	num("CHAOS_REPLICAS", &c.Replicas)
	dur("CHAOS_KILL_EVERY", &c.KillEvery)
	dur("CHAOS_NODE_DOWN", &c.NodeDown)
	dur("CHAOS_TIMEOUT", &c.Timeout)
	dur("CHAOS_GRACE", &c.Grace)
	c.Dir = os.Getenv("CHAOS_DIR")
	return c, errors.Join(errs...)
}

func (c *Config) defaults() {
	set := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setD := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	set(&c.Releases, 6)
	set(&c.Revisions, 40)
	set(&c.Parallel, 3)
	set(&c.Replicas, 2)
	setD(&c.KillEvery, 3*time.Second)
	setD(&c.NodeDown, 8*time.Second)
	setD(&c.Timeout, 2*time.Minute)
	setD(&c.Grace, 30*time.Second)
	if c.Log == nil {
		c.Log = func(string, ...any) {}
	}
}

// Namespace is where the run's releases live.
const Namespace = "chaos"

// services are troupe's four, each run as Replicas processes.
var services = []string{"renderer", "applier", "health", "history"}

// Result is a run's report and what it noted beside it.
type Result struct {
	Report
	// Exits are service processes that exited without being killed (with their last log lines).
	Exits []string
	// Calls is how many CLI requests were made.
	Calls int
	// Dir holds the run's logs.
	Dir string
}

// Run builds what it needs, starts everything, runs the workload under chaos, waits until every
// flow ended or passed its deadline plus grace, and checks. An error is a harness failure (a
// build, a start); what troupe got wrong is in the Result's Report.
func Run(ctx context.Context, cfg Config) (res Result, err error) {
	cfg.defaults()
	log := cfg.Log
	if cfg.Dir == "" {
		if cfg.Dir, err = os.MkdirTemp("", "troupe-chaos-"); err != nil {
			return res, err
		}
	}
	res.Dir = cfg.Dir
	bin := filepath.Join(cfg.Dir, "bin")
	logs := filepath.Join(cfg.Dir, "logs")
	for _, d := range []string{bin, logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return res, err
		}
	}
	root, err := natstest.WorkRoot()
	if err != nil {
		return res, err
	}
	natsBin, err := NATSServerBinary(root)
	if err != nil {
		return res, err
	}
	log("chaos: building the CLI and the services")
	if err := build(root, bin); err != nil {
		return res, err
	}

	log("chaos: starting the local Kubernetes cluster")
	kube, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(cfg.Dir, "kube")})
	if err != nil {
		return res, err
	}
	defer kube.Stop()
	if _, err := kube.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil {
		return res, fmt.Errorf("namespace %s: %w", Namespace, err)
	}

	log("chaos: starting 3 nats-server processes")
	natsDir := filepath.Join(cfg.Dir, "nats")
	if err := os.MkdirAll(natsDir, 0o755); err != nil {
		return res, err
	}
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	nc3, err := StartNATS(startCtx, natsBin, natsDir, 3)
	cancel()
	if err != nil {
		return res, err
	}
	defer nc3.Stop()
	nc, err := nats.Connect(nc3.URLs(), nats.Name("troupe-chaos"), nats.MaxReconnects(-1))
	if err != nil {
		return res, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	if err := retry(ctx, time.Minute, func() error {
		_, err := events.Provision(ctx, js, events.ProvisionConfig{Replicas: 3})
		return err
	}); err != nil {
		return res, fmt.Errorf("provision R3: %w", err)
	}

	log("chaos: starting %d replicas of each service", cfg.Replicas)
	svcs, err := StartServices(bin, logs, services, cfg.Replicas, func(name string) []string {
		args := []string{"--server", nc3.URLs(), "--http-listen", "127.0.0.1:0", "--replicas", "3"}
		if name == "history" {
			args = append(args, "--api-listen", "127.0.0.1:0")
		}
		if name != "history" {
			args = append(args, "--kubeconfig", kube.Kubeconfig)
		}
		return args
	})
	if err != nil {
		return res, err
	}
	defer svcs.Stop()
	upCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = svcs.WaitAllUp(upCtx)
	cancel()
	if err != nil {
		return res, err
	}

	lv := newLive()
	liveCtx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	go lv.follow(liveCtx, js, events.Names{})

	var outage sync.RWMutex
	w := &workload{cli: filepath.Join(bin, "troupe"), chart: filepath.Join(root, "test", "chaos", "testdata", "chart"),
		server: nc3.URLs(), namespace: Namespace, timeout: cfg.Timeout, grace: cfg.Grace, live: lv, outage: &outage, log: log}

	log("chaos: %d revisions over %d releases (%d at a time), a service SIGKILL every ~%s", cfg.Revisions, cfg.Releases, cfg.Parallel, cfg.KillEvery)
	started := time.Now()
	workCtx, stopWork := context.WithCancel(ctx)
	chaosDone := make(chan chaosStats)
	go func() {
		chaosDone <- runChaos(workCtx, cfg, nc3, svcs, &outage, func() float64 { return float64(w.issued.Load()) / float64(cfg.Revisions) })
	}()
	w.run(ctx, cfg.Releases, cfg.Revisions, cfg.Parallel)
	stopWork()
	stats := <-chaosDone
	if !stats.nodeKilled || !stats.restarted {
		log("chaos: the workload ended before every NATS fault; doing the rest now")
		finishChaos(ctx, cfg, nc3, &outage, &stats)
	}
	log("chaos: workload done in %s: %d service kills, a NATS node killed, the NATS cluster restarted", time.Since(started).Round(time.Second), svcs.Kills())

	// Settle: everything up, every flow ended or past its deadline plus grace.
	upCtx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	if err := nc3.WaitHealthy(upCtx); err != nil {
		cancel()
		return res, err
	}
	err = svcs.WaitAllUp(upCtx)
	cancel()
	if err != nil {
		return res, err
	}
	var evs []Event
	var malformed []string
	var failingSince time.Time
	for {
		if evs, malformed, err = CollectEvents(ctx, js, events.Names{}); err != nil {
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if time.Since(failingSince) > 5*time.Minute || ctx.Err() != nil {
				return res, fmt.Errorf("read the events stream: %w", err)
			}
			log("chaos: reading the stream: %v (again)", err)
			sleep(ctx, 2*time.Second)
			continue
		}
		failingSince = time.Time{}
		open, until := pending(evs, time.Now(), cfg.Grace)
		if open == 0 {
			break
		}
		log("chaos: %d flows not ended; waiting (at most until %s)", open, until.Format(time.TimeOnly))
		sleep(ctx, 5*time.Second)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	// The applier's deletes and the last applies settle in the cluster within moments.
	sleep(ctx, 3*time.Second)
	now := time.Now()
	objs, err := CollectObjects(ctx, kube.Client)
	if err != nil {
		return res, err
	}
	dls, err := CollectDeadLetters(ctx, js, events.Names{})
	if err != nil {
		return res, err
	}
	callErrs, calls := w.callErrors()
	res.Report = Check(Input{Events: evs, Objects: objs, DeadLetters: dls, CallErrors: callErrs, Malformed: malformed, Now: now, Grace: cfg.Grace,
		Kills: svcs.Kills() + stats.natsKills})
	res.Exits, res.Calls = svcs.Exits(), calls
	return res, nil
}

// pending counts the flows in evs with no terminal event whose deadline plus grace is still
// ahead, and returns the last of those moments.
func pending(evs []Event, now time.Time, grace time.Duration) (int, time.Time) {
	starts := map[string]Event{}
	ended := map[string]bool{}
	for _, e := range evs {
		switch {
		case startsFlow(e.Type):
			starts[e.ID] = e
		case events.EndsFlow(e.Type):
			ended[e.Correlation] = true
		}
	}
	n, until := 0, time.Time{}
	for id, s := range starts {
		f := flow{start: s}
		if d := f.deadline().Add(grace); !ended[id] && d.After(now) {
			n++
			if d.After(until) {
				until = d
			}
		}
	}
	return n, until
}

type chaosStats struct {
	nodeKilled, restarted bool
	natsKills             int
}

// runChaos kills a random service process every ~KillEvery until ctx ends; once progress
// passes 30 % it SIGKILLs one NATS node (started again NodeDown later), once it passes 65 % it
// restarts the whole NATS cluster (gracefully: SIGTERM, so acknowledged writes are on disk).
func runChaos(ctx context.Context, cfg Config, nc3 *NATSCluster, svcs *Services, outage *sync.RWMutex, progress func() float64) chaosStats {
	var st chaosStats
	for {
		jitter := time.Duration(rand.Int64N(int64(cfg.KillEvery))) - cfg.KillEvery/2
		sleep(ctx, cfg.KillEvery+jitter)
		if ctx.Err() != nil {
			return st
		}
		switch p := progress(); {
		case !st.nodeKilled && p >= 0.3:
			killNode(ctx, cfg, nc3, &st)
		case st.nodeKilled && !st.restarted && p >= 0.65:
			restartNATS(ctx, cfg, nc3, outage, &st)
		default:
			if id := svcs.KillRandom(); id != "" {
				cfg.Log("chaos: SIGKILL %s", id)
			}
		}
	}
}

func finishChaos(ctx context.Context, cfg Config, nc3 *NATSCluster, outage *sync.RWMutex, st *chaosStats) {
	if !st.nodeKilled {
		killNode(ctx, cfg, nc3, st)
	}
	if !st.restarted {
		restartNATS(ctx, cfg, nc3, outage, st)
	}
}

func killNode(ctx context.Context, cfg Config, nc3 *NATSCluster, st *chaosStats) {
	i := rand.IntN(nc3.Nodes())
	cfg.Log("chaos: SIGKILL nats node n%d", i+1)
	nc3.Kill(i)
	st.nodeKilled = true
	st.natsKills++
	sleep(ctx, cfg.NodeDown)
	if err := nc3.Start(i); err != nil {
		cfg.Log("chaos: restart nats node n%d: %v", i+1, err)
	}
	cfg.Log("chaos: nats node n%d started again", i+1)
}

func restartNATS(ctx context.Context, cfg Config, nc3 *NATSCluster, outage *sync.RWMutex, st *chaosStats) {
	outage.Lock()
	defer outage.Unlock()
	cfg.Log("chaos: restarting the whole NATS cluster")
	nc3.Stop()
	st.restarted = true
	st.natsKills += nc3.Nodes()
	for i := range nc3.Nodes() {
		if err := nc3.Start(i); err != nil {
			cfg.Log("chaos: start nats node n%d: %v", i+1, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := nc3.WaitHealthy(wctx); err != nil {
		cfg.Log("chaos: %v", err)
	}
	cfg.Log("chaos: NATS cluster back")
}

// NATSServerBinary returns bin/nats-server beside go.work, building it first from the
// nats-server module this module pins (its tool directive) when it is missing.
func NATSServerBinary(root string) (string, error) {
	path := filepath.Join(root, "bin", "nats-server")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	cmd := exec.Command("go", "build", "-o", path, "github.com/nats-io/nats-server/v2")
	cmd.Dir = filepath.Join(root, "test", "chaos")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build nats-server: %w\n%s", err, out)
	}
	return path, nil
}

// build builds the lean CLI and the four services into bin, as `make build` and test/e2e do.
func build(root, bin string) error {
	for _, args := range [][]string{
		{"-tags", "lean", "-o", filepath.Join(bin, "troupe"), "./cmd/troupe"},
		{"-o", bin + "/", "./services/renderer/cmd/renderer", "./services/applier/cmd/applier", "./services/health/cmd/health", "./services/history/cmd/history"},
	} {
		cmd := exec.Command("go", append([]string{"build"}, args...)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build: %w\n%s", err, out)
		}
	}
	return nil
}

// retry calls f until it succeeds or d passed.
func retry(ctx context.Context, d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		sleep(ctx, time.Second)
	}
}
