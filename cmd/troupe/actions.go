package main

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

func (c *cli) rollbackCmd() *cobra.Command {
	var ns, reason string
	var wait bool
	var timeout time.Duration
	var out output
	cmd := &cobra.Command{
		Use:   "rollback NAME [REVISION] [-n NS] [--wait]",
		Short: "Restore an earlier revision's manifests (default: the previous ready one)",
		Long: `Ask the history service to restore a revision (release.rollback.requested): it republishes the
manifests that revision applied, exactly as they were, and the applier and the health watcher
take it from there. No new revision number is minted; 'troupe history' shows the rollback.
With --wait, exit 0 once the restored revision is ready, 1 when the rollback fails or is refused.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("rollback takes the release NAME and, optionally, a REVISION")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
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
				rb.Options.Timeout = events.Duration(timeout)
			}
			e, err := events.NewEvent(events.SourcePrefix+"cli", events.TypeRollbackRequested, rel, rb)
			if err != nil {
				return usageError{err}
			}
			nc, js, err := c.connect("troupe-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			return c.publishAndFollow(cmd.Context(), js, rel, e, wait, timeout, false, out, false)
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the rollback; exit 0 when the revision is ready again")
	cmd.Flags().DurationVar(&timeout, "timeout", events.DefaultTimeout, "the rollback's timeout")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the history")
	out.bind(cmd)
	return cmd
}

func (c *cli) uninstallCmd() *cobra.Command {
	var ns string
	var wait, crds bool
	var timeout time.Duration
	var out output
	cmd := &cobra.Command{
		Use:   "uninstall NAME [-n NS] [--wait]",
		Short: "Delete every object of a release (CRDs only with --delete-crds)",
		Args:  exactArgs(1, "uninstall takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			e, err := events.NewEvent(events.SourcePrefix+"cli", events.TypeUninstallRequested, rel,
				events.UninstallRequested{DeleteCRDs: crds, Timeout: events.Duration(timeout)})
			if err != nil {
				return usageError{err}
			}
			nc, js, err := c.connect("troupe-cli")
			if err != nil {
				return err
			}
			defer nc.Close()
			return c.publishAndFollow(cmd.Context(), js, rel, e, wait, timeout, false, out, false)
		},
	}
	namespaceFlag(cmd, &ns)
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the objects are deleted")
	cmd.Flags().BoolVar(&crds, "delete-crds", false, "also delete the CustomResourceDefinitions the release installed")
	cmd.Flags().DurationVar(&timeout, "timeout", events.DefaultTimeout, "the uninstall's timeout")
	out.bind(cmd)
	return cmd
}
