package main

import (
	"fmt"
	"io"
	"time"

	"github.com/troupe-dev/troupe/events/flow"
)

// exitError ends the CLI with its code, after printing its error: 1 when a release failed,
// was superseded or did not finish in time.
type exitError struct {
	code int
	error
}

func (e exitError) Unwrap() error { return e.error }

// progress prints one line per step of a flow (flow.Follow's), as the events arrive.
type progress struct {
	w     io.Writer
	start time.Time
}

func (p *progress) step(s flow.Step) {
	if p.w == nil {
		return
	}
	el := time.Since(p.start).Seconds()
	fmt.Fprintf(p.w, "%6.1fs  %-12s %s\n", el, s.Stage, s.Text)
}
