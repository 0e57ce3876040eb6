package chaos

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/troupe-dev/troupe/test/cluster"
)

// NATSCluster is a cluster of nats-server processes on loopback, JetStream on every node. Each
// node keeps its ports and store across restarts, so clients reconnect to the URLs they know.
type NATSCluster struct {
	bin   string
	dir   string
	nodes []*natsNode
}

type natsNode struct {
	name                   string
	client, route, monitor int
	conf, store, log       string
	mu                     sync.Mutex
	proc                   *proc
}

// StartNATS starts n nodes (binary bin, files under dir) and waits until JetStream answers on
// every one of them.
func StartNATS(ctx context.Context, bin, dir string, n int) (*NATSCluster, error) {
	ports, err := cluster.FreePorts(3 * n)
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{bin: bin, dir: dir}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+1]))
	}
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), client: ports[3*i], route: ports[3*i+1], monitor: ports[3*i+2]}
		nd.conf = filepath.Join(dir, nd.name+".conf")
		nd.store = filepath.Join(dir, nd.name)
		nd.log = filepath.Join(dir, nd.name+".log")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 256MB
  max_file_store: 2GB
}
cluster {
  name: chaos
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, nd.name, nd.client, nd.monitor, nd.store, nd.route, strings.Join(routes, ", "))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, nd)
	}
	for i := range c.nodes {
		if err := c.Start(i); err != nil {
			c.Stop()
			return nil, err
		}
	}
	if err := c.WaitHealthy(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// URLs is every node's client URL, comma-separated, as --server takes them.
func (c *NATSCluster) URLs() string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, fmt.Sprintf("nats://127.0.0.1:%d", nd.client))
	}
	return strings.Join(out, ",")
}

// Nodes is the number of nodes.
func (c *NATSCluster) Nodes() int { return len(c.nodes) }

// Start starts node i (not waiting for it to be healthy).
func (c *NATSCluster) Start(i int) error {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	p, err := startProc(nd.name, c.bin, nd.log, "-c", nd.conf)
	if err != nil {
		return err
	}
	nd.proc = p
	return nil
}

// Kill SIGKILLs node i and waits until it is gone.
func (c *NATSCluster) Kill(i int) {
	nd := c.nodes[i]
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.proc != nil {
		nd.proc.kill()
	}
}

// Stop stops every node gracefully (SIGTERM, then SIGKILL after 30 s), all at once.
func (c *NATSCluster) Stop() {
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		wg.Go(func() {
			nd.mu.Lock()
			defer nd.mu.Unlock()
			if nd.proc != nil {
				nd.proc.stop(30 * time.Second)
			}
		})
	}
	wg.Wait()
}

// WaitHealthy waits until every node's /healthz says JetStream is ready (a node answers 200
// once it has caught up with the meta leader and its streams).
func (c *NATSCluster) WaitHealthy(ctx context.Context) error {
	for _, nd := range c.nodes {
		if err := c.waitNode(ctx, nd); err != nil {
			return err
		}
	}
	return nil
}

func (c *NATSCluster) waitNode(ctx context.Context, nd *natsNode) error {
	client := &http.Client{Timeout: 2 * time.Second}
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.monitor)
	var last string
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			last = resp.Status
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		} else {
			last = err.Error()
		}
		nd.mu.Lock()
		p := nd.proc
		nd.mu.Unlock()
		if p != nil && p.exited() {
			return fmt.Errorf("nats %s exited: %s", nd.name, tailFile(nd.log, 20))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nats %s not healthy (last: %s): %w", nd.name, last, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
