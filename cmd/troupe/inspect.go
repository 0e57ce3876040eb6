package main

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/flow"
	"github.com/troupe-dev/troupe/events/historyapi"
)

func (c *cli) listCmd() *cobra.Command {
	var out output
	var ns string
	var all bool
	cmd := &cobra.Command{
		Use:     "list [-n NS | -A]",
		Aliases: []string{"ls"},
		Short:   "List releases with their current revision and state",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := historyapi.Query{}
			if !all && cmd.Flags().Changed("namespace") {
				if err := events.ValidateName("namespace", ns); err != nil {
					return usageError{err}
				}
				q.Namespace = ns
			}
			var list []historyapi.Summary
			for { // page by page: one reply holds historyapi.ListLimit releases at most
				var page []historyapi.Summary
				if err := c.ask(cmd, historyapi.EndpointList, q, &page); err != nil {
					return err
				}
				list = append(list, page...)
				if len(page) < historyapi.ListLimit {
					break
				}
				q.After = page[len(page)-1].Release
			}
			return out.print(c.stdout, list, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAMESPACE\tNAME\tREVISION\tCURRENT\tSTATE\tUPDATED")
				for _, s := range list {
					r, _ := events.ParseRelease(s.Release)
					cur := fmt.Sprint(s.Current)
					if s.Current == 0 {
						cur = "-"
					}
					state := listState(s, time.Now())
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", r.Namespace, r.Name, s.Latest, cur, state, stamp(s.Updated))
				}
			})
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "every namespace (the default unless -n is given)")
	out.bind(cmd)
	return cmd
}

// revisionRow is one revision as `troupe history` prints it.
type revisionRow struct {
	Revision    int                 `json:"revision"`
	State       string              `json:"state"`
	Current     bool                `json:"current"`
	Stage       string              `json:"stage,omitempty"`
	Reason      string              `json:"reason,omitempty"`
	Message     string              `json:"message,omitempty"`
	Source      string              `json:"source,omitempty"`
	Chart       string              `json:"chart,omitempty"`
	Objects     int                 `json:"objects"`
	TimeToReady string              `json:"timeToReady,omitempty"`
	RolledBack  int                 `json:"rolledBackTo,omitempty"`
	Changes     *historyapi.Changes `json:"changes,omitempty"`
	// Hooks are the phases of the chart's hooks that ran, each hook with its result and timing.
	Hooks []events.Hooked  `json:"hooks,omitempty"`
	Times historyapi.Times `json:"times"`
	// Overdue says which service has not answered a revision still in flight past its timeout.
	Overdue string `json:"overdue,omitempty"`
	// Helm marks a revision Helm made before troupe adopted the release (its number is Helm's,
	// its state Helm's status); Description is Helm's description of it. AdoptedHelm is, on
	// troupe's revision that adopted it, the Helm revision taken over.
	// Waiting are the objects not ready yet and why, while the revision progresses.
	Waiting []events.ObjectStatus `json:"waiting,omitempty"`
	// Gates are the gates the revision needs, with what each said of its bundle (pending: not
	// yet).
	Gates       []events.GateVerdict `json:"gates,omitempty"`
	Helm        bool                 `json:"helm,omitempty"`
	Description string               `json:"description,omitempty"`
	AdoptedHelm int                  `json:"adoptedHelm,omitempty"`
}

func rows(v *historyapi.View) []revisionRow {
	out := make([]revisionRow, 0, len(v.Helm)+len(v.Revisions))
	for _, h := range v.Helm {
		row := revisionRow{Revision: h.Revision, State: h.Status, Objects: h.Objects, Helm: true, Description: h.Description,
			Source: "helm release " + v.HelmName, Times: historyapi.Times{Finished: h.Updated}}
		if h.Chart != nil {
			row.Chart = h.Chart.Name + "-" + h.Chart.Version
		}
		out = append(out, row)
	}
	for _, r := range v.Revisions {
		row := revisionRow{Revision: r.Revision, State: r.State, Current: r.Revision == v.Current, Stage: r.Stage,
			Reason: r.Reason, Message: r.Message, Objects: len(r.Objects), RolledBack: r.RolledBackTo, Changes: r.Changes, Hooks: r.Hooks, Times: r.Times,
			AdoptedHelm: r.AdoptedHelm, Waiting: r.Waiting, Gates: r.Gates}
		if r.Request != nil {
			row.Source = r.Request.Source
		}
		if r.Chart != nil {
			row.Chart = r.Chart.Name + "-" + r.Chart.Version
		}
		if r.TimeToReady > 0 {
			row.TimeToReady = time.Duration(r.TimeToReady).Round(time.Millisecond).String()
		}
		if v.Rollback == nil && r.Request != nil {
			row.Overdue = overdue(r.State, r.Times.Requested, cmp.Or(time.Duration(r.Request.Options.Timeout), events.DefaultTimeout), time.Now())
		}
		out = append(out, row)
	}
	return out
}

func (c *cli) historyCmd() *cobra.Command {
	var out output
	var ns string
	cmd := &cobra.Command{
		Use:   "history NAME [-n NS]",
		Short: "Show a release's revisions: state, why it failed, which one is current",
		Args:  exactArgs(1, "history takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			v, err := c.view(cmd, rel)
			if err != nil {
				return err
			}
			list := rows(v)
			return out.print(c.stdout, list, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "REVISION\tUPDATED\tSTATE\tCHART\tSOURCE\tDESCRIPTION")
				for _, r := range list {
					state := r.State
					if r.Current {
						state += " (current)"
					}
					number := strconv.Itoa(r.Revision)
					if r.Helm {
						number = "helm " + number
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", number, stamp(r.Times.Finished), state, dash(r.Chart), dash(events.ShortDigests(r.Source)), describe(r))
				}
			})
		},
	}
	namespaceFlag(cmd, &ns)
	out.bind(cmd)
	return cmd
}

// overdue says, for a revision in state still in flight when its timeout (and the 30 s the
// services have to report it) has passed, which service has not answered — one that is not
// running leaves a revision in flight, since nobody else ends it. "" when not overdue.
func overdue(state string, requested time.Time, timeout time.Duration, now time.Time) string {
	if requested.IsZero() || now.Before(requested.Add(timeout+30*time.Second)) {
		return ""
	}
	// The event that brought the revision to state, and so what it waits for next.
	last := map[string]string{historyapi.StateRequested: events.TypeRequested, historyapi.StateRendered: events.TypeRendered,
		historyapi.StateProgressing: events.TypeProgressing}[state]
	if last == "" {
		return ""
	}
	next, service := flow.WaitsFor(last)
	return fmt.Sprintf("no %s within its %s timeout: is the %s running? ('troupe graph' lists the services that answer)", next, timeout, service)
}

// listState is a release's state in `troupe list`: its latest revision's, marked when that one
// is overdue (troupe status says which service has not answered).
func listState(s historyapi.Summary, now time.Time) string {
	switch {
	case s.Uninstalled:
		return historyapi.StateUninstalled
	case overdue(s.State, s.Requested, cmp.Or(time.Duration(s.Timeout), events.DefaultTimeout), now) != "":
		return s.State + " (overdue: troupe status)"
	}
	return s.State
}

// describe says in a few words what happened to a revision.
func describe(r revisionRow) string {
	switch {
	case r.Helm:
		return "imported from Helm: " + dash(r.Description)
	case r.AdoptedHelm > 0 && r.TimeToReady != "":
		return fmt.Sprintf("adopted Helm revision %d, ready in %s (nothing changed)", r.AdoptedHelm, r.TimeToReady)
	case r.Overdue != "":
		return r.State + ", overdue: " + r.Overdue
	case r.State == historyapi.StateRendered && len(pendingGates(r.Gates)) > 0:
		return "waiting for approval by " + strings.Join(pendingGates(r.Gates), ", ")
	case r.Reason != "":
		return events.Truncate(fmt.Sprintf("%s: %s: %s", r.Stage, r.Reason, firstLine(r.Message)), 120)
	case r.RolledBack > 0:
		return fmt.Sprintf("rolled back to %d", r.RolledBack)
	case r.TimeToReady != "":
		s := "ready in " + r.TimeToReady
		if r.Changes != nil {
			s += fmt.Sprintf(" (%d created, %d configured, %d unchanged, %d pruned)", r.Changes.Created, r.Changes.Configured, r.Changes.Unchanged, r.Changes.Pruned)
		}
		return s
	}
	return "-"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func (c *cli) view(cmd *cobra.Command, rel events.Release) (*historyapi.View, error) {
	var v historyapi.View
	if err := c.ask(cmd, historyapi.EndpointGet, historyapi.Query{Release: rel.String()}, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// statusOut is what `troupe status` prints.
type statusOut struct {
	Release     string               `json:"release"`
	Current     int                  `json:"current"`
	Uninstalled bool                 `json:"uninstalled,omitempty"`
	Latest      *revisionRow         `json:"latest,omitempty"`
	Rollback    *historyapi.Rollback `json:"rollback,omitempty"`
	Objects     []events.ObjectRef   `json:"objects,omitempty"`
	Updated     time.Time            `json:"updated"`
}

func (c *cli) statusCmd() *cobra.Command {
	var out output
	var ns string
	cmd := &cobra.Command{
		Use:   "status NAME [-n NS]",
		Short: "Show a release's current revision and what its latest revision is doing",
		Args:  exactArgs(1, "status takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			v, err := c.view(cmd, rel)
			if err != nil {
				return err
			}
			st := statusOut{Release: v.Release, Current: v.Current, Uninstalled: v.Uninstalled, Rollback: v.Rollback, Updated: v.Updated}
			if list := rows(v); len(list) > 0 {
				st.Latest = &list[len(list)-1]
				st.Objects = v.Revisions[len(v.Revisions)-1].Objects
			}
			return out.print(c.stdout, st, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "RELEASE:\t%s\n", st.Release)
				cur := fmt.Sprint(st.Current)
				if st.Current == 0 {
					cur = "none"
				}
				fmt.Fprintf(tw, "CURRENT REVISION:\t%s\n", cur)
				if st.Uninstalled {
					fmt.Fprintf(tw, "STATE:\tuninstalled\n")
				}
				if l := st.Latest; l != nil {
					fmt.Fprintf(tw, "LATEST REVISION:\t%d\n", l.Revision)
					fmt.Fprintf(tw, "STATE:\t%s\n", l.State)
					fmt.Fprintf(tw, "SOURCE:\t%s\n", dash(events.ShortDigests(l.Source)))
					if l.Chart != "" {
						fmt.Fprintf(tw, "CHART:\t%s\n", l.Chart)
					}
					fmt.Fprintf(tw, "DESCRIPTION:\t%s\n", describe(*l))
					if l.Message != "" {
						fmt.Fprintf(tw, "MESSAGE:\t%s\n", l.Message)
					}
					if len(l.Waiting) > 0 {
						fmt.Fprintf(tw, "WAITING FOR:\t%d objects\n", len(l.Waiting))
						for _, o := range l.Waiting {
							fmt.Fprintf(tw, "  %s\t%s: %s\n", o.ObjectRef, o.Status, o.Message)
						}
					}
				}
				if l := st.Latest; l != nil && len(l.Gates) > 0 {
					waiting := l.State == historyapi.StateRendered
					fmt.Fprintf(tw, "GATES:\t%s\n", gatesSummary(l.Gates, waiting))
					for _, g := range l.Gates {
						fmt.Fprintf(tw, "  %s\t%s\n", g.Gate, gateState(g, waiting))
					}
				}
				if st.Rollback != nil {
					fmt.Fprintf(tw, "ROLLING BACK:\tfrom %d to %d\n", st.Rollback.From, st.Rollback.Target)
				}
				fmt.Fprintf(tw, "UPDATED:\t%s (%s)\n", stamp(st.Updated), ago(st.Updated))
				if len(st.Objects) > 0 {
					fmt.Fprintf(tw, "OBJECTS:\t%d\n", len(st.Objects))
					for _, o := range st.Objects {
						fmt.Fprintf(tw, "  %s\t\n", o)
					}
				}
			})
		},
	}
	namespaceFlag(cmd, &ns)
	out.bind(cmd)
	return cmd
}

func (c *cli) getCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "get", Short: "Get what troupe recorded of a release: manifest, values"}
	var out output
	var ns string
	var revision int
	var showSecrets bool
	manifest := &cobra.Command{
		Use:   "manifest NAME [-n NS] [--revision N]",
		Short: "Print the manifests of a revision (default: the current one, else the latest)",
		Args:  exactArgs(1, "get manifest takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			if revision == 0 {
				v, err := c.view(cmd, rel)
				if err != nil {
					return err
				}
				revision = v.Current
				if revision == 0 && len(v.Revisions) > 0 {
					revision = v.Revisions[len(v.Revisions)-1].Revision
				}
				if revision == 0 {
					return fmt.Errorf("%s has no revision", rel)
				}
			}
			var d historyapi.RevisionDetail
			if err := c.askSecrets(cmd, showSecrets, historyapi.EndpointRevision, historyapi.Query{Release: rel.String(), Revision: revision}, &d); err != nil {
				return err
			}
			if d.Manifests == nil && d.Revision != nil && d.Revision.Bundle == "" {
				return fmt.Errorf("%s revision %d has no manifests: it was not rendered (%s)", rel, revision, d.Revision.State)
			}
			if out == "json" {
				return out.print(c.stdout, d.Manifests, nil)
			}
			for _, m := range d.Manifests {
				b, err := yaml.Marshal(m)
				if err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "---\n%s", b)
			}
			return nil
		},
	}
	namespaceFlag(manifest, &ns)
	manifest.Flags().IntVar(&revision, "revision", 0, "the revision (default: the current one)")
	showSecretsFlag(manifest, &showSecrets)
	out.bind(manifest)
	cmd.AddCommand(manifest, c.getValuesCmd())
	return cmd
}

// getValuesCmd is `troupe get values`, as `helm get values`.
func (c *cli) getValuesCmd() *cobra.Command {
	var out output
	var ns string
	var revision int
	var all, showSecrets bool
	cmd := &cobra.Command{
		Use:   "values NAME [-n NS] [--revision N] [--all] [-o yaml|json] [--show-secrets]",
		Short: "Print a revision's chart values (default: the latest revision's): those its request set, or --all computed with the chart's",
		Args:  exactArgs(1, "get values takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			if revision < 0 {
				return usagef("--revision %d: want a revision number from 1", revision)
			}
			var v historyapi.Values
			if err := c.askSecrets(cmd, showSecrets, historyapi.EndpointValues, historyapi.Query{Release: rel.String(), Revision: revision, All: all}, &v); err != nil {
				return err
			}
			if out != "table" {
				return out.print(c.stdout, v.Values, nil)
			}
			b, err := yaml.Marshal(v.Values)
			if err != nil {
				return err
			}
			header := "USER-SUPPLIED VALUES:"
			if all {
				header = "COMPUTED VALUES:"
			}
			fmt.Fprintf(c.stdout, "%s\n%s", header, b)
			return nil
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().IntVar(&revision, "revision", 0, "the revision (default: the latest)")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "all the values: the chart's defaults computed with those the request set")
	showSecretsFlag(cmd, &showSecrets)
	out.bind(cmd)
	return cmd
}

func (c *cli) diffCmd() *cobra.Command {
	var out output
	var ns string
	var from, to int
	var showSecrets bool
	cmd := &cobra.Command{
		Use:   "diff NAME --from A --to B [-n NS]",
		Short: "Show what changed between two revisions: objects added, removed, and changed fields",
		Args:  exactArgs(1, "diff takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			if from < 1 || to < 1 {
				return usagef("--from and --to are revision numbers from 1")
			}
			var d historyapi.Diff
			if err := c.askSecrets(cmd, showSecrets, historyapi.EndpointDiff, historyapi.Query{Release: rel.String(), From: from, To: to}, &d); err != nil {
				return err
			}
			return out.print(c.stdout, d, func(tw *tabwriter.Writer) {
				if len(d.Objects) == 0 {
					fmt.Fprintf(tw, "revisions %d and %d have the same manifests\n", from, to)
					return
				}
				for _, o := range d.Objects {
					mark := map[string]string{historyapi.ChangeAdded: "+", historyapi.ChangeRemoved: "-", historyapi.ChangeChanged: "~"}[o.Change]
					fmt.Fprintf(tw, "%s %s\t(%s)\n", mark, o.ObjectRef, o.Change)
					for _, f := range o.Fields {
						fmt.Fprintf(tw, "    %s:\t%s → %s\n", f.Path, short(f.From), short(f.To))
					}
				}
			})
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().IntVar(&from, "from", 0, "the older revision")
	cmd.Flags().IntVar(&to, "to", 0, "the newer revision")
	showSecretsFlag(cmd, &showSecrets)
	out.bind(cmd)
	return cmd
}

func showSecretsFlag(cmd *cobra.Command, v *bool) {
	cmd.Flags().BoolVar(v, "show-secrets", false, "show a Secret's values (redacted by default); NATS lets only an identity that may read Secrets ask (troupe dev: admin.creds, not cli.creds)")
}

func short(v any) string {
	if v == nil {
		return "(none)"
	}
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimSpace(string(b))
	s = strings.ReplaceAll(s, "\n", " ")
	return events.Truncate(s, 80)
}

// exactArgs is cobra.ExactArgs with a usage error that says what the command takes.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s (got %d arguments)", what, len(args))
		}
		return nil
	}
}

// pendingGates are the gates of gates that have not answered.
func pendingGates(gates []events.GateVerdict) []string {
	var out []string
	for _, g := range gates {
		if g.Verdict == events.VerdictPending {
			out = append(out, g.Gate)
		}
	}
	return out
}

// gatesSummary says in a few words where a revision is at its gates; waiting: it waits for
// those that have not answered.
func gatesSummary(gates []events.GateVerdict, waiting bool) string {
	approved := 0
	for _, g := range gates {
		if g.Verdict == events.VerdictApproved {
			approved++
		}
	}
	s := fmt.Sprintf("%d of %d approved", approved, len(gates))
	if p := pendingGates(gates); len(p) > 0 && waiting {
		s += "; waiting for approval by " + strings.Join(p, ", ")
	}
	return s
}

// gateState is one gate's verdict, as status prints it.
func gateState(g events.GateVerdict, waiting bool) string {
	s := g.Verdict
	if g.Verdict == events.VerdictPending {
		s = map[bool]string{true: "waiting", false: "no verdict"}[waiting]
	}
	if g.By != "" {
		s += " by " + g.By
	}
	if g.Message != "" {
		s += ": " + firstLine(g.Message)
	}
	return s
}
