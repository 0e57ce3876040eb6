//go:build !lean

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/nats-io/jwt/v2"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/deploy/charts"
	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
	"github.com/troupe-dev/troupe/services/applier/apply"
	"github.com/troupe-dev/troupe/services/renderer/render"
)

// createNamespaces creates the namespaces objects go to beside rel's (the chart's `namespaces`,
// where its roles and accounts go) when missing. They are not the installation's: never pruned,
// never deleted.
func createNamespaces(ctx context.Context, kube kubernetes.Interface, rel events.Release, objects []map[string]any) error {
	seen := map[string]bool{rel.Namespace: true}
	for _, o := range objects {
		meta, _ := o["metadata"].(map[string]any)
		ns, _ := meta["namespace"].(string)
		if ns == "" || seen[ns] {
			continue
		}
		seen[ns] = true
		_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	return nil
}

// installState is the ConfigMap `troupe install` keeps in the namespace it installs into: the
// revision it applied last and that revision's inventory, so that an upgrade prunes what the new
// chart no longer has. It is not part of the inventory (never pruned).
const installState = "troupe-install"

type installOptions struct {
	namespace, name     string
	kubeconfig, context string
	valuesFiles, set    []string
	dryRun, upgrade     bool
	keys                string
	timeout             time.Duration
	version             string
}

func (c *cli) installCmd() *cobra.Command {
	var o installOptions
	cmd := &cobra.Command{
		Use:   "install [-n NS] [-f values.yaml ...] [--set k=v ...] [--dry-run] [--upgrade]",
		Short: installShort,
		Long: `install renders troupe's own chart (deploy/charts/troupe, built into this binary, with the
NATS chart as its dependency) with troupe's renderer and applies it with troupe's apply library
to the --kubeconfig cluster, as troupe's applier applies a release: server-side apply, every
object labelled as release NS/troupe, what an upgrade no longer renders pruned. Then it waits
until every object is ready (the NATS servers, the provisioning Job, each service) and says how
to point the CLI at it.

The NATS identities' credentials are signed with the operator and account keys in --keys
(created the first time; keep the directory, and keep it private: the next install or upgrade
must sign credentials the same NATS server admits) and applied as the Secrets the chart mounts,
as 'troupe nats-config' prints them. The CLI's own credentials are written to
--keys/cli.creds. Each gate the values list (credentials.gates) gets a Secret of its own
identity's credentials too, <secretPrefix>gate-<name>-creds (key gate-<name>.creds): it may
publish that gate's verdicts only. An upgrade whose values no longer list a gate prunes its Secret.

--dry-run prints every object instead (the Namespace first, then the Secrets, then the chart's
objects), for kubectl apply or a GitOps repository; it reads no cluster. --upgrade installs a new
version (of troupe, or of the values) over an installed one: the services roll one replica at a
time, and old and new replicas interoperate (README: "Running on a cluster").`,
		Example: `  troupe install
  troupe install -n troupe --set namespaces={team-a,team-b} --set applier.clusterScoped.enabled=true
  troupe install --dry-run > troupe.yaml
  troupe install --set credentials.gates={policy,approval}
  troupe install --upgrade -f values.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.install(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "troupe", "namespace to install into (created when missing)")
	f.StringVar(&o.name, "name", "troupe", "release name of the installation")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "the cluster (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
	f.StringVar(&o.context, "context", "", "kubeconfig context")
	f.StringArrayVarP(&o.valuesFiles, "values", "f", nil, "the chart's values, from a YAML file (repeatable; later ones win)")
	f.StringArrayVar(&o.set, "set", nil, "a chart value, as helm --set: key=value (repeatable)")
	f.BoolVar(&o.dryRun, "dry-run", false, "print the objects instead of applying them")
	f.BoolVar(&o.upgrade, "upgrade", false, "upgrade an installed troupe (without it, an installed one is an error)")
	f.StringVar(&o.keys, "keys", filepath.Join(envOr("TROUPE_STORE_DIR", ".troupe"), "cluster-keys"), "directory of the NATS operator and account keys (created the first time; keep it private)")
	f.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for every object to be ready")
	f.StringVar(&o.version, "version", "", "image tag of the services (default: the chart's appVersion)")
	return cmd
}

func (c *cli) install(ctx context.Context, o installOptions) error {
	rel, err := releaseArg(o.name, o.namespace)
	if err != nil {
		return err
	}
	req, err := installRequest(o, c.subjectsPrefix)
	if err != nil {
		return err
	}
	chart, err := chartDir()
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(chart))

	var cfg *rest.Config
	if !o.dryRun {
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.kubeconfig, Precedence: clientcmd.NewDefaultClientConfigLoadingRules().Precedence},
			&clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
		if err != nil {
			return fmt.Errorf("--kubeconfig: %w", err)
		}
	}
	ropts := render.Options{SourceRoots: []string{filepath.Dir(chart)}}
	if cfg != nil {
		if err := render.Discover(ctx, cfg, &ropts); err != nil {
			return fmt.Errorf("the cluster at %s: %w", cfg.Host, err)
		}
	}
	state := installed{}
	if cfg != nil {
		if state, err = readInstalled(ctx, ropts.Kube, rel); err != nil {
			return err
		}
		switch {
		case state.Revision > 0 && !o.upgrade:
			return fmt.Errorf("troupe is installed in %s (revision %d): upgrade it with --upgrade", rel.Namespace, state.Revision)
		case state.Revision == 0 && o.upgrade:
			return fmt.Errorf("--upgrade: troupe is not installed in %s (no ConfigMap %s)", rel.Namespace, installState)
		}
	}
	// A new number for every attempt: a failed one's objects (its provisioning Job, immutable)
	// are not taken for this one's.
	revision := max(state.Revision, state.Attempted) + 1

	r, err := render.New(ropts)
	if err != nil {
		return err
	}
	req.Source = events.Source{Helm: &events.HelmSource{Path: chart}}
	out, err := r.Render(ctx, render.Input{Release: rel, Revision: revision, Request: req})
	if err != nil {
		return fmt.Errorf("render troupe's chart: %w", err)
	}
	bundle, err := events.ReadBundle(out.Bundle)
	if err != nil {
		return err
	}
	if cfg != nil && state.Attempted > 0 {
		// The keys that signed what runs must sign the next credentials: keys created anew here
		// (another working directory, a lost --keys) would lock every service out of NATS.
		if err := sameKeys(ctx, ropts.Kube, rel, o.keys); err != nil {
			return err
		}
	}
	gates, prefix, err := chartGates(out.Values)
	if err != nil {
		return err
	}
	secrets, err := c.identitySecrets(o.keys, rel.Namespace, gates, prefix)
	if err != nil {
		return err
	}
	objects := append(secrets, bundle.Objects...)
	if o.dryRun {
		fmt.Fprintf(c.stderr, "troupe install --dry-run: the output holds every identity's NATS credentials, the admin's too: keep it as you keep Secrets\n")
		ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": rel.Namespace}}
		for _, obj := range append([]map[string]any{ns}, objects...) {
			b, err := yaml.Marshal(obj)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "---\n%s", b)
		}
		return nil
	}

	if err := createNamespaces(ctx, ropts.Kube, rel, objects); err != nil {
		return err
	}
	a, err := apply.New(cfg, apply.Options{}) // troupe's field manager, as the applier's
	if err != nil {
		return err
	}
	res, err := a.Apply(ctx, apply.Request{Release: rel, Revision: revision, Objects: objects, Previous: state.Objects, Pending: state.Pending,
		Options: events.Options{CreateNamespace: true, Timeout: events.Duration(o.timeout)},
		// Before the first change: whatever this attempt applies is recorded as pending, so that
		// the next one prunes it if its chart no longer has it, however this one ends.
		Intent: func(ctx context.Context, refs []events.ObjectRef) error {
			next := state
			next.Attempted, next.Pending = revision, append(slices.Clone(state.Pending), refs...)
			return writeInstalled(ctx, ropts.Kube, rel, next)
		}})
	if err != nil {
		return fmt.Errorf("apply revision %d: %w", revision, err)
	}
	if err := writeInstalled(ctx, ropts.Kube, rel, installed{Revision: revision, Attempted: revision, Objects: res.Objects}); err != nil {
		return err
	}
	counts := map[string]int{}
	for _, obj := range res.Inventory {
		counts[obj.Action]++
	}
	fmt.Fprintf(c.stdout, "%s: revision %d applied: %d objects (%d created, %d configured, %d unchanged), %d pruned\n",
		rel, revision, len(res.Inventory), counts["created"], counts["configured"], counts["unchanged"], len(res.Pruned))
	if err := waitReady(ctx, cfg, res.Inventory, o.timeout, c.stdout); err != nil {
		return err
	}
	cliCreds := filepath.Join(o.keys, "cli.creds")
	fmt.Fprintf(c.stdout, `%s: revision %d ready.

The CLI's credentials are in %s. From outside the cluster, reach NATS through a port-forward:

  kubectl -n %s port-forward svc/%s 4222 &
  troupe --server nats://127.0.0.1:4222 --creds %s list -A
`, rel, revision, cliCreds, rel.Namespace, natsService(bundle), cliCreds)
	return nil
}

// installRequest is the chart's values from the flags, as `troupe release` takes them.
func installRequest(o installOptions, subjectsPrefix string) (events.Requested, error) {
	if o.timeout <= 0 {
		return events.Requested{}, usagef("--timeout %s: want more than 0", o.timeout)
	}
	req := events.Requested{Set: slices.Clone(o.set), RequestedBy: requester()}
	var err error
	if req.ValuesFiles, err = valuesFlags(o.valuesFiles, o.set); err != nil {
		return req, err
	}
	if subjectsPrefix != "" {
		req.Set = append(req.Set, "subjectsPrefix="+subjectsPrefix)
	}
	if o.version != "" {
		req.Set = append(req.Set, "image.tag="+o.version)
	}
	return req, nil
}

// chartDir writes the embedded chart to a new temporary directory and returns its path.
func chartDir() (string, error) {
	sub, err := fs.Sub(charts.Troupe, "troupe")
	if err != nil {
		return "", err
	}
	if deps, _ := fs.Glob(sub, "charts/nats-*.tgz"); len(deps) == 0 {
		return "", fmt.Errorf("this troupe was built without its chart's NATS dependency: `make build` packages it (make deploy-deps)")
	}
	tmp, err := os.MkdirTemp("", "troupe-install-")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tmp, "troupe")
	if err := os.CopyFS(dir, sub); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return dir, nil
}

// identitySecrets are the Secrets the chart mounts (natsSecrets), and those of gates' identities
// (access.Gate), named <prefix>gate-<name>-creds, signed with the keys in dir (created the first
// time). The CLI's credentials are also written to dir/cli.creds.
func (c *cli) identitySecrets(dir, namespace string, gates []string, prefix string) ([]map[string]any, error) {
	a, err := access.LoadOrCreate(dir)
	if err != nil {
		return nil, fmt.Errorf("--keys %s: %w", dir, err)
	}
	conf, err := serverAuth(a)
	if err != nil {
		return nil, err
	}
	out, err := natsSecrets(a, conf, c.names, namespace)
	if err != nil {
		return nil, err
	}
	for _, o := range out {
		if creds, ok := o["stringData"].(map[string]any)[access.CLI+".creds"].(string); ok {
			if err := os.WriteFile(filepath.Join(dir, "cli.creds"), []byte(creds), 0o600); err != nil {
				return nil, err
			}
		}
	}
	for _, g := range gates {
		id, err := access.Gate(g)
		if err != nil {
			return nil, fmt.Errorf("credentials.gates: %w", err)
		}
		b, err := a.Creds(id, c.names)
		if err != nil {
			return nil, err
		}
		out = append(out, secret(prefix+id.Name+"-creds", namespace, id.Name+".creds", string(b)))
	}
	return out, nil
}

// chartGates are the gates the values troupe's chart rendered with list (credentials.gates),
// and the prefix of the credentials Secrets' names (credentials.secretPrefix), from the chart's
// values record (render.Output.Values).
func chartGates(record []byte) (gates []string, prefix string, err error) {
	var v struct {
		Computed struct {
			Credentials struct {
				SecretPrefix string   `json:"secretPrefix"`
				Gates        []string `json:"gates"`
			} `json:"credentials"`
		} `json:"computed"`
	}
	if err := json.Unmarshal(record, &v); err != nil {
		return nil, "", fmt.Errorf("the values troupe's chart rendered with: %w", err)
	}
	return v.Computed.Credentials.Gates, v.Computed.Credentials.SecretPrefix, nil
}

// natsService is the name of the bundled NATS chart's client Service, or a placeholder when
// troupe uses an existing NATS.
func natsService(b *events.Bundle) string {
	for _, o := range b.Objects {
		meta, _ := o["metadata"].(map[string]any)
		labels, _ := meta["labels"].(map[string]any)
		name, _ := meta["name"].(string)
		if o["kind"] == "Service" && labels["app.kubernetes.io/name"] == "nats" && !strings.HasSuffix(name, "-headless") {
			return name
		}
	}
	return "YOUR-NATS"
}

// installed is what installState records: the last revision applied and its inventory, and the
// last attempted, with what it may have applied.
type installed struct {
	Revision  int
	Objects   []apply.Object
	Attempted int
	Pending   []events.ObjectRef
}

// sameKeys fails unless the operator of the keys in dir is the one the installed NATS trusts
// (the Secret troupe-nats-auth), and never creates keys.
func sameKeys(ctx context.Context, kube kubernetes.Interface, rel events.Release, dir string) error {
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("--keys %s: the keys that signed the installed credentials are not there (%w): give the directory the first install used", dir, err)
	}
	a, err := access.LoadOrCreate(dir)
	if err != nil {
		return fmt.Errorf("--keys %s: %w", dir, err)
	}
	sec, err := kube.CoreV1().Secrets(rel.Namespace).Get(ctx, "troupe-nats-auth", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil // nothing trusts any operator yet
	}
	if err != nil {
		return fmt.Errorf("read Secret %s/troupe-nats-auth: %w", rel.Namespace, err)
	}
	mine, err := jwt.DecodeOperatorClaims(a.Operator())
	if err != nil {
		return err
	}
	var trusted string
	if m := operatorLine.FindStringSubmatch(string(sec.Data["auth.conf"])); m != nil {
		if c, err := jwt.DecodeOperatorClaims(m[1]); err == nil {
			trusted = c.Subject
		}
	}
	if trusted != mine.Subject {
		return fmt.Errorf("--keys %s: not the keys the installed NATS trusts (Secret %s/troupe-nats-auth): give the directory the first install used", dir, rel.Namespace)
	}
	return nil
}

// operatorLine is the operator's JWT in the authorization serverAuth writes.
var operatorLine = regexp.MustCompile(`(?m)^operator: "([^"]+)"`)

func readInstalled(ctx context.Context, kube kubernetes.Interface, rel events.Release) (installed, error) {
	cm, err := kube.CoreV1().ConfigMaps(rel.Namespace).Get(ctx, installState, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return installed{}, nil
	}
	if err != nil {
		return installed{}, fmt.Errorf("read ConfigMap %s/%s: %w", rel.Namespace, installState, err)
	}
	if got := cm.Data["release"]; got != rel.String() {
		return installed{}, fmt.Errorf("ConfigMap %s/%s records the installation of release %s, not %s: one installation per namespace", rel.Namespace, installState, got, rel)
	}
	var st installed
	for key, into := range map[string]any{"revision": &st.Revision, "attempted": &st.Attempted, "objects": &st.Objects, "pending": &st.Pending} {
		if v, ok := cm.Data[key]; ok {
			if err := json.Unmarshal([]byte(v), into); err != nil {
				return installed{}, fmt.Errorf("ConfigMap %s/%s: %s: %w", rel.Namespace, installState, key, err)
			}
		}
	}
	return st, nil
}

func writeInstalled(ctx context.Context, kube kubernetes.Interface, rel events.Release, st installed) error {
	data := map[string]string{"release": rel.String()}
	for key, v := range map[string]any{"revision": st.Revision, "attempted": st.Attempted, "objects": st.Objects, "pending": st.Pending} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		data[key] = string(b)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: installState, Namespace: rel.Namespace,
		Labels: map[string]string{"app.kubernetes.io/part-of": "troupe"}}, Data: data}
	_, err := kube.CoreV1().ConfigMaps(rel.Namespace).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		_, err = kube.CoreV1().ConfigMaps(rel.Namespace).Create(ctx, cm, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("record the installation in ConfigMap %s/%s: %w", rel.Namespace, installState, err)
	}
	return nil
}

// waitReady polls objs until kstatus calls every one Current (a Job: complete), printing what it
// still waits for whenever that changes; an error naming them at timeout.
func waitReady(ctx context.Context, cfg *rest.Config, objs []events.AppliedObject, timeout time.Duration, out interface{ Write([]byte) (int, error) }) error {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		var waiting []string
		for _, o := range objs {
			msg := notReady(ctx, dyn, mapper, o.ObjectRef)
			if strings.HasPrefix(msg, failedPrefix) {
				return fmt.Errorf("%s/%s %s", o.Kind, o.Name, msg)
			}
			if msg != "" {
				waiting = append(waiting, fmt.Sprintf("%s/%s (%s)", o.Kind, o.Name, msg))
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		line := fmt.Sprintf("waiting for %d of %d objects: %s", len(waiting), len(objs), strings.Join(waiting[:min(len(waiting), 5)], ", "))
		if len(waiting) > 5 {
			line += ", …"
		}
		if line != last {
			fmt.Fprintln(out, line)
			last = line
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %s: %s", timeout, strings.Join(waiting, ", "))
		case <-time.After(time.Second):
		}
	}
}

// failedPrefix starts what notReady says of an object kstatus calls Failed: no use waiting on.
const failedPrefix = "failed: "

// notReady is why ref is not ready yet; empty when it is.
func notReady(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, ref events.ObjectRef) string {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return err.Error()
	}
	m, err := mapper.RESTMapping(gv.WithKind(ref.Kind).GroupKind(), gv.Version)
	if err != nil {
		return err.Error()
	}
	var live *unstructured.Unstructured
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		live, err = dyn.Resource(m.Resource).Namespace(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	} else {
		live, err = dyn.Resource(m.Resource).Get(ctx, ref.Name, metav1.GetOptions{})
	}
	if err != nil {
		return err.Error()
	}
	res, err := status.Compute(live)
	if err != nil {
		return err.Error()
	}
	if res.Status == status.FailedStatus {
		return failedPrefix + res.Message
	}
	if res.Status != status.CurrentStatus {
		return strings.ToLower(res.Status.String()) + ": " + res.Message
	}
	if ref.Kind == "Job" {
		if s, _, _ := unstructured.NestedInt64(live.Object, "status", "succeeded"); s == 0 {
			return "not complete"
		}
	}
	return ""
}
