package main

import (
	"strconv"

	"github.com/spf13/cobra"

	"github.com/troupe-dev/troupe/events"
)

func (c *cli) rollbackCmd() *cobra.Command {
	var ns, reason string
	var how waiting
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
				rb.Options.Timeout = events.Duration(how.timeout)
			}
			return c.send(cmd.Context(), rel, events.TypeRollbackRequested, rb, nil, how)
		},
	}
	namespaceFlag(cmd, &ns)
	how.bind(cmd, "follow the rollback; exit 0 when the revision is ready again", "the rollback's timeout")
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the history")
	return cmd
}

func (c *cli) uninstallCmd() *cobra.Command {
	var ns string
	var crds bool
	var how waiting
	cmd := &cobra.Command{
		Use:   "uninstall NAME [-n NS] [--wait]",
		Short: "Delete every object of a release (CRDs only with --delete-crds)",
		Args:  exactArgs(1, "uninstall takes the release NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			rel, err := releaseArg(args[0], ns)
			if err != nil {
				return err
			}
			return c.send(cmd.Context(), rel, events.TypeUninstallRequested,
				events.UninstallRequested{DeleteCRDs: crds, Timeout: events.Duration(how.timeout)}, nil, how)
		},
	}
	namespaceFlag(cmd, &ns)
	how.bind(cmd, "wait until the objects are deleted", "the uninstall's timeout")
	cmd.Flags().BoolVar(&crds, "delete-crds", false, "also delete the CustomResourceDefinitions the release installed")
	return cmd
}
