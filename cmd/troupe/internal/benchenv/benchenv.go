// Package benchenv is what troupe's end-to-end benchmarks (bench, benchscale) share: where the
// repository is, namespaces made and settled before any clock, work run so many at once.
package benchenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Root is the directory of the go.work above the working directory.
func Root() (string, error) {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.work above the working directory")
		}
		dir = filepath.Dir(dir)
	}
}

// Settle creates the namespaces and waits until the controllers have settled them (the default
// ServiceAccount a pod is admitted with, the root CA ConfigMap): no side's clock should run while
// the cluster sets up namespaces.
func Settle(ctx context.Context, kube kubernetes.Interface, names ...string) error {
	_, err := Parallel(names, 20, func(_ int, n string) error {
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2*time.Minute + time.Duration(len(names))*100*time.Millisecond)
	for _, n := range names {
		for {
			_, errSA := kube.CoreV1().ServiceAccounts(n).Get(ctx, "default", metav1.GetOptions{})
			_, errCA := kube.CoreV1().ConfigMaps(n).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
			if errSA == nil && errCA == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("namespace %s not settled: %v %v", n, errSA, errCA)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// Parallel runs f for every item, par at once, and returns the wall time and the first error.
func Parallel(items []string, par int, f func(i int, item string) error) (time.Duration, error) {
	start := time.Now()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i, it := range items {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(i, it); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return time.Since(start), first
}
