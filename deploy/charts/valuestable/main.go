// Command valuestable writes the values table of the troupe chart's README.md from its
// values.schema.json (descriptions, types) and values.yaml (defaults), between the README's
// markers: `make generate` runs it, and a test checks the README is current.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/troupe-dev/troupe/deploy/charts"
)

func main() {
	dir := flag.String("chart", "troupe", "the chart directory")
	flag.Parse()
	path := filepath.Join(*dir, "README.md")
	readme, err := os.ReadFile(path)
	if err == nil {
		var out []byte
		out, err = charts.WithValuesTable(os.DirFS(*dir), readme)
		if err == nil {
			err = os.WriteFile(path, out, 0o644)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "valuestable:", err)
		os.Exit(1)
	}
}
