package cluster_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	appsac "k8s.io/client-go/applyconfigurations/apps/v1"
	coreac "k8s.io/client-go/applyconfigurations/core/v1"
	metaac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/troupe-dev/troupe/test/cluster"
)

var c *cluster.Cluster

func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &c)) }

func deployment(ns, name string, replicas int32, annotations map[string]string) *appsac.DeploymentApplyConfiguration {
	labels := map[string]string{"app": name}
	return appsac.Deployment(name, ns).WithSpec(appsac.DeploymentSpec().
		WithReplicas(replicas).
		WithSelector(metaac.LabelSelector().WithMatchLabels(labels)).
		WithTemplate(coreac.PodTemplateSpec().
			WithLabels(labels).WithAnnotations(annotations).
			WithSpec(coreac.PodSpec().WithContainers(coreac.Container().
				WithName("app").WithImage("ghcr.io/stefanprodan/podinfo:6.14.1")))))
}

func TestDeploymentServerSideApplyRollsOut(t *testing.T) {
	ns := c.Namespace(t)
	ctx := t.Context()
	d, err := c.Client.AppsV1().Deployments(ns).Apply(ctx, deployment(ns, "web", 3, nil), metav1.ApplyOptions{FieldManager: "troupe-test", Force: true})
	require.NoError(t, err)
	var managers []string
	for _, mf := range d.ManagedFields {
		if mf.Operation == metav1.ManagedFieldsOperationApply {
			managers = append(managers, mf.Manager)
		}
	}
	assert.Contains(t, managers, "troupe-test", "applied server-side, owned by its field manager")

	require.Eventually(t, func() bool {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 3
	}, 60*time.Second, 100*time.Millisecond, "3 replicas available")
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	require.NoError(t, err)
	require.Len(t, pods.Items, 3)
	for _, p := range pods.Items {
		assert.Equal(t, cluster.NodeName, p.Spec.NodeName, "scheduled onto the fake node")
		assert.Equal(t, corev1.PodRunning, p.Status.Phase)
	}

	// A second apply that changes one field changes only that field, and a conflicting
	// manager is refused unless it forces.
	_, err = c.Client.AppsV1().Deployments(ns).Apply(ctx, deployment(ns, "web", 1, nil), metav1.ApplyOptions{FieldManager: "someone-else"})
	require.Error(t, err)
	assert.True(t, apierrors.IsConflict(err), "field ownership is enforced: %v", err)
}

func TestJobCompletes(t *testing.T) {
	ns := c.Namespace(t)
	ctx := t.Context()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "migrate", Namespace: ns},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "migrate", Image: "busybox"}},
		}}},
	}
	_, err := c.Client.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		j, err := c.Client.BatchV1().Jobs(ns).Get(ctx, "migrate", metav1.GetOptions{})
		return err == nil && j.Status.Succeeded == 1
	}, 60*time.Second, 100*time.Millisecond, "job succeeded")
}

// TestRealChartsRun: what real charts need of a cluster is there, as on kind — room on the node
// for ephemeral-storage requests, claims bound by the default StorageClass (a StatefulSet with
// volumeClaimTemplates becomes ready), and an ingress address for a LoadBalancer Service.
func TestRealChartsRun(t *testing.T) {
	ns := c.Namespace(t)
	ctx := t.Context()
	node, err := c.Client.CoreV1().Nodes().Get(ctx, cluster.NodeName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.False(t, node.Status.Allocatable.StorageEphemeral().IsZero(), "ephemeral-storage allocatable")

	labels := map[string]string{"app": "db"}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "db", Image: "postgres", VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceEphemeralStorage: resource.MustParse("50Mi")}},
			}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			}}},
		},
	}
	_, err = c.Client.AppsV1().StatefulSets(ns).Create(ctx, sts, metav1.CreateOptions{})
	require.NoError(t, err)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: labels, Ports: []corev1.ServicePort{{Port: 5432}}}}
	_, err = c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	require.NoError(t, err)

	require.Eventually(t, func() bool {
		pvc, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-db-0", metav1.GetOptions{})
		return err == nil && pvc.Status.Phase == corev1.ClaimBound && *pvc.Spec.StorageClassName == cluster.DefaultStorageClass
	}, 60*time.Second, 100*time.Millisecond, "the claim bound, by the default StorageClass")
	require.Eventually(t, func() bool {
		s, err := c.Client.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
		return err == nil && s.Status.ReadyReplicas == 1
	}, 60*time.Second, 100*time.Millisecond, "the StatefulSet ready")
	require.Eventually(t, func() bool {
		s, err := c.Client.CoreV1().Services(ns).Get(ctx, "db", metav1.GetOptions{})
		return err == nil && len(s.Status.LoadBalancer.Ingress) == 1 && s.Status.LoadBalancer.Ingress[0].IP == cluster.LoadBalancerIP
	}, 30*time.Second, 100*time.Millisecond, "the LoadBalancer Service has an ingress")
}

func TestCRDEstablishedAndCustomResource(t *testing.T) {
	ns := c.Namespace(t)
	ctx := t.Context()
	ext, err := apiextclient.NewForConfig(c.Config)
	require.NoError(t, err)
	group := "widgets" + strconv.FormatInt(time.Now().UnixNano()%100000, 10) + ".troupe.dev"
	crd := &apiextv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "widgets." + group},
		Spec: apiextv1.CustomResourceDefinitionSpec{
			Group: group,
			Names: apiextv1.CustomResourceDefinitionNames{Plural: "widgets", Singular: "widget", Kind: "Widget", ListKind: "WidgetList"},
			Scope: apiextv1.NamespaceScoped,
			Versions: []apiextv1.CustomResourceDefinitionVersion{{
				Name: "v1", Served: true, Storage: true,
				Schema: &apiextv1.CustomResourceValidation{OpenAPIV3Schema: &apiextv1.JSONSchemaProps{
					Type: "object",
					Properties: map[string]apiextv1.JSONSchemaProps{
						"spec": {Type: "object", Properties: map[string]apiextv1.JSONSchemaProps{"size": {Type: "integer", Minimum: ptr(1.0)}}},
					},
				}},
			}},
		},
	}
	_, err = ext.ApiextensionsV1().CustomResourceDefinitions().Create(ctx, crd, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = ext.ApiextensionsV1().CustomResourceDefinitions().Delete(context.Background(), crd.Name, metav1.DeleteOptions{})
	})
	require.Eventually(t, func() bool {
		got, err := ext.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
				return true
			}
		}
		return false
	}, 30*time.Second, 100*time.Millisecond, "CRD Established")

	dyn, err := dynamic.NewForConfig(c.Config)
	require.NoError(t, err)
	gvr := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
	w := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": group + "/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w1", "namespace": ns},
		"spec":     map[string]any{"size": int64(3)},
	}}
	var created *unstructured.Unstructured
	require.Eventually(t, func() bool { // discovery of a new CRD can lag its Established condition
		created, err = dyn.Resource(gvr).Namespace(ns).Create(ctx, w, metav1.CreateOptions{})
		return err == nil
	}, 10*time.Second, 100*time.Millisecond, "create custom resource: %v", err)
	assert.Equal(t, "w1", created.GetName())
	got, err := dyn.Resource(gvr).Namespace(ns).Get(ctx, "w1", metav1.GetOptions{})
	require.NoError(t, err)
	size, _, _ := unstructured.NestedInt64(got.Object, "spec", "size")
	assert.EqualValues(t, 3, size)

	// The CRD's schema is enforced by the API server.
	bad := w.DeepCopy()
	bad.SetName("w2")
	require.NoError(t, unstructured.SetNestedField(bad.Object, int64(0), "spec", "size"))
	_, err = dyn.Resource(gvr).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{})
	assert.True(t, apierrors.IsInvalid(err), "schema violation rejected: %v", err)
}

func TestRBACDeniesServiceAccount(t *testing.T) {
	ns := c.Namespace(t)
	ctx := t.Context()
	_, err := c.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "configmaps"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "list", "create"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	_, err = c.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "deployer-configmaps"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "configmaps"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "deployer", Namespace: ns}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)

	// The service account's own token, issued by the API server (TokenRequest).
	tok, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "deployer", &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = tok.Status.Token
	// And the same identity by impersonation, as the applier will use it.
	imp := rest.CopyConfig(c.Config)
	imp.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":deployer"}

	for name, cfg := range map[string]*rest.Config{"token": cfg, "impersonation": imp} {
		t.Run(name, func(t *testing.T) {
			sa, err := kubernetes.NewForConfig(cfg)
			require.NoError(t, err)
			_, err = sa.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "allowed-" + name}}, metav1.CreateOptions{})
			assert.NoError(t, err, "granted: create configmaps")
			_, err = sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			assert.True(t, apierrors.IsForbidden(err), "not granted: list secrets: %v", err)
			_, err = sa.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			assert.True(t, apierrors.IsForbidden(err), "not granted: create deployments: %v", err)
			_, err = sa.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
			assert.True(t, apierrors.IsForbidden(err), "not granted outside its namespace: %v", err)
		})
	}
}

func TestFaults(t *testing.T) {
	ns := c.Namespace(t)
	ctx := t.Context()
	tests := []struct {
		fault   string
		phase   corev1.PodPhase
		waiting string // container waiting reason, if any
	}{
		{cluster.FaultCrashLoop, corev1.PodRunning, "CrashLoopBackOff"},
		{cluster.FaultImagePull, corev1.PodPending, "ImagePullBackOff"},
		{cluster.FaultNeverReady, corev1.PodRunning, ""},
	}
	for _, tc := range tests {
		t.Run(tc.fault, func(t *testing.T) {
			name := "fault-" + tc.fault
			_, err := c.Client.AppsV1().Deployments(ns).Apply(ctx,
				deployment(ns, name, 1, map[string]string{cluster.FaultAnnotation: tc.fault}),
				metav1.ApplyOptions{FieldManager: "troupe-test"})
			require.NoError(t, err)
			var pod corev1.Pod
			require.Eventually(t, func() bool {
				pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
				if err != nil || len(pods.Items) != 1 || len(pods.Items[0].Status.ContainerStatuses) != 1 {
					return false
				}
				pod = pods.Items[0]
				return true
			}, 60*time.Second, 100*time.Millisecond, "the fake node reported the pod's containers")
			assert.Equal(t, tc.phase, pod.Status.Phase)
			cs := pod.Status.ContainerStatuses[0]
			assert.False(t, cs.Ready)
			if tc.waiting != "" {
				require.NotNil(t, cs.State.Waiting)
				assert.Equal(t, tc.waiting, cs.State.Waiting.Reason)
			} else {
				assert.NotNil(t, cs.State.Running)
			}
			// It stays that way: the Deployment never becomes available.
			time.Sleep(2 * time.Second)
			d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			require.NoError(t, err)
			assert.Zero(t, d.Status.AvailableReplicas)
		})
	}
}

// TestStopsClean starts a cluster of its own and stops it: no process and no port is left.
func TestStopsClean(t *testing.T) {
	own, err := cluster.Start(t.Context(), cluster.Options{})
	require.NoError(t, err)
	pids := own.Pids()
	require.Len(t, pids, len(cluster.Binaries))
	server := own.Config.Host
	dir := own.Dir
	own.Stop()

	for _, pid := range pids {
		err := syscall.Kill(pid, 0)
		assert.True(t, errors.Is(err, syscall.ESRCH), "process %d is gone (%v)", pid, err)
	}
	_, err = net.DialTimeout("tcp", server[len("https://"):], time.Second)
	assert.Error(t, err, "the API server's port is closed")
	_, err = os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "its directory is removed")
}

func ptr[T any](v T) *T { return &v }

// TestStopsWhenContextEnds: a cluster started with a context stops by itself when it ends.
func TestStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	own, err := cluster.Start(ctx, cluster.Options{})
	require.NoError(t, err)
	pids := own.Pids()
	cancel()
	require.Eventually(t, func() bool {
		for _, pid := range pids {
			if !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "every process gone after ctx ended")
}
