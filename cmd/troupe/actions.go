package main

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

func (c *cli) rollbackCmd() *cobra.Command {
	var ns, reason string
	var namespaces []string
	var how waiting
	cmd := &cobra.Command{
		Use:   "rollback NAME [REVISION] [-n NS | --namespaces A,B,…] [--wait]",
		Short: "Restore an earlier revision's manifests (default: the previous ready one)",
		Long: `Ask the history service to restore a revision (release.rollback.requested): it republishes the
manifests that revision applied, exactly as they were, and the applier and the health watcher
take it from there. No new revision number is minted; 'troupe history' shows the rollback.
With --wait, exit 0 once the restored revision is ready, 1 when the rollback fails or is refused.
With --namespaces, the release NAME is rolled back in each namespace (REVISION is then the same
revision number in each).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("rollback takes the release NAME and, optionally, a REVISION")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			many, err := releasesArg(cmd, args[0], namespaces)
			if err != nil {
				return err
			}
			rel, err := releaseArg(args[0], ns)
			if len(many) > 0 {
				rel, err = many[0], nil
			}
			if err != nil {
				return err
			}
			rb := events.RollbackRequested{Reason: reason}
			if len(args) == 2 {
				if rb.TargetRevision, err = strconv.Atoi(args[1]); err != nil || rb.TargetRevision < 1 {
					return usagef("REVISION %q: want a revision number from 1", args[1])
				}
			}
			if cmd.Flags().Changed("timeout") {
				rb.Options.Timeout = events.Duration(how.timeout)
			}
			if len(many) > 0 {
				return c.sendMany(cmd.Context(), many, events.TypeRollbackRequested, func(events.Release) (any, error) { return rb, nil }, nil, how)
			}
			return c.send(cmd.Context(), rel, events.TypeRollbackRequested, rb, nil, how)
		},
	}
	namespaceFlag(cmd, &ns)
	namespacesFlag(cmd, &namespaces)
	how.bind(cmd, "follow the rollback; exit 0 when the revision is ready again", "the rollback's timeout")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the history")
	return cmd
}

func (c *cli) uninstallCmd() *cobra.Command {
	var ns string
	var namespaces []string
	var crds bool
	var how waiting
	cmd := &cobra.Command{
		Use:   "uninstall NAME [-n NS | --namespaces A,B,…] [--wait]",
		Short: "Delete every object of a release (CRDs only with --delete-crds)",
		Args:  exactArgs(1, "uninstall takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			many, err := releasesArg(cmd, args[0], namespaces)
			if err != nil {
				return err
			}
			un := events.UninstallRequested{DeleteCRDs: crds, Timeout: events.Duration(how.timeout)}
			if len(many) > 0 {
				return c.sendMany(cmd.Context(), many, events.TypeUninstallRequested, func(events.Release) (any, error) { return un, nil }, nil, how)
			}
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			return c.send(cmd.Context(), rel, events.TypeUninstallRequested, un, nil, how)
		},
	}
	namespaceFlag(cmd, &ns)
	namespacesFlag(cmd, &namespaces)
	how.bind(cmd, "wait until the objects are deleted", "the uninstall's timeout")
	cmd.Flags().BoolVar(&crds, "delete-crds", false, "also delete the CustomResourceDefinitions the release installed")
	return cmd
}

// adoptCmd is `troupe adopt`: a release.requested whose source is the Helm release.
func (c *cli) adoptCmd() *cobra.Command {
	var ns, helmName string
	var removeSecrets bool
	var managers []string
	var how waiting
	cmd := &cobra.Command{
		Use:   "adopt NAME [-n NS] [--helm-name H] [--remove-helm-secrets] [--wait]",
		Short: "Take over a release Helm installed, changing none of its objects; troupe release upgrades it from then on",
		Long: `Adopt publishes a release.requested whose source is the Helm release NAME (or --helm-name) of
the namespace: the renderer reads Helm's release Secrets (sh.helm.release.v1.NAME.vN), the
applier takes the objects of Helm's latest manifest over as the release's inventory without
writing any of them, and the history imports Helm's revisions (chart, values, manifest,
status). The first 'troupe release' after that hands the server-side apply fields of Helm's
field manager to troupe's, applies, and prunes what the chart no longer renders. Helm's
Secrets are kept (helm still lists the release) unless --remove-helm-secrets. The applier must
run with --allow-adopt ('troupe dev' does).`,
		Example: `  helm install web ./chart -n shop
  troupe adopt web -n shop --wait
  troupe release web ./chart -n shop --reuse-values --set replicaCount=3 --wait`,
		Args: exactArgs(1, "adopt takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			if how.timeout <= 0 || how.timeout > events.MaxTimeout {
				return usagef("--timeout %s: want more than 0 and at most %s", how.timeout, events.MaxTimeout)
			}
			req := events.Requested{Source: events.Source{HelmRelease: &events.HelmReleaseSource{Name: helmName,
				RemoveHelmSecrets: removeSecrets, FieldManagers: managers}}, RequestedBy: requester(),
				Options: events.Options{Timeout: events.Duration(how.timeout), Wait: how.wait}}
			if err := req.Validate(); err != nil {
				return usageError{err}
			}
			how.numbered = true
			return c.send(cmd.Context(), rel, events.TypeRequested, req, nil, how)
		},
	}
	namespaceFlag(cmd, &ns)
	how.bind(cmd, "follow the adoption; exit 0 when the objects are taken over and ready", "the adoption's timeout")
	cmd.Flags().StringVar(&helmName, "helm-name", "", "Helm's name of the release, when it is not NAME")
	cmd.Flags().BoolVar(&removeSecrets, "remove-helm-secrets", false, "delete Helm's release Secrets once the objects are taken over")
	cmd.Flags().StringSliceVar(&managers, "helm-field-manager", nil, "the field manager Helm applied with, whose fields troupe takes over (default helm; another for a tool embedding Helm)")
	return cmd
}

// redriveCmd is `troupe redrive`: a dead-lettered request asked again, as the web UI's re-drive
// button does (events.Names.Redrive).
func (c *cli) redriveCmd() *cobra.Command {
	var how waiting
	cmd := &cobra.Command{
		Use:   "redrive SEQUENCE [--wait]",
		Short: "Ask again a request a service gave up on (its dead letter's SEQUENCE, from 'troupe tail --dead-letters')",
		Long: `Publish the dead-lettered request at SEQUENCE of the dead-letter stream again, as a new request
with the same release and data (a new revision for a release.requested). Only requests are
re-driven, and only when the service that handles them gave up (the renderer a release.requested,
history a rollback, the applier an uninstall): a dead-lettered fact (release.rendered, …) already
ended its flow with release.failed. A request that a newer one for the same release came after is
refused too (re-driving it would undo the newer one). Re-driving one dead letter twice publishes
one request.`,
		Args: exactArgs(1, "redrive takes the dead letter's SEQUENCE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || seq == 0 {
				return usagef("SEQUENCE %q: want the dead letter's sequence number, from 1", args[0])
			}
			nc, js, err := c.connect("troupe-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			d, err := c.names.ReadDeadLetter(cmd.Context(), js, seq)
			if err != nil {
				return err
			}
			e, err := c.names.Redrive(cmd.Context(), js, d, events.SourcePrefix+"cli")
			if err != nil {
				return err
			}
			rel, err := events.ReleaseOf(e)
			if err != nil {
				return err
			}
			how.numbered = e.Type() == events.TypeRequested
			return c.publishAndFollow(cmd.Context(), js, rel, e, how)
		},
	}
	how.bind(cmd, "follow the request again until it ends", "the wait's timeout")
	return cmd
}
