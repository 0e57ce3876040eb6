package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/natstest"
)

// rendered is `troupe install --dry-run`'s output, by kind and name.
type rendered map[string]map[string]any

func (r rendered) get(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	o, ok := r[kind+"/"+name]
	require.True(t, ok, "the chart renders %s/%s", kind, name)
	return o
}

// container is the first container of a Deployment's or Job's pod template.
func (r rendered) container(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	spec := r.get(t, kind, name)["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	return spec["containers"].([]any)[0].(map[string]any)
}

// secretFile writes key of the rendered Secret name to dir and returns its path.
func (r rendered) secretFile(t *testing.T, dir, name, key string) string {
	t.Helper()
	data := r.get(t, "Secret", name)["stringData"].(map[string]any)
	path := filepath.Join(dir, key)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, []byte(data[key].(string)), 0o600))
	return path
}

// TestChartConfig runs troupe as its chart configures it, on this machine: the NATS
// configuration the chart renders (the NATS chart's, including troupe's authorization) run by
// three nats-server processes; the provisioning Job's command; each service a process with its
// rendered Deployment's arguments and its rendered credentials, and — for those that reach the
// cluster — a token of its own service account, whose rendered RBAC is applied (so the applier
// applies only by impersonating the namespace's account the chart makes). A release goes through
// install, upgrade (with a NATS node SIGKILLed mid-release), rollback and uninstall, each
// revision ending once. Only addresses and file paths are rewritten.
func TestChartConfig(t *testing.T) {
	const name, ns = "troupe-cc", "troupe-cc"
	target := env.kube.Namespace(t)
	keys, dir := t.TempDir(), t.TempDir()
	r := troupe(t, "install", "--dry-run", "-n", ns, "--name", name, "--keys", keys, "--set", "namespaces={"+target+"}")
	require.Equal(t, 0, r.code, r)
	objs := rendered{}
	var rbac bytes.Buffer
	for _, doc := range strings.Split(r.stdout, "\n---\n") {
		var o map[string]any
		require.NoError(t, yaml.Unmarshal([]byte(doc), &o))
		if o == nil {
			continue
		}
		kind, meta := o["kind"].(string), o["metadata"].(map[string]any)
		objs[kind+"/"+meta["name"].(string)] = o
		switch kind {
		case "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			rbac.WriteString("---\n" + doc + "\n")
		}
	}
	t.Cleanup(func() { _ = env.kube.Client.CoreV1().Namespaces().Delete(t.Context(), ns, metav1.DeleteOptions{}) })
	kubectl := exec.Command(filepath.Join(env.root, "bin", "kubectl"), "--kubeconfig", env.kube.Kubeconfig, "apply", "--server-side", "-f", "-")
	kubectl.Stdin = &rbac
	out, err := kubectl.CombinedOutput()
	require.NoError(t, err, "%s", out)

	// NATS: the rendered nats.conf and the auth.conf it includes, laid out as the pod mounts them.
	conf := objs.get(t, "ConfigMap", name+"-nats-config")["data"].(map[string]any)["nats.conf"].(string)
	auth := objs.get(t, "Secret", "troupe-nats-auth")["stringData"].(map[string]any)["auth.conf"].(string)
	cluster := natstest.PlanConfig(t, 3, func(i int, dir string) (string, []string) {
		file := filepath.Join(dir, "etc", "nats-config", "nats.conf")
		require.NoError(t, os.MkdirAll(filepath.Dir(file), 0o755))
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "etc", "troupe-nats-auth"), 0o755))
		paths := strings.NewReplacer(`"store_dir": "/data"`, fmt.Sprintf("%q: %q", "store_dir", filepath.Join(dir, "jetstream")),
			`"pid_file": "/var/run/nats/nats.pid"`, fmt.Sprintf("%q: %q", "pid_file", filepath.Join(dir, "nats.pid")))
		local := paths.Replace(conf)
		require.NotEqual(t, conf, local, "the rendered store_dir and pid_file")
		require.NoError(t, os.WriteFile(file, []byte(local), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "etc", "troupe-nats-auth", "auth.conf"), []byte(auth), 0o644))
		return file, []string{fmt.Sprintf("SERVER_NAME=%s-nats-%d", name, i)}
	})
	cluster.StartAll()
	urls := cluster.URLs()

	// local rewrites the addresses and paths of rendered arguments.
	creds := func(id string) string {
		return objs.secretFile(t, filepath.Join(dir, "creds"), "troupe-"+id+"-creds", id+".creds")
	}
	local := func(args []any, kubeconfig string) []string {
		var out []string
		for _, a := range args {
			s := a.(string)
			switch {
			case strings.HasPrefix(s, "--server="):
				s = "--server=" + urls
			case strings.HasPrefix(s, "--creds=/var/run/troupe/creds/"):
				s = "--creds=" + creds(strings.TrimSuffix(strings.TrimPrefix(s, "--creds=/var/run/troupe/creds/"), ".creds"))
			case strings.HasPrefix(s, "--http-listen="):
				s = "--http-listen=127.0.0.1:0"
			case s == "--in-cluster":
				continue
			}
			out = append(out, s)
		}
		if kubeconfig != "" {
			out = append(out, "--kubeconfig="+kubeconfig)
		}
		return out
	}

	// The provisioning Job's command, as the admin.
	job := objs.container(t, "Job", name+"-provision-1")
	assert.Equal(t, "ghcr.io/troupe-dev/troupe-history:0.1.0", job["image"])
	provision := exec.Command(filepath.Join(env.bin, "history"), local(job["args"].([]any), "")...)
	out, err = provision.CombinedOutput()
	require.NoError(t, err, "the provisioning Job: %s", out)
	nc, err := nats.Connect(urls, nats.UserCredentials(creds("admin")))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stream, err := js.Stream(t.Context(), events.StreamName)
	require.NoError(t, err)
	assert.Equal(t, 3, stream.CachedInfo().Config.Replicas, "the events stream at R3")

	// Each service with its Deployment's arguments, as its own service account.
	for _, svc := range services {
		c := objs.container(t, "Deployment", name+"-"+svc)
		assert.Equal(t, "ghcr.io/troupe-dev/troupe-"+svc+":0.1.0", c["image"])
		kubeconfig := ""
		if svc != "history" {
			kubeconfig = serviceAccountKubeconfig(t, dir, ns, name+"-"+svc)
		}
		args := local(c["args"].([]any), kubeconfig)
		if svc == "history" {
			args = append(args, "--api-listen=127.0.0.1:0")
		}
		p, err := startProcess(svc, `"`+svc+` ready"`, args...)
		require.NoError(t, err, "%s %v", svc, args)
		t.Cleanup(func() {
			p.stop()
			if t.Failed() {
				b, _ := os.ReadFile(p.log)
				t.Logf("--- %s (last 5000 bytes)\n%s", svc, tail(b, 5000))
			}
		})
	}

	cli := creds("cli")
	run := func(args ...string) result {
		t.Helper()
		return troupeOn(t, urls, append(args, "--creds", cli)...)
	}
	r = run("release", "hello", chart(), "-n", target, "--wait")
	require.Equal(t, 0, r.code, r)
	assert.EqualValues(t, 1, replicas(t, target, "hello"))
	d, err := env.kube.Client.AppsV1().Deployments(target).Get(t.Context(), "hello", metav1.GetOptions{})
	require.NoError(t, err)
	var managers []string
	for _, m := range d.ManagedFields {
		managers = append(managers, m.Manager)
	}
	assert.Contains(t, managers, "troupe", "applied by troupe's applier")

	// An upgrade with a NATS node SIGKILLed while it is in flight, started again.
	done := make(chan result, 1)
	go func() { done <- run("release", "hello", chart(), "-n", target, "--set", "replicaCount=2", "--wait") }()
	time.Sleep(200 * time.Millisecond)
	cluster.Kill(1)
	r = <-done
	cluster.Start(1)
	require.Equal(t, 0, r.code, r)
	assert.EqualValues(t, 2, replicas(t, target, "hello"))

	r = run("rollback", "hello", "1", "-n", target, "--wait")
	require.Equal(t, 0, r.code, r)
	assert.EqualValues(t, 1, replicas(t, target, "hello"))

	r = run("uninstall", "hello", "-n", target, "--wait")
	require.Equal(t, 0, r.code, r)
	_, err = env.kube.Client.AppsV1().Deployments(target).Get(t.Context(), "hello", metav1.GetOptions{})
	assert.Error(t, err, "uninstalled")

	// Install, upgrade, rollback (to revision 1: its flow carries revision 1 again) and uninstall:
	// four flows, each ended by exactly one terminal event, every copy in the stream counted.
	assert.Equal(t, [][]string{{events.TypeReady}, {events.TypeReady}, {events.TypeReady}, {events.TypeUninstalled}},
		terminalsByFlow(t, js, "troupe.release."+target+".hello.>"), "each flow ends once, as it should")

	// The applier could do this only as the namespace's account: on its own it may not.
	r = run("release", "sneaky", chart(), "-n", "kube-system", "--wait", "--timeout", "1m")
	assert.Equal(t, 1, r.code, r)
	assert.Contains(t, r.stderr+r.stdout, "kube-system", "refused: not a namespace troupe may touch")
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates with a token of the service
// account ns/name, issued by the API server, as a pod of that account holds.
func serviceAccountKubeconfig(t *testing.T, dir, ns, name string) string {
	t.Helper()
	exp := int64(3600)
	tok, err := env.kube.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	require.NoError(t, err)
	cfg := env.kube.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthority: cfg.CAFile, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: name}
	kc.CurrentContext = "local"
	path := filepath.Join(dir, name+".kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}

// terminalsByFlow returns the types of the terminal events stored on filter, per flow
// (correlation id), the flows in the order they started: every copy the stream holds.
func terminalsByFlow(t *testing.T, js jetstream.JetStream, filter string) [][]string {
	t.Helper()
	var order []string
	ends := map[string][]string{}
	for _, e := range storedEvents(t, js, filter) {
		flow := events.CorrelationID(e)
		if _, seen := ends[flow]; !seen {
			order = append(order, flow)
			ends[flow] = []string{}
		}
		if terminal[e.Type()] {
			ends[flow] = append(ends[flow], e.Type())
		}
	}
	var out [][]string
	for _, f := range order {
		out = append(out, ends[f])
	}
	return out
}
