package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/troupe-dev/troupe/cmd/troupe/internal/benchenv"
	"github.com/troupe-dev/troupe/test/cluster"
)

// usage is what a process (or a group of them) cost: CPU seconds during the timed phases, and
// the peak resident set.
type usage struct {
	name string
	cpu  time.Duration
	rss  int64 // bytes
}

// clockTick is the kernel's USER_HZ, the unit of /proc/<pid>/stat's times: 100 on Linux.
const clockTick = 100

// cpuOf is pid's user+system CPU time so far, from /proc/<pid>/stat.
func cpuOf(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}

// peakRSSOf is pid's peak resident set so far (VmHWM), from /proc/<pid>/status.
func peakRSSOf(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// meter follows named long-lived processes from the start of the timed phases.
type meter struct {
	names []string
	pids  []int
	start []time.Duration
}

func newMeter(procs map[string]int, order []string) *meter {
	m := &meter{}
	for _, name := range order {
		pid, ok := procs[name]
		if !ok {
			continue
		}
		cpu, _ := cpuOf(pid)
		m.names, m.pids, m.start = append(m.names, name), append(m.pids, pid), append(m.start, cpu)
	}
	return m
}

// read is each process's CPU since newMeter and its peak RSS since it started.
func (m *meter) read() ([]usage, error) {
	var out []usage
	for i, pid := range m.pids {
		cpu, err := cpuOf(pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w (did it exit?)", m.names[i], err)
		}
		rss, err := peakRSSOf(pid)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.names[i], err)
		}
		out = append(out, usage{name: m.names[i], cpu: cpu - m.start[i], rss: rss})
	}
	return out, nil
}

// clusterProcs are the local cluster's processes by name (cluster.Binaries, in start order).
func clusterProcs(kube *cluster.Cluster) map[string]int {
	out := map[string]int{}
	for i, pid := range kube.Pids() {
		if i < len(cluster.Binaries) {
			out[cluster.Binaries[i]] = pid
		}
	}
	return out
}

var clusterOrder = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok"}

// startCluster starts a local cluster in dir and creates and settles the namespaces.
func (b *bench) startCluster(ctx context.Context, dir string, names []string) (*cluster.Cluster, error) {
	kube, err := cluster.Start(ctx, cluster.Options{Dir: dir + "/cluster", Profiling: b.profile != ""})
	if err != nil {
		return nil, err
	}
	if err := benchenv.Settle(ctx, kube.Client, names...); err != nil {
		kube.Stop()
		return nil, err
	}
	return kube, nil
}

// clis sums what the CLI processes of a run cost: their CPU (user+system, from wait4's rusage)
// and the largest peak RSS of any one.
type clis struct {
	mu sync.Mutex
	u  usage
}

// run runs cmd to its end and adds its cost; its output is in the error when it fails. The peak
// RSS is read from /proc while it runs (VmHWM, every 20 ms, so the last read is at most that
// before it exits): wait4's ru_maxrss is no use here, as Linux counts in it the parent's resident
// set at the exec (Go starts children with vfork, sharing the parent's memory until then), so
// every child would look as large as this program.
func (c *clis) run(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	done := make(chan struct{})
	var peak int64
	go func() {
		defer close(done)
		for {
			// A process that exited (a zombie until reaped) has no VmHWM left: the read fails.
			rss, err := peakRSSOf(cmd.Process.Pid)
			if err != nil {
				return
			}
			peak = max(peak, rss)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	err := cmd.Wait()
	<-done
	if st := cmd.ProcessState; st != nil {
		c.mu.Lock()
		c.u.cpu += st.UserTime() + st.SystemTime()
		c.u.rss = max(c.u.rss, peak)
		c.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out.Bytes())
	}
	return nil
}

func (c *clis) usage(name string) usage {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.u
	u.name = name
	return u
}
