package events

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// checkFields reports each field of t that data lacks, and each field data has that t does not
// (a misspelt option must not be silently ignored). A field is required when its json tag has
// neither omitempty nor omitzero — the same rule the generated JSON Schema follows — so that a
// missing count or duration is an error rather than a silent zero. data is parsed once into a
// tree and walked alongside t.
func checkFields(c *checker, path string, data json.RawMessage, t reflect.Type) {
	var tree any
	if json.Unmarshal(data, &tree) != nil {
		return // the typed decode reports the wrong shape
	}
	walkRequired(c, path, tree, t)
}

func walkRequired(c *checker, path string, v any, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		fields := fieldsOf(t)
		for _, f := range fields {
			child, ok := obj[f.name]
			switch {
			case !ok && f.required:
				c.addf("%s: required", join(path, f.name))
			case ok && f.nested:
				walkRequired(c, join(path, f.name), child, f.typ)
			}
		}
		if len(obj) > len(fields) || !allKnown(obj, fields) {
			for k := range obj {
				if !slices.ContainsFunc(fields, func(f jsonField) bool { return f.name == k }) {
					c.addf("%s: unknown field %q", orTop(path), k)
				}
			}
		}
	case reflect.Slice:
		items, ok := v.([]any)
		if !ok {
			return
		}
		for i, it := range items {
			walkRequired(c, fmt.Sprintf("%s[%d]", path, i), it, t.Elem())
		}
	}
}

func allKnown(obj map[string]any, fields []jsonField) bool {
	for k := range obj {
		if !slices.ContainsFunc(fields, func(f jsonField) bool { return f.name == k }) {
			return false
		}
	}
	return true
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func orTop(path string) string {
	if path == "" {
		return "payload"
	}
	return path
}

// anyZeroRequired reports whether a required field anywhere in v holds its zero value.
func anyZeroRequired(v reflect.Value) bool {
	for v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return false
		}
		v = v.Elem()
	}
	switch v.Kind() {
	case reflect.Struct:
		for _, f := range fieldsOf(v.Type()) {
			fv := v.FieldByIndex(f.index)
			if f.required && fv.IsZero() {
				return true
			}
			if f.nested && anyZeroRequired(fv) {
				return true
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if anyZeroRequired(v.Index(i)) {
				return true
			}
		}
	}
	return false
}

type jsonField struct {
	name     string
	index    []int
	typ      reflect.Type
	required bool
	nested   bool // a struct, or a slice or pointer of them: its own fields are checked too
}

// fieldsOf returns t's JSON fields, embedded structs flattened.
func fieldsOf(t reflect.Type) []jsonField {
	var out []jsonField
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if f.Anonymous && name == "" {
			for _, inner := range fieldsOf(f.Type) {
				inner.index = append([]int{i}, inner.index...)
				out = append(out, inner)
			}
			continue
		}
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		elem := f.Type
		for elem.Kind() == reflect.Pointer || elem.Kind() == reflect.Slice {
			elem = elem.Elem()
		}
		out = append(out, jsonField{
			name:     name,
			index:    []int{i},
			typ:      f.Type,
			required: !strings.Contains(opts, "omitempty") && !strings.Contains(opts, "omitzero"),
			nested:   elem.Kind() == reflect.Struct,
		})
	}
	return out
}
