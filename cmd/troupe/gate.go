package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/access"
)

// gateCmd is `troupe gate`: the gate policy of namespaces, and a gate's credentials.
func (c *cli) gateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gate",
		Short: "Manage gates: the gates a namespace's releases must pass (require, remove, list), a gate's credentials",
		Long: `A gate is a peer service that judges each rendered revision naming it before it is applied: it
publishes release.approved or release.rejected, and the applier applies a revision only once
every gate it needs approved that revision's bundle. A revision needs the gates its request
names ('troupe release --gate NAME') and, stronger, those its namespace's policy requires,
which a requester cannot skip: 'troupe gate require NAME -n NS'.

Only an operator writes the policy (the admin identity: in a 'troupe dev' store require and
remove use admin.creds by default); everyone who reads events may list it.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(c.gateRequireCmd(), c.gateRemoveCmd(), c.gateListCmd(), c.gateCredsCmd())
	return cmd
}

func (c *cli) gateRequireCmd() *cobra.Command {
	var ns string
	var trust bool
	cmd := &cobra.Command{
		Use:   "require NAME -n NS [--trust-approvals]",
		Short: "Make every revision of the namespace's releases wait for the gate NAME's approval",
		Long: `Add the gate NAME to the namespace's policy (the troupe-gates bucket): every revision of a
release of the namespace rendered from then on waits for NAME's approval before it is applied,
whatever its request says. A rollback is judged again, as any revision, unless
--trust-approvals: then a bundle the gate approved before for the release goes through.
Requiring a gate again replaces its rule. Needs the admin identity (troupe dev: admin.creds, the
default here).`,
		Example: `  troupe gate require policy -n prod
  troupe gate require approval -n prod --trust-approvals`,
		Args: exactArgs(1, "gate require takes the gate's NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			gate := args[0]
			if err := checkGateArgs(gate, ns); err != nil {
				return err
			}
			p, done, err := c.gatePolicy(cmd.Context(), access.Admin)
			if err != nil {
				return err
			}
			defer done()
			rule := events.GateRule{Gate: gate, TrustApprovals: trust, By: requester(), At: time.Now().UTC().Truncate(time.Second)}
			if err := p.Require(cmd.Context(), ns, rule); err != nil {
				return err
			}
			how := ""
			if trust {
				how = " (a rollback to a bundle it approved before goes through)"
			}
			fmt.Fprintf(c.stdout, "namespace %s requires gate %s%s\n", ns, gate, how)
			return nil
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().Lookup("namespace").Usage = "the namespace whose releases must pass the gate [TROUPE_NAMESPACE]"
	cmd.Flags().BoolVar(&trust, "trust-approvals", false, "a rollback to a bundle the gate approved before for the release is not judged again")
	return cmd
}

func (c *cli) gateRemoveCmd() *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "remove NAME -n NS",
		Short: "Stop requiring the gate NAME in the namespace",
		Long: `Remove the gate NAME from the namespace's policy: revisions rendered from then on no longer wait
for it (unless their request names it). Exits 1 when the namespace did not require it. Needs the
admin identity (troupe dev: admin.creds, the default here).`,
		Args: exactArgs(1, "gate remove takes the gate's NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			gate := args[0]
			if err := checkGateArgs(gate, ns); err != nil {
				return err
			}
			p, done, err := c.gatePolicy(cmd.Context(), access.Admin)
			if err != nil {
				return err
			}
			defer done()
			removed, err := p.Remove(cmd.Context(), ns, gate)
			if err != nil {
				return err
			}
			if !removed {
				return fmt.Errorf("namespace %s does not require gate %s ('troupe gate list -n %s')", ns, gate, ns)
			}
			fmt.Fprintf(c.stdout, "namespace %s no longer requires gate %s\n", ns, gate)
			return nil
		},
	}
	namespaceFlag(cmd, &ns)
	return cmd
}

func (c *cli) gateListCmd() *cobra.Command {
	var ns string
	var out output
	cmd := &cobra.Command{
		Use:   "list [-n NS] [-o json|yaml]",
		Short: "List the gates each namespace requires (every namespace unless -n)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			one := cmd.Flags().Changed("namespace")
			if one {
				if err := events.ValidateName("namespace", ns); err != nil {
					return usageError{err}
				}
			}
			p, done, err := c.gatePolicy(cmd.Context(), access.CLI)
			if err != nil {
				return err
			}
			defer done()
			var list []*events.NamespaceGates
			if one {
				ng, err := p.For(cmd.Context(), ns)
				if err != nil {
					return err
				}
				if len(ng.Gates) > 0 {
					list = append(list, ng)
				}
			} else if list, err = p.List(cmd.Context()); err != nil {
				return err
			}
			if list == nil {
				list = []*events.NamespaceGates{} // [] in JSON, not null
			}
			return out.print(c.stdout, list, func(tw *tabwriter.Writer) {
				if len(list) == 0 {
					fmt.Fprintln(tw, "no namespace requires a gate")
					return
				}
				fmt.Fprintln(tw, "NAMESPACE\tGATE\tTRUSTS APPROVALS\tSET BY\tSET")
				for _, ng := range list {
					for _, r := range ng.Gates {
						trust := "no"
						if r.TrustApprovals {
							trust = "yes"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ng.Namespace, r.Gate, trust, dash(r.By), stamp(r.At))
					}
				}
			})
		},
	}
	namespaceFlag(cmd, &ns)
	out.bind(cmd)
	return cmd
}

func (c *cli) gateCredsCmd() *cobra.Command {
	var out, keys string
	cmd := &cobra.Command{
		Use:   "creds NAME [--out FILE] [--keys DIR]",
		Short: "Write NATS credentials for the gate NAME, signed with troupe dev's keys",
		Long: `Write a NATS credentials file for the gate NAME's identity, gate-NAME: it reads release.rendered
with a durable consumer of its own (gate-NAME), reads the bundles, answers the decisions people
ask of it ('troupe approve', 'troupe reject'), and publishes release.approved and
release.rejected on its own subjects only — never another gate's verdicts.

The credentials are signed with the keys of a 'troupe dev' store ($TROUPE_STORE_DIR, else
.troupe: <store>/creds), and are good as long as that store's keys are. On a cluster, the
operator's install makes a gate's credentials (with the keys 'troupe install' signed with,
--keys DIR here does the same); this command never creates keys. Default --out:
<keys>/gate-NAME.creds; '-' writes them to stdout.`,
		Example: `  troupe gate creds approval
  go run ./examples/approvalgate --creds .troupe/creds/gate-approval.creds`,
		Args: exactArgs(1, "gate creds takes the gate's NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := access.Gate(args[0])
			if err != nil {
				return usageError{err}
			}
			hint := "give --keys the directory of the keys 'troupe install --keys' signed with"
			if keys == "" {
				keys = filepath.Join(storeDir(), "creds")
				hint = "run 'troupe dev' first (with this --store-dir: $TROUPE_STORE_DIR), or " + hint
			}
			// LoadOrCreate would make new keys, whose credentials no server trusts.
			if _, err := os.Stat(filepath.Join(keys, "account.nk")); err != nil {
				return fmt.Errorf("no keys to sign with in %s (%w): %s; on a cluster the operator's install makes a gate's credentials", keys, err, hint)
			}
			auth, err := access.LoadOrCreate(keys)
			if err != nil {
				return err
			}
			b, err := auth.Creds(id, c.names)
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := c.stdout.Write(b)
				return err
			}
			if out == "" {
				out = filepath.Join(keys, id.Name+".creds")
			}
			if err := writeCreds(out, b); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "wrote %s: the credentials of gate %s (identity %s)\n", out, args[0], id.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "where to write them (default <keys>/gate-NAME.creds; - for stdout)")
	cmd.Flags().StringVar(&keys, "keys", "", "the directory of the operator and account keys to sign with (default: troupe dev's, <store>/creds)")
	return cmd
}

// writeCreds writes a credentials file readable by its owner only, replacing what was there.
func writeCreds(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".creds-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // once renamed, nothing
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path) // CreateTemp made it 0600
}

func checkGateArgs(gate, ns string) error {
	if err := events.ValidateName("gate", gate); err != nil {
		return usageError{err}
	}
	if err := events.ValidateName("namespace", ns); err != nil {
		return usageError{err}
	}
	return nil
}

// gatePolicy opens the gate policy, connected with identity's credentials by default.
func (c *cli) gatePolicy(ctx context.Context, identity string) (*events.GatePolicy, func(), error) {
	nc, js, err := c.connectAs("troupe-gate", identity)
	if err != nil {
		return nil, nil, err
	}
	var p *events.GatePolicy
	err = events.Await(ctx, electionPatience, func() (err error) {
		p, err = events.OpenGatePolicy(ctx, js, c.names)
		return err
	})
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return p, nc.Close, nil
}

// decisionOptions are `troupe approve` and `troupe reject`'s.
type decisionOptions struct {
	ns, gate, reason, by string
	revision             int
	out                  output
}

func (c *cli) approveCmd() *cobra.Command { return c.decisionCmd(true) }

func (c *cli) rejectCmd() *cobra.Command { return c.decisionCmd(false) }

func (c *cli) decisionCmd(approve bool) *cobra.Command {
	o := decisionOptions{}
	cmd := &cobra.Command{
		Use:   "approve RELEASE [-n NS] [--revision N] [--gate approval] [--reason TEXT] [--by NAME]",
		Short: "Approve a revision waiting at a gate a person drives (default: the approval gate)",
		Long: `Ask the gate (--gate, default approval) to approve the release's newest revision waiting for it,
or --revision N: the gate publishes release.approved, and once every gate the revision needs
approved it, the applier applies it. The gate's answer is printed; when it refuses (no such
revision, not waiting for it, already ended) the command exits 1 with its message.

The gate must be running (examples/approvalgate is one): with none, the command says so. The
approver identity may ask any gate for a decision (troupe dev: approver.creds, the default here).`,
		Example: `  troupe approve hello -n prod
  troupe approve hello -n prod --revision 7 --reason "change 1234 reviewed"`,
	}
	if !approve {
		cmd.Use = "reject RELEASE --reason TEXT [-n NS] [--revision N] [--gate approval] [--by NAME]"
		cmd.Short = "Reject a revision waiting at a gate a person drives (default: the approval gate)"
		cmd.Long = `Ask the gate (--gate, default approval) to reject the release's newest revision waiting for it,
or --revision N, for --reason: the gate publishes release.rejected and the revision fails at stage
gate (reason gate_rejected), nothing of it applied. The gate's answer is printed; when it refuses
the command exits 1 with its message.

The gate must be running (examples/approvalgate is one): with none, the command says so. The
approver identity may ask any gate for a decision (troupe dev: approver.creds, the default here).`
		cmd.Example = `  troupe reject hello -n prod --reason "not during the freeze"`
	}
	verb := map[bool]string{true: "approve", false: "reject"}[approve]
	cmd.Args = exactArgs(1, verb+" takes the RELEASE")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		return c.decide(cmd.Context(), args[0], approve, o)
	}
	namespaceFlag(cmd, &o.ns)
	f := cmd.Flags()
	f.IntVar(&o.revision, "revision", 0, "the revision (default: the newest one waiting for the gate)")
	f.StringVar(&o.gate, "gate", "approval", "the gate to ask")
	reasonHelp := "why, for the history"
	if !approve {
		reasonHelp = "why (required): the revision's failure message"
	}
	f.StringVar(&o.reason, "reason", "", reasonHelp)
	f.StringVar(&o.by, "by", currentUser(), "who decides, as the verdict records it [$USER]")
	o.out.bind(cmd)
	return cmd
}

// decisionOut is what `troupe approve` and `troupe reject` print with -o json|yaml.
type decisionOut struct {
	Release  string `json:"release"`
	Gate     string `json:"gate"`
	Revision int    `json:"revision"`
	Verdict  string `json:"verdict"`
	By       string `json:"by,omitempty"`
}

// decide asks a gate for a person's decision (events.GateDecision) and prints its answer.
func (c *cli) decide(ctx context.Context, release string, approve bool, o decisionOptions) error {
	rel, err := releaseArg(release, o.ns)
	if err != nil {
		return err
	}
	if err := events.ValidateName("gate", o.gate); err != nil {
		return usagef("--gate: %w", err)
	}
	if o.revision < 0 {
		return usagef("--revision %d: want a revision number from 1", o.revision)
	}
	if !approve && strings.TrimSpace(o.reason) == "" {
		return usagef("reject needs --reason: it is the revision's failure message")
	}
	body, err := json.Marshal(events.GateDecision{Namespace: rel.Namespace, Name: rel.Name, Revision: o.revision,
		Approve: approve, Reason: o.reason, By: o.by})
	if err != nil {
		return err
	}
	nc, err := c.natsConnAs("troupe-"+map[bool]string{true: "approve", false: "reject"}[approve], access.Approver)
	if err != nil {
		return err
	}
	defer nc.Close()
	subject := c.names.GateDecisionSubject(o.gate)
	// The gate reads the revision and publishes its verdict (each bounded at 10 s) before it answers.
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subject, body)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no gate %s is running: nothing answers on %s (start it, e.g. examples/approvalgate; 'troupe graph' lists the running services)", o.gate, subject)
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("gate %s did not answer on %s in 30s: the verdict may be published still ('troupe status %s')", o.gate, subject, rel)
	case err != nil:
		return fmt.Errorf("ask gate %s: %w", o.gate, err)
	}
	var reply events.GateDecisionReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return fmt.Errorf("gate %s's answer: %w", o.gate, err)
	}
	if reply.Error != "" {
		return fmt.Errorf("gate %s: %s", o.gate, reply.Error)
	}
	res := decisionOut{Release: rel.String(), Gate: o.gate, Revision: reply.Revision, Verdict: reply.Verdict, By: o.by}
	return o.out.print(c.stdout, res, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "%s revision %d: %s by gate %s\n", res.Release, res.Revision, res.Verdict, res.Gate)
	})
}

// currentUser is $USER, else the account's name: who a person's decision is by.
func currentUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}
