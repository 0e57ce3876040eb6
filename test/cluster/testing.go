package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Main runs a package's tests against one cluster shared by all of them: call it from
// TestMain as os.Exit(cluster.Main(m, &c)). It starts the cluster, sets *c, runs the tests and
// stops the cluster. A cluster that does not start fails the run, with the reason.
func Main(m *testing.M, c **Cluster) int {
	ctx := context.Background()
	started := time.Now()
	cl, err := Start(ctx, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "cluster: started in %s\n", time.Since(started).Round(10*time.Millisecond))
	*c = cl
	defer cl.Stop()
	return m.Run()
}

// ForTest starts a cluster of the test's own, stopped when the test ends. Prefer one cluster per
// package (Main) unless the test needs the cluster to itself.
func ForTest(t testing.TB) *Cluster {
	t.Helper()
	c, err := Start(t.Context(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// Namespace creates a namespace for one test, named after it, and deletes it when the test ends.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	name := strings.ToLower(t.Name())
	name = strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			return r
		}
		return '-'
	}, name)
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-") + "-" + fmt.Sprint(time.Now().UnixNano()%100000)
	_, err := c.Client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	return name
}
