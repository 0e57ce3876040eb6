package main

import (
	"embed"
	"fmt"
	"sync"

	"github.com/cdevents/sdk-go/pkg/api"
)

// schemaFiles are the JSON schemas of the custom reconciliation events: the whole event, as the
// SDK validates it, with the draft reconciliation subject content.
//
//go:embed schemas/*.json
var schemaFiles embed.FS

// schemaBase is where the schemas are published, and what names them: the events' schemaUri.
const schemaBase = "https://github.com/troupe-dev/troupe/blob/main/examples/cdevents/schemas/"

// schemaURI is the schemaUri of a custom event type.
func schemaURI(t api.CDEventType) string {
	return schemaBase + t.Subject + "-" + t.Predicate + ".json"
}

// loadSchemas loads the custom schemas into the SDK, once: its registry of custom schemas is the
// process's (api.LoadJsonSchema writes a package map), so it is loaded once, before any Validate
// reads it.
var loadSchemas = sync.OnceValue(func() error {
	for _, t := range []api.CDEventType{reconciliationStarted, reconciliationFinished} {
		b, err := schemaFiles.ReadFile("schemas/" + t.Subject + "-" + t.Predicate + ".json")
		if err != nil {
			return err
		}
		if err := api.LoadJsonSchema(schemaURI(t), b); err != nil {
			return fmt.Errorf("schema %s: %w", schemaURI(t), err)
		}
	}
	return nil
})

// validate checks cd with the SDK: against the spec's schema of its type and its validation
// tags, and a custom event also against the schema its schemaUri names (ours).
func validate(cd api.CDEventReader) error {
	if err := loadSchemas(); err != nil {
		return err
	}
	if err := api.Validate(cd); err != nil {
		return fmt.Errorf("validate %s: %w", cd.GetId(), err)
	}
	return nil
}
