package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupe-dev/troupe/events"
)

// workload drives releases through the troupe CLI, each release's requests one after another
// (so its revision numbers are known), several releases at once.
type workload struct {
	cli       string // the troupe binary
	chart     string
	server    string
	namespace string
	timeout   time.Duration
	grace     time.Duration
	live      *live
	outage    *sync.RWMutex // held for writing while the whole NATS cluster restarts: no calls then
	log       func(format string, args ...any)

	issued atomic.Int64 // revisions requested
	mu     sync.Mutex
	errs   []CallError
	calls  int
}

// run requests revisions revisions spread over releases releases, parallel releases at a time.
func (w *workload) run(ctx context.Context, releases, revisions, parallel int) {
	sem := make(chan struct{}, max(1, parallel))
	var wg sync.WaitGroup
	for i := range releases {
		n := revisions / releases
		if i < revisions%releases {
			n++
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-sem }()
			w.release(ctx, fmt.Sprintf("r%d", i+1), n)
		})
	}
	wg.Wait()
}

// release takes one release through n revisions: an install, then upgrades mostly, with
// rollbacks to a revision that was ready, uninstalls (and installs again), dry runs; it waits
// for most requests to end before the next one, and fires some back to back (superseding).
func (w *workload) release(ctx context.Context, name string, n int) {
	rel := w.namespace + "/" + name
	installed := false
	var ready []int // revisions that became ready
	for k, revisions := 1, 0; revisions < n && ctx.Err() == nil; k++ {
		gen := fmt.Sprintf("%s-%d", name, k)
		set := "gen=" + gen + ",extra=" + strconv.FormatBool(rand.IntN(2) == 0)
		timeout := "--timeout=" + w.timeout.String()
		var args []string
		kind := "release"
		switch p := rand.Float64(); {
		case !installed:
			args = []string{"release", name, w.chart, "--set", set, timeout}
		case p < 0.10:
			kind = "uninstall"
			args = []string{"uninstall", name, timeout}
		case p < 0.25 && len(ready) >= 2:
			kind = "rollback"
			to := ready[rand.IntN(len(ready)-1)] // not the newest
			args = []string{"rollback", name, strconv.Itoa(to), "--reason", "chaos " + gen, timeout}
		case p < 0.30:
			kind = "dry-run"
			args = []string{"release", name, w.chart, "--set", set, "--dry-run", timeout}
		default:
			args = []string{"release", name, w.chart, "--set", set, timeout}
		}
		args = append(args, "-n", w.namespace, "--server", w.server)
		before := w.live.startsOf(rel)
		w.call(ctx, rel, args)
		if kind == "release" || kind == "dry-run" { // a rollback re-applies a revision; an uninstall ends them
			revisions++
			w.issued.Add(1)
		}
		flow := w.live.waitStart(ctx, rel, before, 20*time.Second)
		switch kind {
		case "uninstall":
			installed = false
		case "release", "rollback":
			installed = true
		}
		if flow == "" || (rand.IntN(10) < 3 && kind != "uninstall") {
			continue // back to back: the next request may supersede this one
		}
		end, rev, ok := w.live.waitEnd(ctx, flow, time.Now().Add(w.timeout+w.grace))
		if !ok {
			w.log("chaos: %s %s: no terminal event by its deadline", rel, kind)
			continue
		}
		if end.Type == events.TypeReady && kind == "release" && rev > 0 {
			ready = append(ready, rev)
		}
	}
}

// call runs the CLI; a failure is recorded with its output. No call runs while the whole NATS
// cluster restarts.
func (w *workload) call(ctx context.Context, rel string, args []string) {
	w.outage.RLock()
	defer w.outage.RUnlock()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, w.cli, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if ctx.Err() != nil {
		return
	}
	var exit *exec.ExitError
	if err != nil {
		msg := out.String()
		if !errors.As(err, &exit) {
			msg = err.Error() + ": " + msg
		}
		shown := strings.Join(trimServer(args), " ")
		w.errs = append(w.errs, CallError{Release: rel, Args: shown, Output: msg})
		w.log("chaos: troupe %s: %s", shown, strings.TrimSpace(msg))
	}
}

// trimServer drops --server and its URLs and the chart's path from args, for reports.
func trimServer(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--server":
			i++
		case strings.HasPrefix(args[i], "/"):
			out = append(out, filepath.Base(args[i]))
		default:
			out = append(out, args[i])
		}
	}
	return out
}

func (w *workload) callErrors() ([]CallError, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]CallError(nil), w.errs...), w.calls
}
