// Command schemagen writes the JSON Schema of every catalog payload into a directory.
// Run by `go generate` in the events module.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/internal/schemas"
)

func main() {
	out := flag.String("out", "schemas", "directory to write the schemas into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for _, spec := range events.Catalog() {
		b, err := schemas.Generate(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", spec.Type, err)
		}
		if err := os.WriteFile(filepath.Join(out, schemas.FileName(spec.Type)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
