package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
)

// natsConfigCmd is `troupe nats-config`: the NATS authorization troupe's identities need, from
// the same table `troupe dev` signs its credentials from, for a NATS run elsewhere.
func (c *cli) natsConfigCmd() *cobra.Command {
	var dir, namespace, format string
	cmd := &cobra.Command{
		Use:   "nats-config --dir DIR [-n NS] [-o yaml|conf]",
		Short: "Print the NATS server authorization and each identity's credentials, as Kubernetes Secrets",
		Long: `nats-config prints what a NATS server (or the NATS chart) needs to admit troupe's
identities, and what each identity connects with, in the system of --subjects-prefix:

  - a Secret troupe-nats-auth whose key auth.conf is a NATS server configuration: operator mode,
    the operator's JWT, troupe's account and the system account preloaded (include it from the
    server's configuration, or the NATS chart's config.merge);
  - a Secret troupe-<identity>-creds per identity ('troupe identities' lists them), whose key
    <identity>.creds is its credentials file: the permissions signed in, as under 'troupe dev'.

The operator and account keys are kept in --dir (created mode 0700 the first time): run it again
with the same directory to sign new credentials the same server admits. -o conf prints only the
server configuration.`,
		Example: `  troupe nats-config --dir ./troupe-keys -n troupe | kubectl apply -f -
  troupe nats-config --dir ./troupe-keys -o conf > auth.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dir == "" {
				return usagef("--dir: required: the operator and account keys are kept there")
			}
			if format != "yaml" && format != "conf" {
				return usagef("-o %s: want yaml or conf", format)
			}
			a, err := access.LoadOrCreate(dir)
			if err != nil {
				return err
			}
			conf, err := serverAuth(a)
			if err != nil {
				return err
			}
			if format == "conf" {
				_, err := fmt.Fprint(c.stdout, conf)
				return err
			}
			docs, err := natsSecrets(a, conf, c.names, namespace)
			if err != nil {
				return err
			}
			for _, d := range docs {
				b, err := yaml.Marshal(d)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "---\n%s", b)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory of the operator and account keys (created the first time; keep it, and keep it private)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "troupe", "namespace of the Secrets")
	cmd.Flags().StringVarP(&format, "output", "o", "yaml", "yaml (Kubernetes Secrets) or conf (the server configuration alone)")
	return cmd
}

// serverAuth is the NATS server configuration that trusts a's operator, with its accounts
// preloaded (as `troupe dev`'s embedded server is set up).
func serverAuth(a *access.Authority) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# troupe's NATS authorization: `troupe nats-config` writes it; operator mode.\n")
	fmt.Fprintf(&b, "operator: %q\n", a.Operator())
	fmt.Fprintf(&b, "system_account: %q\n", a.SystemAccount())
	fmt.Fprintf(&b, "max_control_line: %d\n", access.MaxControlLine)
	fmt.Fprintf(&b, "resolver: MEMORY\nresolver_preload: {\n")
	accounts := map[string]string{}
	for _, j := range a.Accounts() {
		ac, err := jwt.DecodeAccountClaims(j)
		if err != nil {
			return "", err
		}
		accounts[ac.Subject] = j
	}
	keys := make([]string, 0, len(accounts))
	for k := range accounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %q\n", k, accounts[k])
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// natsSecrets are the Secrets a deployment mounts: troupe-nats-auth (conf, the server's
// authorization) and troupe-<identity>-creds per identity, signed by a for names.
func natsSecrets(a *access.Authority, conf string, names events.Names, namespace string) ([]map[string]any, error) {
	out := []map[string]any{secret("troupe-nats-auth", namespace, "auth.conf", conf)}
	for _, id := range access.Table() {
		b, err := a.Creds(id, names)
		if err != nil {
			return nil, err
		}
		out = append(out, secret("troupe-"+id.Name+"-creds", namespace, id.Name+".creds", string(b)))
	}
	return out, nil
}

// secret is a Kubernetes Secret of one key of string data, of JSON values only (as a bundle's
// objects are: the apply library deep-copies them as such).
func secret(name, namespace, key, value string) map[string]any {
	return map[string]any{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata":   map[string]any{"name": name, "namespace": namespace, "labels": map[string]any{"app.kubernetes.io/part-of": "troupe"}},
		"stringData": map[string]any{key: value}}
}
