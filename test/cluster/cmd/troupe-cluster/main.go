// Command troupe-cluster runs the local Kubernetes control plane of package cluster in the
// foreground until interrupted, with its admin kubeconfig written where kubectl and troupe can
// use it. `make cluster-up` runs it in the background and `make cluster-down` stops it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/troupe-dev/troupe/test/cluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "troupe-cluster:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", ".troupe/cluster", "where the cluster keeps its PKI, data and logs (emptied first)")
	kubeconfig := flag.String("kubeconfig", ".troupe/kubeconfig", "where to write the admin kubeconfig")
	bin := flag.String("bin", "", "directory of the cluster's binaries (default: $TROUPE_CLUSTER_BIN, else beside this executable, else bin/ beside go.work)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(abs); err != nil {
		return err
	}
	c, err := cluster.Start(ctx, cluster.Options{Dir: abs, BinDir: *bin, Log: func(f string, a ...any) { fmt.Printf(f+"\n", a...) }})
	if err != nil {
		return err
	}
	defer c.Stop()
	if err := c.WriteKubeconfig(*kubeconfig); err != nil {
		return err
	}
	fmt.Printf("cluster ready: kubectl --kubeconfig %s get nodes (logs in %s)\n", *kubeconfig, abs)
	<-ctx.Done()
	fmt.Println("cluster: stopping")
	c.Stop()
	fmt.Println("cluster: stopped")
	return nil
}
