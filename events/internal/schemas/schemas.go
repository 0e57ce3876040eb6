// Package schemas generates the JSON Schema of every catalog payload from its Go struct, so the
// schemas in events/schemas/ can never drift from the code: `go generate ./...` writes them, and a
// test fails when the committed files differ from what this package generates.
package schemas

import (
	"encoding/json"
	"reflect"

	"github.com/invopop/jsonschema"

	"github.com/troupe-dev/troupe/events"
)

// BaseID prefixes every schema's $id.
const BaseID = "https://troupe.dev/schemas/"

// FileName is the file of typ's schema.
func FileName(typ string) string { return typ + ".json" }

// Generate returns the schema of typ's payload, indented, with a trailing newline.
func Generate(spec events.Spec) ([]byte, error) {
	r := &jsonschema.Reflector{
		// Fields without omitempty are required, as the Go validation requires them.
		RequiredFromJSONSchemaTags: false,
		// A request is decoded strictly (unknown fields rejected), in the schema too; other
		// events tolerantly, so that a newer version's fields are allowed (events.Spec.Request).
		AllowAdditionalProperties: !spec.Request,
		DoNotReference:            false,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeFor[events.Duration]() {
				return &jsonschema.Schema{
					Type:        "string",
					Pattern:     `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$|^0$`,
					Description: "a Go duration: 300ms, 5m, 1h30m",
				}
			}
			return nil
		},
	}
	s := r.Reflect(spec.New())
	if d := s.Definitions["Superseded"]; d != nil && spec.Type == events.TypeSuperseded {
		// What struct tags cannot say, as Superseded.Validate does: a newer revision, or an uninstall.
		newer := jsonschema.NewProperties()
		newer.Set("byRevision", &jsonschema.Schema{Minimum: json.Number("1")})
		d.AnyOf = []*jsonschema.Schema{{Required: []string{"byUninstall"}}, {Properties: newer}}
	}
	s.ID = jsonschema.ID(BaseID + FileName(spec.Type))
	s.Title = spec.Type
	s.Description = "data of a " + spec.Type + " CloudEvent (" + spec.Carries + "); published by " + spec.PublishedBy
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
