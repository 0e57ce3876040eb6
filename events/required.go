package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// checkRequired reports each field of t that data lacks. A field is required when its json tag has
// neither omitempty nor omitzero — the same rule the generated JSON Schema follows — so that a
// missing count or duration is an error rather than a silent zero.
func checkRequired(c *checker, path string, data json.RawMessage, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		var obj map[string]json.RawMessage
		if json.Unmarshal(data, &obj) != nil || obj == nil {
			return // the typed decode reports the wrong shape
		}
		checkFields(c, path, obj, t)
	case reflect.Slice:
		var items []json.RawMessage
		if json.Unmarshal(data, &items) != nil {
			return
		}
		for i, it := range items {
			checkRequired(c, fmt.Sprintf("%s[%d]", path, i), it, t.Elem())
		}
	}
}

func checkFields(c *checker, path string, obj map[string]json.RawMessage, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			checkFields(c, path, obj, f.Type)
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		field := name
		if path != "" {
			field = path + "." + name
		}
		raw, ok := obj[name]
		if !ok {
			if !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero") {
				c.addf("%s: required", field)
			}
			continue
		}
		checkRequired(c, field, raw, f.Type)
	}
}
