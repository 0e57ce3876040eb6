package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

func (c *cli) publishCmd() *cobra.Command {
	var release, data, output string
	cmd := &cobra.Command{
		Use:   "publish TYPE --release NS/NAME --data @file.json",
		Short: "Publish one event, validated against the catalog first",
		Long: `Publish one CloudEvent of a catalog type about a release. The data is checked against the
type's payload before anything is sent: an invalid event is an error and nothing is published.

--data takes inline JSON, @file.json, or @- for standard input. Types: ` + strings.Join(events.Types(), ", "),
		Example: `  troupe publish release.requested --release dev/podinfo --data @request.json
  echo '{"targetRevision":2}' | troupe publish release.rollback.requested --release dev/podinfo --data @-`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("publish takes one event TYPE, e.g. release.requested (known: %s)", strings.Join(events.Types(), ", "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			typ := args[0]
			if _, ok := events.Lookup(typ); !ok {
				return usagef("unknown event type %q (known: %s)", typ, strings.Join(events.Types(), ", "))
			}
			if release == "" {
				return usagef("--release NS/NAME is required")
			}
			r, err := events.ParseRelease(release)
			if err != nil {
				return usagef("--release: %w", err)
			}
			raw, err := readData(data, c.stdin)
			if err != nil {
				return err
			}
			payload, err := events.DecodePayload(typ, raw)
			if err != nil {
				return fmt.Errorf("%w; nothing was published", err)
			}
			e, err := events.NewEvent(events.SourcePrefix+"cli", typ, r, payload)
			if err != nil {
				return err
			}
			nc, js, err := c.connect("troupe-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			ack, err := events.NewPublisher(js, c.names).Publish(cmd.Context(), e)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(e)
			}
			fmt.Fprintf(c.stdout, "published %s %s id=%s seq=%d\n", typ, r, e.ID(), ack.Sequence)
			return nil
		},
	}
	cmd.Flags().StringVar(&release, "release", "", "release as NS/NAME (required)")
	cmd.Flags().StringVar(&data, "data", "", "event data: inline JSON, @file.json or @- for stdin (required)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output: text or json (the published CloudEvent)")
	return cmd
}

// readData reads --data: inline JSON, @file or @- (stdin).
func readData(data string, stdin io.Reader) ([]byte, error) {
	switch {
	case data == "":
		return nil, usagef("--data is required: inline JSON, @file.json or @- for stdin")
	case data == "@-":
		b, err := io.ReadAll(io.LimitReader(stdin, events.MaxDataSize+1))
		if err != nil {
			return nil, fmt.Errorf("read data from stdin: %w", err)
		}
		return b, nil
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, usagef("--data: %w", err)
		}
		return b, nil
	default:
		return []byte(data), nil
	}
}
