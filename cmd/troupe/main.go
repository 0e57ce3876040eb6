package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/serve"
)

func main() {
	ctx, cancel := serve.SignalContext("troupe")
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// run executes the CLI and returns the process exit code: 0 on success, 2 for a usage error,
// 1 for any other error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root, c := newRoot(stdin, stdout, stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		// A refusal ends the command's context, or the call it refused times out: say what was
		// refused, not "context canceled".
		if refused := c.refused.Load(); refused != nil && (errors.Is(err, context.Canceled) || events.Unavailable(err)) {
			err = *refused
		}
		fmt.Fprintln(stderr, "Error:", err)
		var u usageError
		if errors.As(err, &u) {
			return 2
		}
		var x exitError
		if errors.As(err, &x) {
			return x.code
		}
		return 1
	}
	return 0
}

// usageError is a mistake in how the command was called.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }
