package charts

//go:generate go run ./valuestable -chart troupe

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// The README's table of values lies between these lines.
const (
	tableStart = "<!-- values table: `make generate` writes it from values.schema.json and values.yaml -->"
	tableEnd   = "<!-- end of the values table -->"
)

type schema struct {
	Type        any                `json:"type"`
	Description string             `json:"description"`
	Enum        []any              `json:"enum"`
	Properties  map[string]*schema `json:"properties"`
}

// WithValuesTable returns readme with the table of values between its markers: a row per leaf of
// the chart's values.schema.json (an object without properties is a leaf), its type (and
// allowed values), its default from values.yaml and its description.
func WithValuesTable(chart fs.FS, readme []byte) ([]byte, error) {
	start, end := bytes.Index(readme, []byte(tableStart)), bytes.Index(readme, []byte(tableEnd))
	if start < 0 || end < start {
		return nil, fmt.Errorf("README.md: no %q … %q", tableStart, tableEnd)
	}
	b, err := fs.ReadFile(chart, "values.schema.json")
	if err != nil {
		return nil, err
	}
	var s schema
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("values.schema.json: %w", err)
	}
	b, err = fs.ReadFile(chart, "values.yaml")
	if err != nil {
		return nil, err
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("values.yaml: %w", err)
	}
	var t strings.Builder
	t.WriteString(tableStart + "\n\n| value | type | default | description |\n|---|---|---|---|\n")
	if err := rows(&t, "", &s, values); err != nil {
		return nil, err
	}
	t.WriteString("\n")
	return append(append(append([]byte{}, readme[:start]...), t.String()...), readme[end:]...), nil
}

// rows writes a row per leaf of s under prefix; def is the default of s.
func rows(t *strings.Builder, prefix string, s *schema, def any) error {
	keys := make([]string, 0, len(s.Properties))
	for k := range s.Properties {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p, name := s.Properties[k], strings.TrimPrefix(prefix+"."+k, ".")
		m, _ := def.(map[string]any)
		d, set := m[k]
		if p.Description == "" {
			return fmt.Errorf("values.schema.json: %s has no description", name)
		}
		if len(p.Properties) > 0 && p.Type == "object" && name != "nats" {
			if err := rows(t, name, p, d); err != nil {
				return err
			}
			continue
		}
		typ := fmt.Sprint(p.Type)
		if len(p.Enum) > 0 {
			var e []string
			for _, v := range p.Enum {
				e = append(e, fmt.Sprint(v))
			}
			typ += ": " + strings.Join(e, ", ")
		}
		dflt := ""
		if set {
			j, err := json.Marshal(d)
			if err != nil {
				return err
			}
			dflt = "`" + string(j) + "`"
			if len(j) > 60 {
				dflt = "see values.yaml"
			}
		}
		fmt.Fprintf(t, "| `%s` | %s | %s | %s |\n", name, typ, dflt, strings.ReplaceAll(p.Description, "|", "\\|"))
	}
	return nil
}
