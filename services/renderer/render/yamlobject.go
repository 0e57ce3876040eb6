package render

import (
	"math"
	"strconv"
	"unicode/utf8"

	yamlv2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// yamlObject parses one YAML document into exactly the object sigs.k8s.io/yaml.Unmarshal gives
// for a map[string]any — the YAML Kubernetes and Helm read: YAML 1.1 by go-yaml v2, then JSON's
// types (string keys, float64 numbers) — without its JSON round trip (encode the parsed document
// as JSON, decode the JSON again), which costs a third of parsing a rendered document. Anything
// outside what that round trip passes unchanged (a key that is not a scalar, two keys that become
// the same string, NaN or infinity, bytes that are not UTF-8, a document that is not a map) takes
// sigs.k8s.io/yaml's own path, so results and errors stay its. A fuzz test holds the two equal.
// An empty document gives nil.
func yamlObject(doc []byte) (map[string]any, error) {
	var v any
	if yamlv2.Unmarshal(doc, &v) == nil {
		switch t := v.(type) {
		case nil:
			return nil, nil
		case map[any]any:
			if m, ok := jsonMap(t); ok {
				return m, nil
			}
		}
	}
	var obj map[string]any
	err := yaml.Unmarshal(doc, &obj)
	return obj, err
}

func jsonMap(m map[any]any) (map[string]any, bool) {
	out := make(map[string]any, len(m))
	for k, v := range m {
		key, ok := jsonKey(k)
		if !ok {
			return nil, false
		}
		if _, dup := out[key]; dup {
			return nil, false
		}
		if out[key], ok = jsonValue(v); !ok {
			return nil, false
		}
	}
	return out, true
}

// jsonKey is the key sigs.k8s.io/yaml makes of a YAML key.
func jsonKey(k any) (string, bool) {
	switch t := k.(type) {
	case string:
		return t, utf8.ValidString(t)
	case int:
		return strconv.Itoa(t), true
	case int64:
		return strconv.FormatInt(t, 10), true
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return "", false
		}
		return strconv.FormatFloat(t, 'g', -1, 32), true
	case bool:
		return strconv.FormatBool(t), true
	}
	return "", false
}

// jsonValue is v after a JSON round trip: numbers become float64 (converting is rounding to
// nearest, as parsing the decimal JSON would).
func jsonValue(v any) (any, bool) {
	switch t := v.(type) {
	case nil, bool:
		return t, true
	case string:
		return t, utf8.ValidString(t)
	case int:
		return float64(t), true
	case int64:
		return float64(t), true
	case uint64:
		return float64(t), true
	case float64:
		return t, !math.IsInf(t, 0) && !math.IsNaN(t)
	case map[any]any:
		return jsonMap(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			var ok bool
			if out[i], ok = jsonValue(e); !ok {
				return nil, false
			}
		}
		return out, true
	}
	return nil, false
}
