//go:build lean

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

// devCmd, in the lean build (`make build`: -tags lean), hands `troupe dev` over to troupe-dev —
// the same CLI built with the services in — so that every other command starts without them:
// with the services' packages (Helm's engine, client-go, kstatus, …) the binary is 125 MB instead
// of 19 MB, and every CLI process pays for them in package init and page faults (a `troupe
// release` ~95 ms of CPU instead of ~55 ms), once per release in a script or a CI job.
func (c *cli) devCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "dev",
		Short:              devShort,
		Long:               devLong,
		DisableFlagParsing: true, // troupe-dev parses them, and prints the help
		RunE:               handOver,
	}
}

// installCmd, in the lean build, hands `troupe install` over to troupe-dev too: it renders and
// applies with the renderer's and applier's libraries.
func (c *cli) installCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "install",
		Short:              installShort,
		DisableFlagParsing: true, // troupe-dev parses them, and prints the help
		RunE:               handOver,
	}
}

// handOver runs troupe-dev in this process's place, with its arguments.
func handOver(*cobra.Command, []string) error {
	path, err := devBinary()
	if err != nil {
		return err
	}
	return syscall.Exec(path, append([]string{path}, os.Args[1:]...), os.Environ())
}

// devBinary finds troupe-dev beside this executable, else on $PATH.
func devBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), "troupe-dev")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("troupe-dev")
	if err != nil {
		return "", fmt.Errorf("troupe dev runs troupe-dev, which is neither beside troupe nor on $PATH: 'make build' builds both into ./bin")
	}
	return p, nil
}
