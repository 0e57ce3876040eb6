package serve

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// SignalContext returns a context that ends at the first SIGINT or SIGTERM, for a graceful
// shutdown; a second signal exits the process at once with status 130. For main only.
func SignalContext(name string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintf(os.Stderr, "%s: second signal, exiting now\n", name)
		os.Exit(130)
	}()
	return ctx, cancel
}
