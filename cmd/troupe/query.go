package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/historyapi"
)

// ask sends one query to the history service (troupe.history.<endpoint>) and decodes the answer
// into out. A query nobody answers names the service to start.
func ask(ctx context.Context, nc *nats.Conn, names events.Names, endpoint string, q historyapi.Query, out any) error {
	return askAt(ctx, nc, historyapi.QuerySubject(names), endpoint, q, out)
}

// askAt is ask on the endpoints under prefix (historyapi.QuerySubject or SecretsSubject).
func askAt(ctx context.Context, nc *nats.Conn, prefix, endpoint string, q historyapi.Query, out any) error {
	body, err := json.Marshal(q)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second) // an answer of tens of MB comes in chunks
	defer cancel()
	data, header, err := historyapi.Ask(ctx, nc, prefix+"."+endpoint, body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no history service answers on %s.%s: start 'troupe dev' or the history service", prefix, endpoint)
	case err != nil:
		return fmt.Errorf("ask history (%s): %w", endpoint, err)
	}
	if e := header.Get(micro.ErrorHeader); e != "" {
		return &answerError{code: header.Get(micro.ErrorCodeHeader), msg: e}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("history's answer to %s: %w", endpoint, err)
	}
	return nil
}

// answerError is the history's answer that it could not answer: what it said, and its code
// (400: a bad query; 404: it has no such release or revision).
type answerError struct{ code, msg string }

func (e *answerError) Error() string { return e.msg }

// notFound says whether err is the history's answer that it has no such thing.
func notFound(err error) bool {
	var ae *answerError
	return errors.As(err, &ae) && ae.code == "404"
}

// ask connects, asks the history service one query, and closes.
func (c *cli) ask(cmd *cobra.Command, endpoint string, q historyapi.Query, out any) error {
	nc, err := c.natsConn("troupe-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	return ask(cmd.Context(), nc, c.names, endpoint, q, out)
}

// askSecrets is ask, on historyapi.SecretsSubject when reveal: Secret values shown, if NATS lets
// this identity ask there (else the command ends with a refusedError).
func (c *cli) askSecrets(cmd *cobra.Command, reveal bool, endpoint string, q historyapi.Query, out any) error {
	if !reveal {
		return c.ask(cmd, endpoint, q, out)
	}
	nc, err := c.natsConn("troupe-cli")
	if err != nil {
		return err
	}
	defer nc.Close()
	return askAt(cmd.Context(), nc, historyapi.SecretsSubject(c.names), endpoint, q, out)
}

// releaseArg reads a release as NAME with -n NS, or as NS/NAME.
func releaseArg(name, namespace string) (events.Release, error) {
	if strings.Contains(name, "/") {
		r, err := events.ParseRelease(name)
		if err != nil {
			return r, usageError{err}
		}
		return r, nil
	}
	r := events.Release{Namespace: namespace, Name: name}
	if err := r.Validate(); err != nil {
		return r, usageError{err}
	}
	return r, nil
}

// output is -o: table (or text), json or yaml.
type output string

func (o *output) bind(cmd *cobra.Command) {
	*o = "table"
	cmd.Flags().VarP((*outputValue)(o), "output", "o", "output: table, json or yaml")
}

type outputValue output

func (o *outputValue) String() string { return string(*o) }
func (o *outputValue) Type() string   { return "format" }
func (o *outputValue) Set(s string) error {
	switch s {
	case "table", "text", "wide":
		*o = "table"
	case "json", "yaml":
		*o = outputValue(s)
	default:
		return fmt.Errorf("%q: want table, json or yaml", s)
	}
	return nil
}

// print writes v as JSON or YAML, or calls table with a tab writer.
func (o output) print(w io.Writer, v any, table func(tw *tabwriter.Writer)) error {
	switch o {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false) // subjects read as they are: "troupe.>", not "troupe.\u003e"
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	table(tw)
	return tw.Flush()
}

// namespaceFlag adds -n/--namespace, defaulting to $TROUPE_NAMESPACE or "default".
func namespaceFlag(cmd *cobra.Command, ns *string) {
	cmd.Flags().StringVarP(ns, "namespace", "n", envOr("TROUPE_NAMESPACE", "default"), "the release's namespace [TROUPE_NAMESPACE]")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
