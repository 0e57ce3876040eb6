package main

import (
	"fmt"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

// versionOut is what `troupe version` prints.
type versionOut struct {
	Client   clientVersion    `json:"client"`
	Services []serviceVersion `json:"services,omitempty"`
}

type clientVersion struct {
	Version  string `json:"version"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

type serviceVersion struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Instances int    `json:"instances"`
}

func (c *cli) versionCmd() *cobra.Command {
	var out output
	var client bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "version [--client]",
		Short: "Show the CLI's version and that of every running troupe service",
		Long: `Print this CLI's version, then the version of every troupe service that answers on NATS
($SRV.INFO), with how many instances run — several versions of one service during a rolling
upgrade. --client prints the CLI's alone, without connecting.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versionOut{Client: clientVersion{Version: events.Version(), Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}}
			var err error
			if !client {
				err = c.serviceVersions(cmd, wait, &v)
			}
			if perr := out.print(c.stdout, v, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "COMPONENT\tVERSION\tDETAIL")
				fmt.Fprintf(tw, "cli\t%s\t%s %s\n", v.Client.Version, v.Client.Go, v.Client.Platform)
				for _, s := range v.Services {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, s.Version, plural(s.Instances, "instance"))
				}
			}); perr != nil {
				return perr
			}
			return err
		},
	}
	out.bind(cmd)
	cmd.Flags().BoolVar(&client, "client", false, "the CLI's version only; do not connect")
	cmd.Flags().DurationVar(&wait, "discover-for", time.Second, "how long to gather the services' answers")
	return cmd
}

// serviceVersions adds the running services' versions to v.
func (c *cli) serviceVersions(cmd *cobra.Command, wait time.Duration, v *versionOut) error {
	g, err := c.discover(cmd.Context(), wait)
	if err != nil {
		return err
	}
	for _, s := range g.Services {
		v.Services = append(v.Services, serviceVersion{Name: s.Name, Version: s.Version, Instances: s.Instances})
	}
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
