package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Binaries the cluster runs, all expected in Options.BinDir (`make cluster-bin` builds them).
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}

// NodeName is the fake node's name.
const NodeName = "kwok-node-0"

// Options configure Start. Zero values take the defaults named on each field.
type Options struct {
	// BinDir holds the binaries. Default: $TROUPE_CLUSTER_BIN, else the running executable's
	// directory if it holds them, else bin/ beside the go.work found above the working
	// directory (ProcessBinDirs).
	BinDir string
	// Dir holds the PKI, kubeconfigs, etcd's data and every process's log. Default: a new
	// temporary directory, removed by Stop.
	Dir string
	// Durable keeps etcd's writes on disk with fsync. Default off: tests don't need it, and
	// --unsafe-no-fsync makes etcd much faster.
	Durable bool
	// StartTimeout bounds Start. Default 2m.
	StartTimeout time.Duration
	// Profiling serves the API server's /debug/pprof (off by default, as on a hardened
	// cluster): for benchmarks that ask where its CPU goes.
	Profiling bool
	// Log receives one line per start step. Optional.
	Log func(format string, args ...any)
}

// Cluster is a running local control plane.
type Cluster struct {
	// Config is an admin client configuration (group system:masters).
	Config *rest.Config
	// Kubeconfig is the path of an admin kubeconfig file for kubectl and other tools.
	Kubeconfig string
	// Dir holds the cluster's files and logs.
	Dir string
	// Client is an admin clientset.
	Client kubernetes.Interface

	mu      sync.Mutex // guards procs and Dir against Stop from ctx and from the caller at once
	procs   []*process
	ownsDir bool
	stopLB  context.CancelFunc // ends the load-balancer loop
}

// Start runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, waiting
// until each is ready and the fake node is Ready. On error, everything it started is stopped. The
// cluster lives until Stop, until ctx ends, or until the process that started it dies.
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.StartTimeout <= 0 {
		o.StartTimeout = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	life := ctx
	ctx, cancel := context.WithTimeout(ctx, o.StartTimeout)
	defer cancel()
	bin, err := ProcessBinDirs(cmp.Or(o.BinDir, os.Getenv("TROUPE_CLUSTER_BIN")), "Options.BinDir or $TROUPE_CLUSTER_BIN").Find()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: o.Dir}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "troupe-cluster-"); err != nil {
			return nil, err
		}
		c.ownsDir = true
	} else if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	p, err := newPKI(c.Dir)
	if err != nil {
		return nil, fmt.Errorf("cluster: pki: %w", err)
	}
	ports, err := FreePorts(6)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort, cmPort, schedPort, kwokPort := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	apiURL := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := p.issue("apiserver", "kube-apiserver", nil, true,
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.96.0.1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}); err != nil {
		return nil, err
	}
	kubeconfigs := map[string]string{}
	for _, u := range []struct{ name, cn string }{
		{"admin", "troupe-admin"}, {"controller-manager", "system:kube-controller-manager"},
		{"scheduler", "system:kube-scheduler"}, {"kwok", "kwok"},
	} {
		if err := p.issue(u.name, u.cn, []string{"system:masters"}, false, nil, nil); err != nil {
			return nil, err
		}
		path := filepath.Join(c.Dir, u.name+".kubeconfig")
		if err := writeKubeconfig(path, apiURL, p.path("ca.crt"), p.path(u.name+".crt"), p.path(u.name+".key")); err != nil {
			return nil, err
		}
		kubeconfigs[u.name] = path
	}
	c.Kubeconfig = kubeconfigs["admin"]

	// etcd
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	etcdArgs := []string{
		"--name=troupe", "--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + etcdURL, "--advertise-client-urls=" + etcdURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=troupe=" + peerURL, "--log-level=warn",
	}
	if !o.Durable {
		etcdArgs = append(etcdArgs, "--unsafe-no-fsync")
	}
	o.Log("cluster: starting etcd on %s", etcdURL)
	if err := c.run(bin, "etcd", etcdArgs...); err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, "etcd", etcdURL+"/health", nil); err != nil {
		return nil, err
	}

	// kube-apiserver
	o.Log("cluster: starting kube-apiserver on %s", apiURL)
	if err := c.run(bin, "kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		// Loopback may not be advertised; nothing reaches the API server through its Service here.
		"--advertise-address=10.0.0.1", "--endpoint-reconciler-type=none",
		"--tls-cert-file="+p.path("apiserver.crt"), "--tls-private-key-file="+p.path("apiserver.key"),
		"--client-ca-file="+p.path("ca.crt"),
		"--service-account-key-file="+p.path("sa.pub"), "--service-account-signing-key-file="+p.path("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		// A /16: a /24 runs out of ClusterIPs after ~250 Services.
		"--service-cluster-ip-range=10.96.0.0/16",
		"--authorization-mode=RBAC", "--allow-privileged=true", "--profiling="+strconv.FormatBool(o.Profiling),
		"--max-requests-inflight=1000", "--max-mutating-requests-inflight=500",
	); err != nil {
		return nil, err
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	c.Config.QPS, c.Config.Burst = 200, 400
	tlsCfg, err := rest.TLSConfigFor(c.Config)
	if err != nil {
		return nil, err
	}
	if err := c.waitHTTP(ctx, "kube-apiserver", apiURL+"/readyz", tlsCfg); err != nil {
		return nil, err
	}
	if c.Client, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, err
	}

	// Controllers, scheduler, fake node.
	o.Log("cluster: starting kube-controller-manager, kube-scheduler and kwok")
	if err := c.run(bin, "kube-controller-manager",
		"--kubeconfig="+kubeconfigs["controller-manager"],
		"--authentication-kubeconfig="+kubeconfigs["controller-manager"],
		"--authorization-kubeconfig="+kubeconfigs["controller-manager"],
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(cmPort),
		"--service-account-private-key-file="+p.path("sa.key"), "--root-ca-file="+p.path("ca.crt"),
		"--service-cluster-ip-range=10.96.0.0/16", "--leader-elect=false",
		// The default client QPS (20) makes a burst of 100 Deployments take ~35 s to become
		// available; raised, with more workers, the cluster keeps up with troupe's benchmarks.
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--concurrent-deployment-syncs=20", "--concurrent-replicaset-syncs=20",
		"--concurrent-service-endpoint-syncs=20", "--concurrent-gc-syncs=40",
		"--controllers=*,-nodeipam",
		"--enable-hostpath-provisioner=true", // the default StorageClass's: claims bind, as on kind
	); err != nil {
		return nil, err
	}
	schedCfg := filepath.Join(c.Dir, "scheduler.yaml")
	if err := os.WriteFile(schedCfg, []byte(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: `+kubeconfigs["scheduler"]+`
  qps: 500
  burst: 1000
leaderElection:
  leaderElect: false
`), 0o644); err != nil {
		return nil, err
	}
	if err := c.run(bin, "kube-scheduler",
		"--config="+schedCfg,
		"--authentication-kubeconfig="+kubeconfigs["scheduler"], "--authorization-kubeconfig="+kubeconfigs["scheduler"],
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(schedPort),
	); err != nil {
		return nil, err
	}
	stages, err := stageFiles(c.Dir)
	if err != nil {
		return nil, err
	}
	kwokArgs := []string{
		"--kubeconfig=" + kubeconfigs["kwok"],
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--node-lease-duration-seconds=40", "--cidr=10.244.0.1/16", "--node-ip=10.0.0.10",
		"--server-address=127.0.0.1:" + strconv.Itoa(kwokPort),
	}
	for _, s := range stages {
		kwokArgs = append(kwokArgs, "--config="+s)
	}
	if err := c.run(bin, "kwok", kwokArgs...); err != nil {
		return nil, err
	}
	if err := c.createNode(ctx); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := c.createStorageClass(ctx); err != nil {
		return nil, err
	}
	lb, stopLB := context.WithCancel(context.WithoutCancel(life))
	c.mu.Lock()
	c.stopLB = stopLB
	c.mu.Unlock()
	go c.loadBalancers(lb)
	context.AfterFunc(life, c.Stop)
	o.Log("cluster: ready (kubeconfig %s)", c.Kubeconfig)
	return c, nil
}

// Stop ends every process, in reverse order of start (the API server before etcd, which it would
// otherwise wait on for minutes), waits for each, and removes Dir if Start created it. Safe to
// call more than once.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopLB != nil {
		c.stopLB()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		c.procs[i].stop(15 * time.Second)
	}
	c.procs = nil
	if c.ownsDir && c.Dir != "" {
		_ = os.RemoveAll(c.Dir)
		c.Dir = ""
	}
}

// Pids returns the pids of the running processes, in start order.
func (c *Cluster) Pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, p := range c.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// Logs returns the path of a component's log file ("kube-apiserver", "etcd", …).
func (c *Cluster) Logs(name string) string { return filepath.Join(c.Dir, name+".log") }

// WriteKubeconfig copies the admin kubeconfig to path, for tools outside the process.
func (c *Cluster) WriteKubeconfig(path string) error {
	b, err := os.ReadFile(c.Kubeconfig)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func (c *Cluster) run(bin, name string, args ...string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, err := startProcess(c.Dir, filepath.Join(bin, name), name, args...)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// waitHTTP polls url until it answers 200, failing early if any started process exited.
func (c *Cluster) waitHTTP(ctx context.Context, name, url string, tlsCfg *tls.Config) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer client.CloseIdleConnections()
	var last string
	return c.poll(ctx, name, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK
	}, func() string { return last })
}

// poll calls ready every 100ms until it is true; it fails when ctx ends or a process dies, with
// that process's log tail.
func (c *Cluster) poll(ctx context.Context, what string, ready func() bool, last func() string) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if ready() {
			return nil
		}
		for _, p := range c.procs {
			if ok, err := p.exited(); ok {
				return fmt.Errorf("cluster: %s exited (%v) while waiting for %s; last log lines:\n%s", p.name, err, what, p.tail(20))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: %s not ready: %w (last: %s); logs in %s", what, ctx.Err(), last(), c.Dir)
		case <-t.C:
		}
	}
}

// createNode registers the fake node, for kwok to manage.
func (c *Cluster) createNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "type": "kwok"},
		},
		Status: corev1.NodeStatus{
			// Room for real charts' requests (Bitnami's request ephemeral-storage), and for
			// `make bench-scale -n 10000`'s pods mid-rollout.
			Capacity: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("512Gi"),
				corev1.ResourcePods: resource.MustParse("25000"), corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
			},
			Allocatable: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("64"), corev1.ResourceMemory: resource.MustParse("512Gi"),
				corev1.ResourcePods: resource.MustParse("25000"), corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
			},
		},
	}
	_, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster: create node: %w", err)
	}
	return nil
}

// waitReady waits for the fake node to be Ready and the controllers to have made the default
// namespace's service account (pods cannot be created before it exists).
func (c *Cluster) waitReady(ctx context.Context) error {
	var last string
	return c.poll(ctx, "node "+NodeName+" Ready and default service account", func() bool {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false
		}
		ready := false
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			last = "node not Ready"
			return false
		}
		if _, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			last = err.Error()
			return false
		}
		return true
	}, func() string { return last })
}

func writeKubeconfig(path, server, ca, cert, key string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["troupe"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: ca}
	cfg.AuthInfos["troupe"] = &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key}
	cfg.Contexts["troupe"] = &clientcmdapi.Context{Cluster: "troupe", AuthInfo: "troupe"}
	cfg.CurrentContext = "troupe"
	return clientcmd.WriteToFile(*cfg, path)
}
