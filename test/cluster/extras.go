package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultStorageClass is the cluster's default StorageClass: kube-controller-manager's hostPath
// provisioner (started with --enable-hostpath-provisioner, as for local clusters) makes a
// PersistentVolume for each claim, so StatefulSets with volumeClaimTemplates and charts with
// persistence on become ready, as on kind.
const DefaultStorageClass = "standard"

// LoadBalancerIP is the ingress address a LoadBalancer Service gets, as kind's cloud provider
// gives one.
const LoadBalancerIP = "127.0.0.1"

// createStorageClass makes DefaultStorageClass, the default one.
func (c *Cluster) createStorageClass(ctx context.Context) error {
	immediate := storagev1.VolumeBindingImmediate
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: DefaultStorageClass, Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner:       "kubernetes.io/host-path",
		VolumeBindingMode: &immediate,
	}
	_, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("cluster: default storage class: %w", err)
	}
	return nil
}

// loadBalancers gives every LoadBalancer Service without an ingress LoadBalancerIP, until ctx
// ends: the part of a cloud provider a chart's --wait needs.
func (c *Cluster) loadBalancers(ctx context.Context) {
	for ctx.Err() == nil {
		list, err := c.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		for i := range list.Items {
			c.giveIngress(ctx, &list.Items[i])
		}
		w, err := c.Client.CoreV1().Services("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			sleep(ctx, time.Second)
			continue
		}
		for ev := range w.ResultChan() {
			if svc, ok := ev.Object.(*corev1.Service); ok {
				c.giveIngress(ctx, svc)
			}
		}
		w.Stop()
	}
}

func (c *Cluster) giveIngress(ctx context.Context, svc *corev1.Service) {
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Status.LoadBalancer.Ingress) > 0 || svc.DeletionTimestamp != nil {
		return
	}
	svc = svc.DeepCopy()
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: LoadBalancerIP}}
	_, _ = c.Client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{}) // a conflict: the watch brings it again
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
