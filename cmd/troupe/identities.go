package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events/access"
)

// identityOut is one identity as `troupe identities -o json|yaml` prints it: what a NATS
// operator installs.
type identityOut struct {
	Name        string             `json:"name"`
	Doc         string             `json:"doc"`
	Publishes   []string           `json:"publishes,omitempty"`
	Permissions access.Permissions `json:"permissions"`
}

func (c *cli) identitiesCmd() *cobra.Command {
	var out output
	cmd := &cobra.Command{
		Use:   "identities",
		Short: "List troupe's NATS identities and what each may do (-o json: their full permissions)",
		Long: `List the NATS identities troupe's permissions are made of: one per service, the CLI, a
read-only viewer, a template for your own subscribers, and the admin. 'troupe dev' writes a
credentials file for each under <store-dir>/creds; -o json or yaml prints each identity's NATS
publish and subscribe permissions in the system of --subjects-prefix, as they are signed into
its credentials.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var ids []identityOut
			for _, id := range access.Table() {
				p, err := id.Permissions(c.names)
				if err != nil {
					return err
				}
				ids = append(ids, identityOut{Name: id.Name, Doc: id.Doc, Publishes: id.Publishes, Permissions: p})
			}
			return out.print(c.stdout, ids, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "IDENTITY\tPUBLISHES\tWHAT FOR")
				for _, id := range ids {
					pub := strings.Join(id.Publishes, ", ")
					if id.Name == access.Admin {
						pub = "everything"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", id.Name, dash(pub), id.Doc)
				}
			})
		},
	}
	out.bind(cmd)
	return cmd
}
